"""Basic DenseNet for CIFAR (Huang et al., CVPR 2017; paper §4.4, Table VII).

Growth rate ``k`` (12), depth ``L``, no bottleneck and no compression:

* ``conv1``: 3x3 convolution, 3 -> 16 channels;
* three dense blocks ``block1`` .. ``block3`` of ``n = (L - 4) / 3`` layers;
  layer ``i`` is ``BN-ReLU-Conv3x3`` producing ``k`` channels that are
  concatenated to its input;
* transitions ``trans1``, ``trans2``: ``BN-ReLU-Conv1x1`` (channels kept)
  then 2x2 average pooling (32 -> 16 -> 8);
* ``final``: BN-ReLU, global average pooling, linear classifier.

The channels reaching ``final`` are ``16 + 3 n k``: 448 for L = 40
(n = 12), 1168 for L = 100 (n = 32); Table VII's variants use
``layers_per_block`` 5 (dim 196, the paper's "20 layers") and 12 (dim 448).

**Names.** The BNs are ``block<b>/<i>`` (b = 1..3, i = 0..n-1, path
``/block<b>/<i>/bn``), ``trans1``, ``trans2`` (paths ``/trans1/bn``,
``/trans2/bn``) and ``final`` (path ``/final``). The paper's MN DenseNet
replaces ``trans1``, ``trans2`` and ``final``; Table VII only ``final``.
Each name is also its own layer name for :meth:`DenseNet.expand_norm_layer`.

:class:`DenseNet40` and :class:`DenseNet100` are the paper's two
architectures (the models of the ``densenet_l40``/``densenet_l100`` presets).
"""
import collections

import chainer
import chainer.functions as F
import chainer.links as L

from models import blocks
from models import normalization


class _DenseLayer(blocks.BNActivConv2D):
    """``BN-ReLU-Conv3x3`` whose ``growth`` output channels are appended."""

    def __init__(self, in_channels, growth, norm_kwargs=None):
        super(_DenseLayer, self).__init__(
            in_channels, growth, 3, 1, 1, norm_kwargs=norm_kwargs)

    def forward(self, x):
        return F.concat(
            (x, super(_DenseLayer, self).forward(x)), axis=1)


class _Transition(blocks.BNActivConv2D):
    """``BN-ReLU-Conv1x1`` then 2x2 average pooling."""

    def __init__(self, channels, norm_kwargs=None):
        super(_Transition, self).__init__(
            channels, channels, 1, norm_kwargs=norm_kwargs)

    def forward(self, x):
        return F.average_pooling_2d(
            super(_Transition, self).forward(x), 2, stride=2)


