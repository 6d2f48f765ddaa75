"""Inception-V3 modified for 32x32 CIFAR images (paper §4.3).

The layout is the one of Szegedy et al., "Rethinking the Inception
Architecture for Computer Vision" (CVPR 2016), with the channel widths of its
reference implementation (TF-slim ``inception_v3``, also torchvision's), and
the paper's two changes for CIFAR: the first convolution has stride 1 and the
first max pooling is removed. The stem convolutions are padded to keep the
size; the remaining max pooling and both grid reductions are 3x3/2 unpadded,
so the spatial size goes 32 -> 15 (stem) -> 7 (``red1``) -> 3 (``red2``),
and the final 3x3 map is globally average-pooled (output stride 8).

===========  ==============================================  ======  ========
layer        modules                                          size    channels
===========  ==============================================  ======  ========
``stem``     conv 3x3 (32), 3x3 (32), 3x3 (64), 1x1 (80),     32      192
             3x3 (192), all stride 1 and padded; max pool
             3x3/2 -> 15
``inc1/j``   35x35-type (j = 0..2; pool branch 32, 64, 64)    15      256, 288
``red1``     grid reduction (3x3/2 conv, 3x3 twice /2, max)   7       768
``inc2/j``   17x17-type, 1x7/7x1 (j = 0..3; c7 = 128, 160,    7       768
             160, 192)
``red2``     grid reduction (3x3/2, 1x7-7x1-3x3/2, max)       3       1280
``inc3/j``   8x8-type, expanded 1x3/3x1 outputs (j = 0, 1)    3       2048
===========  ==============================================  ======  ========

then global average pooling, dropout and a linear classifier.

**Names.** Every layer is a :class:`chainer.ChainList` of branches, every
branch a :class:`chainer.ChainList` of :class:`models.blocks.Conv2DBNActiv`
units, so the link path of a BN reads ``/<layer>/<branch>/<index>/bn`` and
its public name is ``<layer>/<branch>/<index>`` (0-based): ``inc2/0/2/4`` is
the fifth BN of the third branch (the double 7x7 one) of the first module of
the second Inception block, as in the paper's Fig. 8. The stem is a layer of
one branch: its BNs are ``stem/0/0`` .. ``stem/0/4``. Branch order follows the
reference implementation:

* ``inc1/j``: 0 = 1x1; 1 = 1x1-5x5; 2 = 1x1-3x3-3x3; 3 = avgpool-1x1.
* ``red1``: 0 = 3x3/2; 1 = 1x1-3x3-3x3/2; 2 = max pool (no BN).
* ``inc2/j``: 0 = 1x1; 1 = 1x1-1x7-7x1; 2 = 1x1-7x1-1x7-7x1-1x7;
  3 = avgpool-1x1.
* ``red2``: 0 = 1x1-3x3/2; 1 = 1x1-1x7-7x1-3x3/2; 2 = max pool (no BN).
* ``inc3/j``: 0 = 1x1; 1 = 1x1 then {1x3, 3x1} (BNs 1 and 2 are both
  outputs); 2 = 1x1-3x3 then {1x3, 3x1} (BNs 2 and 3); 3 = avgpool-1x1.

**"MN at layer X"** (:meth:`InceptionV3.expand_norm_layer`) replaces the last
BN of every branch output of X, i.e. the BNs whose outputs are concatenated:
2 in ``red1``/``red2`` (the max-pool branch has none), 4 in ``inc1/j`` and
``inc2/j``, 6 in ``inc3/j``; hence the paper's 10 MN modules for
(``inc2/0``, ``inc3/0``).
"""
import collections

import chainer
import chainer.functions as F
import chainer.links as L

from models import blocks
from models import normalization


