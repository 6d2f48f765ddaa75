"""Convolution + normalization + activation units shared by the models.

Every unit holds its normalization as a child link named ``bn`` (a plain
:class:`chainer.links.BatchNormalization` at construction), so a model can
name it and :func:`models.normalization.use_mixture_normalization` can swap
it for Mixture Normalization afterwards.

``norm_kwargs`` (``None`` by default, never ``{}``) are passed to the
normalization link's constructor, so one argument sets, e.g., ``eps`` or
``decay`` network-wide.
"""
import chainer
import chainer.functions as F
import chainer.links as L

import mn_chainer.links


#: Convolution -> normalization -> activation, the unit of the CIFAR CNN and
#: Inception-V3 (:class:`mn_chainer.links.Conv2DBNActiv`, also the FID
#: network's unit).
Conv2DBNActiv = mn_chainer.links.Conv2DBNActiv


class BNActivConv2D(chainer.Chain):
    """Batch normalization -> activation -> convolution (pre-activation).

    The unit of DenseNet (Huang et al., 2017): its dense layers
    (``BN-ReLU-Conv3x3``) and transitions (``BN-ReLU-Conv1x1``).

    Args:
        in_channels (int): Input channels (the norm's size).
        out_channels (int): Output channels.
        ksize (int or tuple of ints): Kernel size.
        stride (int or tuple of ints): Stride.
        pad (int or tuple of ints): Padding.
        activ (callable or None): Activation between norm and convolution.
        norm_kwargs (dict or None): Keyword arguments of the norm link.

    """

    def __init__(self, in_channels, out_channels, ksize, stride=1, pad=0,
                 activ=F.relu, norm_kwargs=None):
        super(BNActivConv2D, self).__init__()
        self.activ = activ
        with self.init_scope():
            self.bn = L.BatchNormalization(
                in_channels, **(norm_kwargs or {}))
            self.conv = L.Convolution2D(
                in_channels, out_channels, ksize, stride, pad, nobias=True)

    def forward(self, x):
        h = self.bn(x)
        if self.activ is not None:
            h = self.activ(h)
        return self.conv(h)
