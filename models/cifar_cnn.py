"""The 5-layer CIFAR CNN of the paper's Table I."""
import collections

import chainer
import chainer.functions as F
import chainer.links as L

from models import blocks
from models import normalization


class CifarCNN(chainer.Chain):

    """CIFAR CNN of Kalayeh & Shah, Table I, with named norm layers.

    Four convolution blocks (convolution -> norm -> ReLU -> pooling) and a
    linear classifier::

        conv1  5x5/1 pad 2, norm, ReLU, max pool 3x3/2   32 -> 15
        conv2  5x5/1 pad 2, norm, ReLU, max pool 3x3/2   15 -> 7
        conv3  5x5/1 pad 2, norm, ReLU, max pool 3x3/2    7 -> 3
        conv4  3x3/1 pad 1, norm, ReLU, avg pool 3x3/1    3 -> 1
        fc     linear -> n_class

    The channel widths were lost from the paper's text; the default is
    64-128-256-256 (DESIGN.md section 2).

    The network is built with ``L.BatchNormalization``; its norms are named
    ``conv1`` .. ``conv4`` (paths ``/convI/bn``). ``mn_layers`` swaps the
    named ones for :class:`mn_chainer.links.MixtureNormalization` (the
    paper's "MN at conv3" is ``mn_layers=['conv3']``) with the defaults of
    :data:`models.normalization.MN_DEFAULTS`: every norm here is followed
    by ReLU, so MN applies the per-component rectification of the paper's
    Eq. 40 (``relu=True``) unless ``mn_kwargs`` says ``relu=False`` (the
    plain form, Eq. 34, followed by the block's ReLU).

    Args:
        n_class (int): Number of classes (10 for CIFAR-10, 100 for
            CIFAR-100).
        widths (tuple of 4 ints): Output channels of conv1 .. conv4.
        mn_layers (list of str or None): Norm layers to replace with
            Mixture Normalization (see :meth:`expand_norm_layer`).
        mn_kwargs (dict or None): Keyword arguments of
            :class:`mn_chainer.links.MixtureNormalization` (e.g.
            ``n_components``, ``em_iter``, ``relu``, ``seed``).
        norm_kwargs (dict or None): Keyword arguments of every
            ``L.BatchNormalization`` (e.g. ``decay``, ``eps``; a ``comm``
            makes them ChainerMN's multi-node BN).

    Attributes:
        mn_layers (list of str): The norms replaced by MN.

    .. seealso:: :func:`models.normalization.use_mixture_normalization`

    """

    #: Public norm layer names, in forward order.
    norm_names = ('conv1', 'conv2', 'conv3', 'conv4')

    def __init__(self, n_class=10, widths=(64, 128, 256, 256),
                 mn_layers=None, mn_kwargs=None, norm_kwargs=None):
        super(CifarCNN, self).__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(
                'widths must be 4 positive channel counts, got {!r}'.format(
                    widths))
        if n_class < 1:
            raise ValueError('n_class must be positive, got {}'.format(
                n_class))
        self.n_class = n_class
        self.widths = widths
        with self.init_scope():
            self.conv1 = blocks.Conv2DBNActiv(
                3, widths[0], 5, pad=2, norm_kwargs=norm_kwargs)
            self.conv2 = blocks.Conv2DBNActiv(
                widths[0], widths[1], 5, pad=2, norm_kwargs=norm_kwargs)
            self.conv3 = blocks.Conv2DBNActiv(
                widths[1], widths[2], 5, pad=2, norm_kwargs=norm_kwargs)
            self.conv4 = blocks.Conv2DBNActiv(
                widths[2], widths[3], 3, pad=1, norm_kwargs=norm_kwargs)
            self.fc = L.Linear(widths[3], n_class)
        self.mn_layers = normalization.use_mixture_normalization(
            self, mn_layers, mn_kwargs)

    def norm_links(self):
        """Returns ``OrderedDict`` public norm name -> link path."""
        return collections.OrderedDict(
            (name, '/{}/bn'.format(name)) for name in self.norm_names)

    def expand_norm_layer(self, name):
        """Returns the norm names that "MN at layer ``name``" replaces.

        Each layer of this network has a single norm, so a valid name
        expands to itself.

        Raises:
            ValueError: If ``name`` is not one of ``conv1`` .. ``conv4``.

        """
        if name not in self.norm_names:
            raise ValueError(
                'unknown norm layer {!r} of CifarCNN; valid names: {}'
                .format(name, ', '.join(self.norm_names)))
        return [name]

    def forward(self, x):
        """Computes the class scores (logits) of images ``x`` (N, 3, 32, 32).
        """
        h = F.max_pooling_2d(self.conv1(x), 3, stride=2, cover_all=False)
        h = F.max_pooling_2d(self.conv2(h), 3, stride=2, cover_all=False)
        h = F.max_pooling_2d(self.conv3(h), 3, stride=2, cover_all=False)
        h = F.average_pooling_2d(self.conv4(h), 3, stride=1)
        return self.fc(h)
