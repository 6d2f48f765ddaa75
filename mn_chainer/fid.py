"""Fréchet Inception Distance (FID) for Chainer.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
a Local Nash Equilibrium", NIPS 2017) compares two sets of images through the
2048-d ``pool3`` features of an Inception network: each set's features are
summarised by a Gaussian ``N(mu, sigma)`` and the distance is the Fréchet
(2-Wasserstein) distance between the two Gaussians,

.. math::

    d^2 = \\|\\mu_1 - \\mu_2\\|^2
          + \\mathrm{Tr}(\\Sigma_1 + \\Sigma_2
                          - 2 (\\Sigma_1 \\Sigma_2)^{1/2}).

The paper (§4.5) evaluates its DCGAN with FID every 10K updates. FID numbers
are only comparable between implementations that use the same network and
weights: :class:`InceptionV3FID` is the FID Inception of the reference
TensorFlow code (the ``inception-2015-12-05`` graph) in the layout of
pytorch-fid (``FIDInceptionA/C/E_1/E_2`` blocks), and loads the weights of
pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` after conversion with
``tools/convert_fid_inception.py``. Without those weights FID is unavailable
(:class:`FIDUnavailableError`): a randomly initialised network gives numbers
that mean nothing.
"""
import os
import tempfile
import warnings

import numpy
import scipy.linalg

import chainer
from chainer import backend
import chainer.functions as F

import mn_chainer.links


#: Spatial size the FID Inception network sees (pytorch-fid's resize).
INCEPTION_SIZE = 299

#: Dimension of the ``pool3`` features.
FEATURE_DIM = 2048

#: File name of the weights this module's converter expects as input.
PYTORCH_FID_WEIGHTS = 'pt_inception-2015-12-05-6726825d.pth'

_NO_WEIGHTS_MESSAGE = (
    'FID is unavailable: no Inception weights were given. Download '
    'pytorch-fid\'s {} (the FID Inception of the TensorFlow reference code), '
    'convert it with `python tools/convert_fid_inception.py {} '
    'fid_inception.npz` and pass the npz (`--inception-weights '
    'fid_inception.npz`). A randomly initialised network would give '
    'meaningless numbers, so none is reported.'.format(
        PYTORCH_FID_WEIGHTS, PYTORCH_FID_WEIGHTS))


class FIDUnavailableError(RuntimeError):

    """Raised when FID is asked for without pretrained Inception weights."""

    pass


def no_weights_message():
    """Return the message that explains why FID is unavailable."""
    return _NO_WEIGHTS_MESSAGE


# ---------------------------------------------------------------------------
# Statistics and the distance
# ---------------------------------------------------------------------------

