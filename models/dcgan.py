"""DCGAN for 32x32 CIFAR-10 with named generator norms (paper section 4.5).

Radford et al.'s DCGAN as the paper uses it: the generator is one linear
and four deconvolution layers, the first three deconvolutions each followed
by a norm and ReLU; "MN" replaces the norms after the first two
deconvolutions with Mixture Normalization (K = 3, EM iter 2, the per-component
ReLU of Eq. 40 since ReLU follows: :data:`models.normalization.MN_DEFAULTS`).
"""
import collections

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

from models import normalization


#: Mixture Normalization settings of the paper's DCGAN-MN (over
#: :data:`models.normalization.MN_DEFAULTS`).
PAPER_MN_KWARGS = {'n_components': 3, 'em_iter': 2}


def _expand(model, name, aliases):
    norm_links = model.norm_links()
    if name in norm_links:
        return [name]
    if name in aliases:
        return list(aliases[name])
    raise ValueError(
        'unknown {} norm layer {!r}; valid names: {}'.format(
            type(model).__name__, name,
            ', '.join(list(norm_links) + sorted(aliases))))


class Generator(chainer.Chain):

    """DCGAN generator ``z -> (N, 3, 32, 32)`` images in ``[-1, 1]``.

    Layout (``ch = 512``, ``bottom_width = 4``)::

        l0     linear n_hidden -> 4x4x512, norm0, ReLU
        dc1    deconv 4x4/2  512 -> 256   4 -> 8,   norm1, ReLU
        dc2    deconv 4x4/2  256 -> 128   8 -> 16,  norm2, ReLU
        dc3    deconv 4x4/2  128 -> 64   16 -> 32,  norm3, ReLU
        dc4    deconv 3x3/1   64 -> 3    32 -> 32,  tanh

    ``norm0`` (over the 512 channels of the 4x4 map) follows Radford et al.
    and Chainer's DCGAN example; the paper only describes the norms between
    the deconvolutions. Weights are drawn from N(0, 0.02).

    Norms are ``L.BatchNormalization`` links named ``norm0`` .. ``norm3``
    (the model protocol of :mod:`models`); the layer alias ``'paper'``
    expands to ``['norm1', 'norm2']``, the norms after the first two
    deconvolutions that the paper's DCGAN-MN replaces.

    Args:
        n_hidden (int): Dimension of ``z``.
        bottom_width (int): Side of the first feature map (4 gives 32x32
            images).
        ch (int): Channels of the first feature map (halved by each
            deconvolution).
        wscale (float): Standard deviation of the initial weights.
        mn_layers (list of str or None): Norm names or aliases where Mixture
            Normalization replaces batch normalization (``['paper']``).
        mn_kwargs (dict or None): Arguments of
            :class:`mn_chainer.links.MixtureNormalization`; defaults to
            :data:`PAPER_MN_KWARGS` and
            :data:`models.normalization.MN_DEFAULTS` (given keys
            override).

    Attributes:
        mn_layers (list of str): The norms replaced by MN.

    """

    #: Layer aliases: name -> norm names.
    layer_aliases = {'paper': ('norm1', 'norm2')}

    def __init__(self, n_hidden=100, bottom_width=4, ch=512, wscale=0.02,
                 mn_layers=None, mn_kwargs=None):
        super(Generator, self).__init__()
        if ch % 8:
            raise ValueError('ch must be divisible by 8, got {}'.format(ch))
        self.n_hidden = n_hidden
        self.bottom_width = bottom_width
        self.ch = ch
        w = chainer.initializers.Normal(wscale)
        with self.init_scope():
            self.l0 = L.Linear(n_hidden, bottom_width * bottom_width * ch,
                               initialW=w)
            self.norm0 = L.BatchNormalization(ch)
            self.dc1 = L.Deconvolution2D(ch, ch // 2, 4, 2, 1, initialW=w)
            self.norm1 = L.BatchNormalization(ch // 2)
            self.dc2 = L.Deconvolution2D(ch // 2, ch // 4, 4, 2, 1,
                                         initialW=w)
            self.norm2 = L.BatchNormalization(ch // 4)
            self.dc3 = L.Deconvolution2D(ch // 4, ch // 8, 4, 2, 1,
                                         initialW=w)
            self.norm3 = L.BatchNormalization(ch // 8)
            self.dc4 = L.Deconvolution2D(ch // 8, 3, 3, 1, 1, initialW=w)
        self.mn_layers = normalization.use_mixture_normalization(
            self, mn_layers, dict(PAPER_MN_KWARGS, **(mn_kwargs or {})))

    def make_hidden(self, batchsize, rng=None):
        """Draw ``z ~ U(-1, 1)`` of shape ``(batchsize, n_hidden)``.

        Args:
            batchsize (int): Number of vectors.
            rng (numpy.random.RandomState or None): Generator to draw from
                (NumPy's global one if None).

        Returns:
            numpy.ndarray: ``float32`` array on the CPU.

        """
        rng = numpy.random if rng is None else rng
        return rng.uniform(-1, 1, (batchsize, self.n_hidden)).astype(
            numpy.float32)

    def forward(self, z):
        """Map ``z`` (N, n_hidden) to images (N, 3, 32, 32) in [-1, 1]."""
        h = F.reshape(self.l0(z), (len(z), self.ch, self.bottom_width,
                                   self.bottom_width))
        h = F.relu(self.norm0(h))
        h = F.relu(self.norm1(self.dc1(h)))
        h = F.relu(self.norm2(self.dc2(h)))
        h = F.relu(self.norm3(self.dc3(h)))
        return F.tanh(self.dc4(h))

    # ------------------------------------------------------------------
    # model protocol (see models/__init__.py)

    def norm_links(self):
        """Return ``OrderedDict`` public norm name -> link path."""
        return collections.OrderedDict(
            ('norm{}'.format(i), '/norm{}'.format(i)) for i in range(4))

    def expand_norm_layer(self, name):
        """Return the norm names that "MN at layer *name*" replaces.

        ``'paper'`` gives ``['norm1', 'norm2']``; a norm name gives itself.

        Raises:
            ValueError: ``name`` is neither a norm name nor an alias.

        """
        return _expand(self, name, self.layer_aliases)


class Discriminator(chainer.Chain):

    """DCGAN discriminator ``(N, 3, 32, 32) -> (N, 1)`` logits.

    Layout (``ch = 512``)::

        c0   conv 4x4/2    3 -> 64    32 -> 16,         leaky ReLU
        c1   conv 4x4/2   64 -> 128   16 -> 8,   norm1, leaky ReLU
        c2   conv 4x4/2  128 -> 256    8 -> 4,   norm2, leaky ReLU
        c3   conv 3x3/1  256 -> 512    4 -> 4,   norm3, leaky ReLU
        l4   linear 4x4x512 -> 1

    Leaky ReLU slope 0.2, no norm on the input layer (Radford et al.),
    weights from N(0, 0.02). The norms follow the model protocol too
    (``norm1`` .. ``norm3``), though the paper only changes the generator.

    Args:
        bottom_width (int): Side of the last feature map (4 for 32x32).
        ch (int): Channels of the last convolution.
        wscale (float): Standard deviation of the initial weights.
        slope (float): Leaky ReLU slope.

    """

    layer_aliases = {}

    def __init__(self, bottom_width=4, ch=512, wscale=0.02, slope=0.2):
        super(Discriminator, self).__init__()
        if ch % 8:
            raise ValueError('ch must be divisible by 8, got {}'.format(ch))
        self.slope = slope
        w = chainer.initializers.Normal(wscale)
        with self.init_scope():
            self.c0 = L.Convolution2D(3, ch // 8, 4, 2, 1, initialW=w)
            self.c1 = L.Convolution2D(ch // 8, ch // 4, 4, 2, 1, initialW=w)
            self.norm1 = L.BatchNormalization(ch // 4)
            self.c2 = L.Convolution2D(ch // 4, ch // 2, 4, 2, 1, initialW=w)
            self.norm2 = L.BatchNormalization(ch // 2)
            self.c3 = L.Convolution2D(ch // 2, ch, 3, 1, 1, initialW=w)
            self.norm3 = L.BatchNormalization(ch)
            self.l4 = L.Linear(bottom_width * bottom_width * ch, 1,
                               initialW=w)

    def forward(self, x):
        """Return the logits ``(N, 1)`` of ``x`` being real."""
        h = F.leaky_relu(self.c0(x), self.slope)
        h = F.leaky_relu(self.norm1(self.c1(h)), self.slope)
        h = F.leaky_relu(self.norm2(self.c2(h)), self.slope)
        h = F.leaky_relu(self.norm3(self.c3(h)), self.slope)
        return self.l4(h)

    def norm_links(self):
        """Return ``OrderedDict`` public norm name -> link path."""
        return collections.OrderedDict(
            ('norm{}'.format(i), '/norm{}'.format(i)) for i in range(1, 4))

    def expand_norm_layer(self, name):
        """Return ``[name]`` for a norm name of this model."""
        return _expand(self, name, self.layer_aliases)