class _Branch(chainer.ChainList):
    """One branch of an Inception layer: an optional pooling, then units.

    The last ``n_split`` units are applied in parallel to the output of the
    preceding ones (the expanded 1x3/3x1 outputs of the 8x8 modules); each of
    them is an output of the branch.
    """

    def __init__(self, units, pool=None, n_split=1):
        super(_Branch, self).__init__(*units)
        if pool not in (None, 'avg', 'max'):
            raise ValueError('pool must be None, avg or max: {!r}'.format(
                pool))
        self.pool = pool
        self.n_split = n_split

    @property
    def output_indices(self):
        """Indices of the units whose outputs leave the branch."""
        n = len(self)
        return list(range(n - self.n_split, n)) if n else []

    def forward(self, x):
        h = x
        if self.pool == 'avg':
            h = F.average_pooling_2d(h, 3, stride=1, pad=1)
        elif self.pool == 'max':
            h = F.max_pooling_2d(h, 3, stride=2, cover_all=False)
        units = list(self.children())
        if not units:
            return [h]
        n_serial = len(units) - self.n_split
        for unit in units[:n_serial]:
            h = unit(h)
        return [unit(h) for unit in units[n_serial:]]


class _Layer(chainer.ChainList):
    """An Inception layer: the concatenation of its branches' outputs."""

    def __init__(self, branches, out_channels):
        super(_Layer, self).__init__(*branches)
        self.out_channels = out_channels

    def forward(self, x):
        outputs = []
        for branch in self.children():
            outputs.extend(branch(x))
        if len(outputs) == 1:
            return outputs[0]
        return F.concat(outputs, axis=1)