def compute_statistics(features):
    """Mean and covariance of a set of feature vectors, in float64.

    Args:
        features (array-like of shape (n_samples, n_features)): Features,
            NumPy or CuPy; at least two rows.

    Returns:
        tuple: ``(mu, sigma)``: NumPy float64 arrays of shapes
        ``(n_features,)`` and ``(n_features, n_features)`` (the unbiased
        covariance, as ``numpy.cov(features, rowvar=False)``).

    """
    features = numpy.asarray(backend.CpuDevice().send(features),
                             dtype=numpy.float64)
    if features.ndim != 2:
        raise ValueError('features must be 2-D (n_samples, n_features), '
                         'got shape {}'.format(features.shape))
    if len(features) < 2:
        raise ValueError('at least 2 samples are needed for a covariance, '
                         'got {}'.format(len(features)))
    mu = features.mean(axis=0)
    sigma = numpy.cov(features, rowvar=False)
    return mu, numpy.atleast_2d(sigma)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Fréchet distance of ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FID).

    Computed in float64 as in the reference FID code: the matrix square root
    of ``sigma1 @ sigma2`` by :func:`scipy.linalg.sqrtm`; if it is not finite
    (a singular product), ``eps * I`` is added to both covariances and the
    root is taken again; an imaginary part that numerical error leaves in the
    root is dropped (an error if it is not tiny).

    Args:
        mu1 (array-like of shape (d,)): Mean of the first Gaussian.
        sigma1 (array-like of shape (d, d)): Covariance of the first one.
        mu2 (array-like of shape (d,)): Mean of the second Gaussian.
        sigma2 (array-like of shape (d, d)): Covariance of the second one.
        eps (float): Diagonal offset used when the product is singular.

    Returns:
        float: The squared Fréchet distance (what is called FID), clipped at
        0 against round-off.

    """
    mu1 = numpy.atleast_1d(numpy.asarray(mu1, dtype=numpy.float64))
    mu2 = numpy.atleast_1d(numpy.asarray(mu2, dtype=numpy.float64))
    sigma1 = numpy.atleast_2d(numpy.asarray(sigma1, dtype=numpy.float64))
    sigma2 = numpy.atleast_2d(numpy.asarray(sigma2, dtype=numpy.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError('means must be vectors of one length, got shapes '
                         '{} and {}'.format(mu1.shape, mu2.shape))
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError('covariances must be {0}x{0}, got shapes {1} and '
                         '{2}'.format(d, sigma1.shape, sigma2.shape))

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1.dot(sigma2))
    if not numpy.isfinite(covmean).all():
        warnings.warn('FID: the product of the covariances is singular; '
                      'adding {} to their diagonals'.format(eps),
                      RuntimeWarning)
        offset = numpy.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if numpy.iscomplexobj(covmean):
        max_imag = numpy.max(numpy.abs(numpy.diagonal(covmean).imag))
        if not numpy.allclose(numpy.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError('FID: imaginary component {} in the matrix '
                             'square root'.format(max_imag))
        covmean = covmean.real
    value = (diff.dot(diff) + numpy.trace(sigma1) + numpy.trace(sigma2)
             - 2 * numpy.trace(covmean))
    return max(float(value), 0.)


def _sqrtm(a):
    with warnings.catch_warnings():
        # sqrtm warns (and may return inf/nan) on singular input; the caller
        # handles it.
        warnings.simplefilter('ignore')
        with numpy.errstate(all='ignore'):
            return scipy.linalg.sqrtm(a)


def save_statistics(path, mu, sigma, **metadata):
    """Write FID statistics to an npz file, atomically.

    Args:
        path (str): Destination (``.npz``).
        mu (array-like of shape (d,)): Mean.
        sigma (array-like of shape (d, d)): Covariance.
        **metadata: Extra scalars or strings stored beside them (for example
            ``n_samples``, ``source``).

    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp_fid_stats_', suffix='.npz',
                               dir=directory)
    os.close(fd)
    try:
        numpy.savez(tmp, mu=numpy.asarray(mu, dtype=numpy.float64),
                    sigma=numpy.asarray(sigma, dtype=numpy.float64),
                    **{k: numpy.asarray(v) for k, v in metadata.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_statistics(path):
    """Read FID statistics written by :func:`save_statistics`.

    Also reads the ``mu``/``sigma`` npz files of pytorch-fid and of the
    TensorFlow reference code (same keys).

    Returns:
        tuple: ``(mu, sigma, metadata)`` with NumPy float64 ``mu``, ``sigma``
        and a dict of the other entries.

    """
    with numpy.load(path, allow_pickle=False) as f:
        if 'mu' not in f or 'sigma' not in f:
            raise ValueError('{} holds no FID statistics (keys mu, sigma); '
                             'it has {}'.format(path, sorted(f.files)))
        mu = numpy.asarray(f['mu'], dtype=numpy.float64)
        sigma = numpy.asarray(f['sigma'], dtype=numpy.float64)
        metadata = {k: f[k][()] for k in f.files if k not in ('mu', 'sigma')}
    return mu, sigma, metadata


# ---------------------------------------------------------------------------
# The FID Inception network
# ---------------------------------------------------------------------------

def bilinear_resize_matrix(in_size, out_size):
    """Matrix of 1-D bilinear resampling with half-pixel centres.

    The convention of ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False)`` (pytorch-fid's resize): output pixel ``o`` samples
    the input at ``(o + 0.5) * in_size / out_size - 0.5``, clamped at 0, from
    its two neighbours (the edge pixel repeated past the border).

    Returns:
        numpy.ndarray of shape (out_size, in_size): ``y = A @ x`` resizes a
        vector ``x``.

    """
    scale = in_size / out_size
    src = (numpy.arange(out_size, dtype=numpy.float64) + 0.5) * scale - 0.5
    src = numpy.maximum(src, 0.)
    lo = numpy.minimum(numpy.floor(src).astype(numpy.int64), in_size - 1)
    hi = numpy.minimum(lo + 1, in_size - 1)
    frac = src - lo
    a = numpy.zeros((out_size, in_size), dtype=numpy.float64)
    rows = numpy.arange(out_size)
    numpy.add.at(a, (rows, lo), 1. - frac)
    numpy.add.at(a, (rows, hi), frac)
    return a


def resize_images(x, size):
    """Bilinear resize of ``(N, C, H, W)`` arrays (half-pixel centres).

    Args:
        x (numpy.ndarray or cupy.ndarray): Images.
        size (int or tuple of ints): Output ``(height, width)``.

    Returns:
        An array of shape ``(N, C) + size`` and the dtype of ``x``.

    """
    if isinstance(size, int):
        size = (size, size)
    xp = backend.get_array_module(x)
    h, w = x.shape[2:]
    if (h, w) == tuple(size):
        return x
    a = xp.asarray(bilinear_resize_matrix(h, size[0]), dtype=x.dtype)
    b = xp.asarray(bilinear_resize_matrix(w, size[1]), dtype=x.dtype)
    # y[n, c] = A @ x[n, c] @ B^T
    y = xp.matmul(a, x)
    return xp.matmul(y, b.T)


def _avg_pool_3x3_exclude_pad(x):
    # TensorFlow's 3x3/1 SAME average pool: padded zeros are not counted
    # (pytorch-fid's count_include_pad=False patch).
    xp = backend.get_array_module(x)
    h, w = x.shape[2:]
    rows = numpy.full(h, 3.)
    cols = numpy.full(w, 3.)
    rows[0] -= 1
    rows[-1] -= 1
    cols[0] -= 1
    cols[-1] -= 1
    count = numpy.outer(numpy.maximum(rows, 1), numpy.maximum(cols, 1))
    scale = xp.asarray(9. / count, dtype=x.dtype)[None, None]
    return F.average_pooling_2d(x, 3, 1, 1) * scale


def _max_pool(x, ksize, stride, pad=0):
    # Chainer's default cover_all=True adds an output row/column that the
    # reference (TF VALID / torch) pooling does not have.
    return F.max_pooling_2d(x, ksize, stride, pad, cover_all=False)


class BasicConv2d(mn_chainer.links.Conv2DBNActiv):

    """Convolution without bias, batch normalization (eps 1e-3), ReLU.

    The unit of torchvision's Inception-V3 (``BasicConv2d``), i.e. the
    project's :class:`~mn_chainer.links.Conv2DBNActiv` with BN's ``eps`` at
    1e-3; the normalization always uses its stored statistics here (the
    network is a fixed feature extractor).

    """

    def __init__(self, in_channels, out_channels, ksize, stride=1, pad=0,
                 initialW=None):
        super(BasicConv2d, self).__init__(
            in_channels, out_channels, ksize, stride, pad, initialW=initialW,
            norm_kwargs={'eps': 1e-3})


class FIDInceptionA(chainer.Chain):

    """35x35 module (Mixed_5b-d); average pool that excludes padding."""

    def __init__(self, in_channels, pool_features, initialW=None):
        super(FIDInceptionA, self).__init__()
        w = initialW
        with self.init_scope():
            self.branch1x1 = BasicConv2d(in_channels, 64, 1, initialW=w)
            self.branch5x5_1 = BasicConv2d(in_channels, 48, 1, initialW=w)
            self.branch5x5_2 = BasicConv2d(48, 64, 5, pad=2, initialW=w)
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, initialW=w)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1, initialW=w)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, pad=1, initialW=w)
            self.branch_pool = BasicConv2d(in_channels, pool_features, 1,
                                           initialW=w)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return F.concat((b1, b5, b3, bp), axis=1)