class DenseNet(chainer.Chain):
    """Basic DenseNet (no bottleneck) with named normalization layers.

    Args:
        n_class (int): Number of classes.
        mn_layers (list of str or None): Norm names where Mixture
            Normalization replaces batch normalization (the paper's:
            ``['trans1', 'trans2', 'final']``).
        mn_kwargs (dict or None): Keyword arguments of
            :class:`mn_chainer.links.MixtureNormalization` over
            :data:`models.normalization.MN_DEFAULTS` (every norm here is
            followed by a ReLU: Eq. 40, ``relu=True``, unless given).
        depth (int): Network depth ``L``; ``(L - 4)`` must be divisible by 3.
            Ignored when ``layers_per_block`` is given.
        growth_rate (int): Channels added by each dense layer (``k``).
        layers_per_block (int or None): Dense layers per block ``n``,
            overriding ``depth`` (Table VII: 5 -> dim 196, 12 -> 448).
        init_channels (int): Output channels of ``conv1``.
        dropout_ratio (float): Dropout after each convolution inside the
            blocks and transitions (Huang et al. use 0.2 only without data
            augmentation; 0 disables it).
        norm_kwargs (dict or None): Keyword arguments of every
            :class:`chainer.links.BatchNormalization`.

    Attributes:
        layers_per_block (int): ``n``.
        out_channels (int): Channels at ``final``, ``init_channels + 3 n k``.
        mn_layers (list of str): The norms replaced by MN.

    """

    def __init__(self, n_class=100, mn_layers=None, mn_kwargs=None,
                 depth=40, growth_rate=12, layers_per_block=None,
                 init_channels=16, dropout_ratio=0.0, norm_kwargs=None):
        super(DenseNet, self).__init__()
        if layers_per_block is None:
            if depth < 7 or (depth - 4) % 3:
                raise ValueError(
                    'depth - 4 must be a positive multiple of 3: '
                    'depth={}'.format(depth))
            layers_per_block = (depth - 4) // 3
        if layers_per_block < 1:
            raise ValueError('layers_per_block must be >= 1: {}'.format(
                layers_per_block))
        self.layers_per_block = layers_per_block
        self.growth_rate = growth_rate
        self.dropout_ratio = dropout_ratio

        ch = init_channels
        with self.init_scope():
            self.conv1 = L.Convolution2D(3, ch, 3, 1, 1, nobias=True)
            for b in range(1, 4):
                block = chainer.ChainList()
                for _ in range(layers_per_block):
                    block.append(_DenseLayer(ch, growth_rate, norm_kwargs))
                    ch += growth_rate
                setattr(self, 'block{}'.format(b), block)
                if b < 3:
                    setattr(self, 'trans{}'.format(b),
                            _Transition(ch, norm_kwargs))
            self.final = L.BatchNormalization(ch, **(norm_kwargs or {}))
            self.fc = L.Linear(ch, n_class)
        self.out_channels = ch
        self.mn_layers = normalization.use_mixture_normalization(
            self, mn_layers, mn_kwargs)

    def _dropout(self, h):
        if self.dropout_ratio:
            h = F.dropout(h, self.dropout_ratio)
        return h

    def features(self, x):
        """Return the ``(N, out_channels, 8, 8)`` input of ``final``."""
        h = self.conv1(x)
        for b in range(1, 4):
            for layer in getattr(self, 'block{}'.format(b)).children():
                h = self._dropout(layer(h))
            if b < 3:
                h = self._dropout(getattr(self, 'trans{}'.format(b))(h))
        return h

    def forward(self, x):
        """Return the class logits ``(N, n_class)``."""
        h = F.relu(self.final(self.features(x)))
        return self.fc(F.average(h, axis=(2, 3)))

    # ------------------------------------------------------------------
    # model protocol (see models/__init__.py)

    def norm_links(self):
        """Return ``OrderedDict`` public norm name -> link path, in order."""
        names = collections.OrderedDict()
        for b in range(1, 4):
            for i in range(self.layers_per_block):
                names['block{}/{}'.format(b, i)] = '/block{}/{}/bn'.format(
                    b, i)
            if b < 3:
                names['trans{}'.format(b)] = '/trans{}/bn'.format(b)
        names['final'] = '/final'
        return names

    def expand_norm_layer(self, name):
        """Return ``[name]`` for a norm name of this model.

        Every DenseNet norm layer holds a single BN, so a layer name is its
        own norm name (``trans1``, ``trans2``, ``final``, ``block<b>/<i>``).

        Raises:
            ValueError: ``name`` is not a norm name of this model.

        """
        if name in self.norm_links():
            return [name]
        raise ValueError(
            'unknown DenseNet norm layer {!r}; valid names: trans1, trans2, '
            'final, block<b>/<i> (b = 1..3, i = 0..{})'.format(
                name, self.layers_per_block - 1))


class DenseNet40(DenseNet):
    """DenseNet {L = 40, k = 12} (paper §4.4; 448 channels at ``final``)."""

    def __init__(self, n_class=100, mn_layers=None, mn_kwargs=None,
                 **kwargs):
        super(DenseNet40, self).__init__(
            n_class, mn_layers, mn_kwargs, depth=40, growth_rate=12,
            **kwargs)


class DenseNet100(DenseNet):
    """DenseNet {L = 100, k = 12} (paper §4.4; 1168 channels at ``final``)."""

    def __init__(self, n_class=100, mn_layers=None, mn_kwargs=None,
                 **kwargs):
        super(DenseNet100, self).__init__(
            n_class, mn_layers, mn_kwargs, depth=100, growth_rate=12,
            **kwargs)
