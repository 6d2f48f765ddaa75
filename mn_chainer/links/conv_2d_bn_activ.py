"""Convolution, batch normalization, activation: the models' one unit."""
import chainer
import chainer.functions as F
import chainer.links as L


class Conv2DBNActiv(chainer.Chain):

    """Convolution -> batch normalization -> activation (post-activation).

    The unit of the CIFAR CNN, Inception-V3 and the FID Inception network,
    shaped like ChainerCV's :class:`chainercv.links.Conv2DBNActiv`.  The
    normalization is a child link named ``bn`` (a
    :class:`~chainer.links.BatchNormalization` at construction), so a model
    can name it and :func:`mn_chainer.links.replace_batch_normalization` can
    swap it for Mixture Normalization afterwards.  The convolution has no
    bias by default, since the normalization adds its own ``beta``.

    As in ChainerCV, ``in_channels`` may be omitted
    (``Conv2DBNActiv(out_channels, ksize)``: lazy input size), and a
    ``comm`` in ``norm_kwargs`` makes the normalization ChainerMN's
    ``MultiNodeBatchNormalization``.

    Args:
        in_channels (int or None): Input channels (None: lazy).
        out_channels (int): Output channels.
        ksize (int or tuple of ints): Kernel size.
        stride (int or tuple of ints): Stride.
        pad (int or tuple of ints): Padding.
        dilate (int or tuple of ints): Dilation.
        groups (int): Convolution groups.
        nobias (bool): No convolution bias.
        initialW: Initializer of the convolution weights.
        initial_bias: Initializer of the convolution bias.
        activ (callable or None): Activation after the norm (None: identity;
            default :func:`chainer.functions.relu`).
        norm_kwargs (dict or None): Keyword arguments of the norm link (e.g.
            ``{'eps': 1e-3}``).
    """

    def __init__(self, in_channels, out_channels, ksize=None, stride=1,
                 pad=0, dilate=1, groups=1, nobias=True, initialW=None,
                 initial_bias=None, activ=F.relu, norm_kwargs=None):
        if ksize is None:
            out_channels, ksize, in_channels = in_channels, out_channels, None
        super(Conv2DBNActiv, self).__init__()
        self.activ = activ
        norm_kwargs = dict(norm_kwargs or {})
        with self.init_scope():
            self.conv = L.Convolution2D(
                in_channels, out_channels, ksize, stride, pad, nobias,
                initialW, initial_bias, dilate=dilate, groups=groups)
            if 'comm' in norm_kwargs:
                from chainermn.links import batch_normalization
                self.bn = batch_normalization.MultiNodeBatchNormalization(
                    out_channels, **norm_kwargs)
            else:
                self.bn = L.BatchNormalization(out_channels, **norm_kwargs)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if self.activ is not None:
            h = self.activ(h)
        return h