class InceptionB(chainer.Chain):

    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels, initialW=None):
        super(InceptionB, self).__init__()
        w = initialW
        with self.init_scope():
            self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2,
                                         initialW=w)
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1, initialW=w)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, pad=1, initialW=w)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2,
                                              initialW=w)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = _max_pool(x, 3, 2)
        return F.concat((b3, bd, bp), axis=1)


class FIDInceptionC(chainer.Chain):

    """17x17 module with factorised 7x7 (Mixed_6b-e)."""

    def __init__(self, in_channels, channels_7x7, initialW=None):
        super(FIDInceptionC, self).__init__()
        w = initialW
        c7 = channels_7x7
        with self.init_scope():
            self.branch1x1 = BasicConv2d(in_channels, 192, 1, initialW=w)
            self.branch7x7_1 = BasicConv2d(in_channels, c7, 1, initialW=w)
            self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3),
                                           initialW=w)
            self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), pad=(3, 0),
                                           initialW=w)
            self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1, initialW=w)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0),
                                              initialW=w)
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), pad=(0, 3),
                                              initialW=w)
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), pad=(3, 0),
                                              initialW=w)
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), pad=(0, 3),
                                              initialW=w)
            self.branch_pool = BasicConv2d(in_channels, 192, 1, initialW=w)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return F.concat((b1, b7, bd, bp), axis=1)