class InceptionV3(chainer.Chain):
    """Inception-V3 for 32x32 images with named normalization layers.

    Args:
        n_class (int): Number of classes (10 or 100 for CIFAR).
        mn_layers (list of str or None): Layer or BN names where Mixture
            Normalization replaces batch normalization (e.g.
            ``['inc2/0', 'inc3/0']``); see :meth:`expand_norm_layer`.
        mn_kwargs (dict or None): Keyword arguments of
            :class:`mn_chainer.links.MixtureNormalization` (e.g.
            ``n_components``, ``em_iter``) over
            :data:`models.normalization.MN_DEFAULTS` (every norm here is
            followed by a ReLU: Eq. 40, ``relu=True``, unless given).
        width (float): Channel width multiplier (1.0: the original widths;
            smaller values for fast tests). Every width is
            ``max(1, round(c * width))``.
        dropout_ratio (float): Dropout before the classifier (0.2, TF-slim's
            ``keep_prob=0.8``; 0 disables it).
        norm_kwargs (dict or None): Keyword arguments of every
            :class:`chainer.links.BatchNormalization`.

    Attributes:
        out_channels (int): Channels of the final 3x3 map (2048 at width 1).
        mn_layers (list of str): The norms replaced by MN.

    """

    #: Layer names in forward order.
    layer_names = (
        'stem', 'inc1/0', 'inc1/1', 'inc1/2', 'red1',
        'inc2/0', 'inc2/1', 'inc2/2', 'inc2/3', 'red2', 'inc3/0', 'inc3/1')

    #: Pool-branch widths of the 35x35 modules.
    _inc1_pool = (32, 64, 64)
    #: 7x7 bottleneck widths of the 17x17 modules.
    _inc2_c7 = (128, 160, 160, 192)

    def __init__(self, n_class=10, mn_layers=None, mn_kwargs=None,
                 width=1.0, dropout_ratio=0.2, norm_kwargs=None):
        super(InceptionV3, self).__init__()
        if width <= 0:
            raise ValueError('width must be positive: {}'.format(width))
        self.width = width
        self.dropout_ratio = dropout_ratio
        self._norm_kwargs = norm_kwargs

        with self.init_scope():
            self.stem = self._stem(3)
            ch = self.stem.out_channels
            self.inc1 = chainer.ChainList()
            for pool_features in self._inc1_pool:
                self.inc1.append(self._inception_a(ch, pool_features))
                ch = self.inc1[-1].out_channels
            self.red1 = self._reduction_b(ch)
            ch = self.red1.out_channels
            self.inc2 = chainer.ChainList()
            for c7 in self._inc2_c7:
                self.inc2.append(self._inception_c(ch, c7))
                ch = self.inc2[-1].out_channels
            self.red2 = self._reduction_d(ch)
            ch = self.red2.out_channels
            self.inc3 = chainer.ChainList()
            for _ in range(2):
                self.inc3.append(self._inception_e(ch))
                ch = self.inc3[-1].out_channels
            self.fc = L.Linear(ch, n_class)
        self.out_channels = ch
        self.mn_layers = normalization.use_mixture_normalization(
            self, mn_layers, mn_kwargs)

    # ------------------------------------------------------------------
    # construction

    def _c(self, channels):
        return max(1, int(round(channels * self.width)))

    def _unit(self, in_channels, out_channels, ksize, stride=1, pad=0):
        return blocks.Conv2DBNActiv(
            in_channels, self._c(out_channels), ksize, stride, pad,
            norm_kwargs=self._norm_kwargs)

    def _seq(self, in_channels, specs):
        """Units chained from ``specs`` = [(out, ksize, stride, pad), ...]."""
        units = []
        for out, ksize, stride, pad in specs:
            units.append(self._unit(in_channels, out, ksize, stride, pad))
            in_channels = self._c(out)
        return units

    def _layer(self, branches):
        out = 0
        for branch, in_channels in branches:
            units = list(branch.children())
            if units:
                out += sum(u.conv.out_channels
                           for u in units[len(units) - branch.n_split:])
            else:
                out += in_channels
        return _Layer([b for b, _ in branches], out)

    def _stem(self, in_channels):
        units = self._seq(in_channels, [
            (32, 3, 1, 1), (32, 3, 1, 1), (64, 3, 1, 1), (80, 1, 1, 0),
            (192, 3, 1, 1)])
        return self._layer([(_Branch(units), in_channels)])

    def _inception_a(self, ch, pool_features):
        return self._layer([
            (_Branch(self._seq(ch, [(64, 1, 1, 0)])), ch),
            (_Branch(self._seq(ch, [(48, 1, 1, 0), (64, 5, 1, 2)])), ch),
            (_Branch(self._seq(ch, [
                (64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 1, 1)])), ch),
            (_Branch(self._seq(ch, [(pool_features, 1, 1, 0)]),
                     pool='avg'), ch),
        ])

    def _reduction_b(self, ch):
        return self._layer([
            (_Branch(self._seq(ch, [(384, 3, 2, 0)])), ch),
            (_Branch(self._seq(ch, [
                (64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 2, 0)])), ch),
            (_Branch([], pool='max'), ch),
        ])

    def _inception_c(self, ch, c7):
        return self._layer([
            (_Branch(self._seq(ch, [(192, 1, 1, 0)])), ch),
            (_Branch(self._seq(ch, [
                (c7, 1, 1, 0), (c7, (1, 7), 1, (0, 3)),
                (192, (7, 1), 1, (3, 0))])), ch),
            (_Branch(self._seq(ch, [
                (c7, 1, 1, 0), (c7, (7, 1), 1, (3, 0)),
                (c7, (1, 7), 1, (0, 3)), (c7, (7, 1), 1, (3, 0)),
                (192, (1, 7), 1, (0, 3))])), ch),
            (_Branch(self._seq(ch, [(192, 1, 1, 0)]), pool='avg'), ch),
        ])

    def _reduction_d(self, ch):
        return self._layer([
            (_Branch(self._seq(ch, [(192, 1, 1, 0), (320, 3, 2, 0)])), ch),
            (_Branch(self._seq(ch, [
                (192, 1, 1, 0), (192, (1, 7), 1, (0, 3)),
                (192, (7, 1), 1, (3, 0)), (192, 3, 2, 0)])), ch),
            (_Branch([], pool='max'), ch),
        ])

    def _inception_e(self, ch):
        def split(stem_specs, in_channels):
            # The expanded outputs: 1x3 and 3x1 applied to the same input.
            units = self._seq(in_channels, stem_specs)
            mid = self._c(stem_specs[-1][0])
            units.append(self._unit(mid, 384, (1, 3), 1, (0, 1)))
            units.append(self._unit(mid, 384, (3, 1), 1, (1, 0)))
            return _Branch(units, n_split=2)

        return self._layer([
            (_Branch(self._seq(ch, [(320, 1, 1, 0)])), ch),
            (split([(384, 1, 1, 0)], ch), ch),
            (split([(448, 1, 1, 0), (384, 3, 1, 1)], ch), ch),
            (_Branch(self._seq(ch, [(192, 1, 1, 0)]), pool='avg'), ch),
        ])

    # ------------------------------------------------------------------
    # forward

    def get_layer(self, name):
        """Return the layer link named ``name`` (e.g. ``'inc2/0'``)."""
        if name not in self.layer_names:
            raise ValueError(
                'unknown layer {!r}; valid layer names: {}'.format(
                    name, ', '.join(self.layer_names)))
        block, _, index = name.partition('/')
        link = getattr(self, block)
        return link[int(index)] if index else link

    def features(self, x):
        """Return the final ``(N, out_channels, 3, 3)`` map for 32x32 input.

        Args:
            x (chainer.Variable or array): Images of shape ``(N, 3, 32, 32)``.

        """
        h = self.stem(x)
        h = F.max_pooling_2d(h, 3, stride=2, cover_all=False)
        for name in self.layer_names[1:]:
            h = self.get_layer(name)(h)
        return h

    def forward(self, x):
        """Return the class logits ``(N, n_class)``."""
        h = F.average(self.features(x), axis=(2, 3))
        if self.dropout_ratio:
            h = F.dropout(h, self.dropout_ratio)
        return self.fc(h)

    # ------------------------------------------------------------------
    # model protocol (see models/__init__.py)

    def norm_links(self):
        """Return ``OrderedDict`` public norm name -> link path, in order.

        Names are ``<layer>/<branch>/<index>`` (e.g. ``inc2/0/2/4``), paths
        ``/<layer>/<branch>/<index>/bn`` (e.g. ``/inc2/0/2/4/bn``).
        """
        names = collections.OrderedDict()
        for layer_name in self.layer_names:
            layer = self.get_layer(layer_name)
            for b, branch in enumerate(layer.children()):
                for i in range(len(branch)):
                    name = '{}/{}/{}'.format(layer_name, b, i)
                    names[name] = '/{}/bn'.format(name)
        return names

    def expand_norm_layer(self, name):
        """Return the public norm names that "MN at layer ``name``" replaces.

        A layer name (``stem``, ``inc1/0`` .. ``inc1/2``, ``red1``,
        ``inc2/0`` .. ``inc2/3``, ``red2``, ``inc3/0``, ``inc3/1``) expands to
        the last BN of every branch output of that layer (2 for a reduction,
        4 for ``inc1``/``inc2`` modules, 6 for ``inc3`` modules, 1 for the
        stem); a single BN name such as ``inc2/0/2/4`` expands to itself.

        Raises:
            ValueError: ``name`` is neither a layer nor a BN name.

        """
        if name in self.layer_names:
            layer = self.get_layer(name)
            return ['{}/{}/{}'.format(name, b, i)
                    for b, branch in enumerate(layer.children())
                    for i in branch.output_indices]
        if name in self.norm_links():
            return [name]
        raise ValueError(
            'unknown Inception-V3 norm layer {!r}; valid layer names: {} '
            '(or a single BN name <layer>/<branch>/<index>, e.g. '
            'inc2/0/2/4)'.format(name, ', '.join(self.layer_names)))