class InceptionD(chainer.Chain):

    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels, initialW=None):
        super(InceptionD, self).__init__()
        w = initialW
        with self.init_scope():
            self.branch3x3_1 = BasicConv2d(in_channels, 192, 1, initialW=w)
            self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, initialW=w)
            self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1, initialW=w)
            self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), pad=(0, 3),
                                             initialW=w)
            self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), pad=(3, 0),
                                             initialW=w)
            self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2,
                                             initialW=w)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        bp = _max_pool(x, 3, 2)
        return F.concat((b3, b7, bp), axis=1)


class FIDInceptionE(chainer.Chain):

    """8x8 module with expanded 1x3/3x1 outputs (Mixed_7b, Mixed_7c).

    Args:
        in_channels (int): Input channels.
        pool (str): ``'avg'`` (Mixed_7b: average pool excluding padding) or
            ``'max'`` (Mixed_7c: the FID graph's max pool).
        initialW: Initializer of the convolutions.

    """

    def __init__(self, in_channels, pool='avg', initialW=None):
        super(FIDInceptionE, self).__init__()
        if pool not in ('avg', 'max'):
            raise ValueError('pool must be avg or max, got {!r}'.format(pool))
        self.pool = pool
        w = initialW
        with self.init_scope():
            self.branch1x1 = BasicConv2d(in_channels, 320, 1, initialW=w)
            self.branch3x3_1 = BasicConv2d(in_channels, 384, 1, initialW=w)
            self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), pad=(0, 1),
                                            initialW=w)
            self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), pad=(1, 0),
                                            initialW=w)
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1, initialW=w)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, pad=1, initialW=w)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), pad=(0, 1),
                                               initialW=w)
            self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), pad=(1, 0),
                                               initialW=w)
            self.branch_pool = BasicConv2d(in_channels, 192, 1, initialW=w)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = F.concat((self.branch3x3_2a(b3), self.branch3x3_2b(b3)), axis=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = F.concat((self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)),
                      axis=1)
        if self.pool == 'avg':
            p = _avg_pool_3x3_exclude_pad(x)
        else:
            p = _max_pool(x, 3, 1, 1)
        bp = self.branch_pool(p)
        return F.concat((b1, b3, bd, bp), axis=1)


class InceptionV3FID(chainer.Chain):

    """Inception-V3 ``pool3`` feature extractor of FID.

    The FID Inception network (the TensorFlow ``inception-2015-12-05`` graph
    as ported by pytorch-fid): images in ``[-1, 1]`` are resized bilinearly to
    299x299 (half-pixel centres, pytorch-fid's ``F.interpolate(...,
    align_corners=False)``) and mapped to the 2048-d output of the final
    global average pool. Child link names follow torchvision/pytorch-fid
    (``Conv2d_1a_3x3``, ``Mixed_5b/branch1x1/conv``, ...), so the converted
    state dict loads name for name.

    Args:
        weights (str): Path of the npz written by
            ``tools/convert_fid_inception.py``. Without it the network is
            randomly initialised and :attr:`pretrained` is ``False``: good for
            pipeline tests only (:func:`extract_features` refuses it unless
            told otherwise).
        size (int): Side the input is resized to; None for
            :data:`INCEPTION_SIZE` (299, FID's). Smaller sizes (>= 75) are
            only for tests.
        initialW: Initializer of the convolutions when no weights are given
            (He normal by default, which keeps random features finite).

    Attributes:
        pretrained (bool): Whether weights were loaded.

    """

    def __init__(self, weights=None, size=None, initialW=None):
        super(InceptionV3FID, self).__init__()
        if size is None:
            size = INCEPTION_SIZE
        if size < 75:
            raise ValueError('Inception-V3 needs inputs of at least 75x75, '
                             'got size={}'.format(size))
        self.size = size
        w = initialW if initialW is not None else \
            chainer.initializers.HeNormal()
        with self.init_scope():
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, initialW=w)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, initialW=w)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, pad=1, initialW=w)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, initialW=w)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, initialW=w)
            self.Mixed_5b = FIDInceptionA(192, 32, initialW=w)
            self.Mixed_5c = FIDInceptionA(256, 64, initialW=w)
            self.Mixed_5d = FIDInceptionA(288, 64, initialW=w)
            self.Mixed_6a = InceptionB(288, initialW=w)
            self.Mixed_6b = FIDInceptionC(768, 128, initialW=w)
            self.Mixed_6c = FIDInceptionC(768, 160, initialW=w)
            self.Mixed_6d = FIDInceptionC(768, 160, initialW=w)
            self.Mixed_6e = FIDInceptionC(768, 192, initialW=w)
            self.Mixed_7a = InceptionD(768, initialW=w)
            self.Mixed_7b = FIDInceptionE(1280, pool='avg', initialW=w)
            self.Mixed_7c = FIDInceptionE(2048, pool='max', initialW=w)
        self.pretrained = False
        if weights is not None:
            self.load_weights(weights)

    def load_weights(self, path):
        """Load converted weights (strictly: every parameter must be there)."""
        chainer.serializers.load_npz(path, self)
        self.pretrained = True

    def forward(self, x):
        """Compute ``pool3`` features.

        Args:
            x (array of shape (N, 3, H, W)): Images in ``[-1, 1]``.

        Returns:
            chainer.Variable of shape (N, 2048).

        """
        x = chainer.as_array(x)
        x = resize_images(x.astype(numpy.float32, copy=False), self.size)
        with chainer.using_config('train', False):
            h = self.Conv2d_1a_3x3(x)
            h = self.Conv2d_2a_3x3(h)
            h = self.Conv2d_2b_3x3(h)
            h = _max_pool(h, 3, 2)
            h = self.Conv2d_3b_1x1(h)
            h = self.Conv2d_4a_3x3(h)
            h = _max_pool(h, 3, 2)
            h = self.Mixed_5b(h)
            h = self.Mixed_5c(h)
            h = self.Mixed_5d(h)
            h = self.Mixed_6a(h)
            h = self.Mixed_6b(h)
            h = self.Mixed_6c(h)
            h = self.Mixed_6d(h)
            h = self.Mixed_6e(h)
            h = self.Mixed_7a(h)
            h = self.Mixed_7b(h)
            h = self.Mixed_7c(h)
            return F.mean(h, axis=(2, 3))


def iter_batches(images, batchsize):
    """Yield consecutive slices of ``images`` of at most ``batchsize``."""
    for i in range(0, len(images), batchsize):
        yield images[i:i + batchsize]


def extract_features(model, batches, allow_random=False):
    """Run ``model`` over batches of images and stack the features.

    Args:
        model (InceptionV3FID): The extractor, on the device of the batches
            (NumPy batches are sent to the model's device).
        batches (iterable): Arrays of shape ``(n, 3, H, W)`` in ``[-1, 1]``,
            e.g. :func:`iter_batches` of an array, or a generator of samples.
        allow_random (bool): Accept a model without pretrained weights (for
            pipeline tests only).

    Returns:
        numpy.ndarray of shape (n_samples, 2048), float64.

    Raises:
        FIDUnavailableError: If the model has no pretrained weights and
            ``allow_random`` is false.

    """
    if not (model.pretrained or allow_random):
        raise FIDUnavailableError(_NO_WEIGHTS_MESSAGE)
    out = []
    with chainer.no_backprop_mode(), chainer.using_config('train', False):
        for batch in batches:
            batch = model.device.send(batch)
            feats = model(batch).array
            out.append(backend.CpuDevice().send(feats).astype(numpy.float64))
    if not out:
        raise ValueError('no images to extract features from')
    return numpy.concatenate(out, axis=0)


def cached_statistics(model, batches, cache_path=None, allow_random=False,
                      **metadata):
    """Feature statistics of a set of images, cached in an npz file.

    If ``cache_path`` exists its statistics are returned without touching
    ``batches``; otherwise they are computed with :func:`extract_features`
    and :func:`compute_statistics`, and written there (with
    ``n_samples`` and ``metadata``).

    Args:
        model (InceptionV3FID): The extractor.
        batches (iterable or callable): Batches of images in ``[-1, 1]``, or
            a function returning them (only called on a cache miss).
        cache_path (str): The npz cache, or ``None`` for no caching.
        allow_random (bool): See :func:`extract_features`.
        **metadata: Stored beside the statistics on a miss.

    Returns:
        tuple: ``(mu, sigma)`` in float64.

    """
    if cache_path is not None and os.path.exists(cache_path):
        mu, sigma, _ = load_statistics(cache_path)
        return mu, sigma
    if callable(batches):
        batches = batches()
    features = extract_features(model, batches, allow_random=allow_random)
    mu, sigma = compute_statistics(features)
    if cache_path is not None:
        save_statistics(cache_path, mu, sigma, n_samples=len(features),
                        **metadata)
    return mu, sigma
