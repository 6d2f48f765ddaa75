"""Fused CPU kernels of the Mixture Normalizing Transform (NumPy).

The loops of :func:`mn_chainer.functions.mixture_normalization` over the
batch, written in C (``mn_chainer/_transform_kernels_impl.h``) so that each
pass reads the activations once and loops over the ``K`` components while
a segment of them is in the L1 cache, on several cores.
:class:`mn_chainer.functions.transform_passes.CKernelPasses` runs them; the
NumPy twins, the references the tests compare against, are the methods of
:class:`~mn_chainer.functions.transform_passes.ArrayPasses`:

=====================  ==================================================
kernel                 its NumPy twin, computes (``c`` the shift)
=====================  ==================================================
:func:`mix_sums`       ``moment_sums`` and ``gradient_sums``:
                       ``sum w m v`` and ``sum w m v (x - c)``
:func:`mix_forward`    ``output``:
                       ``sum_k a_k f(scale_k (x - c) + offset_k)``
:func:`mix_grad_x`     ``input_gradient``:
                       ``sum_k a_k (m_k u_k g + w1_k + w2_k (x - c))``
=====================  ==================================================

with ``f`` the identity or the ReLU of Eq. 40 and ``m`` its mask (the
comparison ``sign (x - c) > threshold``, or 1).  Arrays: activations ``x``,
values ``v``, ``g`` of shape ``(N, C, P)``, per-point coefficients ``w``,
``a`` of shape ``(N, K, P)``, per-component values ``(K, C)``.  Sums are
accumulated in double and returned in float64; the chunks of a pass (lines
of ``P`` points of one channel, or for ``P = 1`` whole points) are cut by
:func:`mn_chainer.cpu_kernels.chunk_bounds` and their sums added in chunk
order, so the results do not depend on the threads
(:func:`mn_chainer.cpu_kernels.n_threads`).

The kernels live in the extension of :mod:`mn_chainer.cpu_kernels` (its
loader, threads and :func:`~mn_chainer.cpu_kernels.available`).  Every
function checks its arguments and converts them to C-contiguous arrays of
the activations' dtype (float32 or float64, native byte order) before
calling C.  This module imports neither Chainer nor CuPy.
"""
import numpy

from mn_chainer import cpu_kernels


_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


class PassShapes(object):

    """The shapes of the arrays of a pass, from the activations ``x`` ``(N,
    C, P)`` and the per-point coefficients ``(N, K, P)``, checked (shared
    with the CUDA twins of :mod:`mn_chainer.kernels`).

    Args:
        x: The activations, an ``array_type`` of float32 or float64.
        coefficients: Anything with the coefficients' ``shape``.
        array_type: ``numpy.ndarray`` or ``cupy.ndarray``.

    Attributes:
        n, channels, size, k: ``N``, ``C``, ``P`` and ``K``.
        of: The shapes by kind: ``'x'`` (that of ``x``), ``'point'`` ``(N,
            K, P)``, ``'channel'`` ``(C,)``, ``'component'`` ``(K, C)``.
    """

    def __init__(self, x, coefficients, array_type):
        if not isinstance(x, array_type):
            raise TypeError('x must be a {}.{}, got {}'.format(
                array_type.__module__.split('.')[0], array_type.__name__,
                type(x)))
        if x.ndim != 3:
            raise ValueError('x must have shape (N, C, P), got {}'.format(
                x.shape))
        if x.dtype not in _DTYPES:
            raise TypeError('x must be float32 or float64, got {}'.format(
                x.dtype))
        shape = getattr(coefficients, 'shape', ())
        if len(shape) != 3:
            raise ValueError('the coefficients must have shape (N, K, P), '
                             'got {}'.format(shape))
        self.n, self.channels, self.size = x.shape
        self.k = shape[1]
        self.of = {'x': x.shape, 'point': (self.n, self.k, self.size),
                   'channel': (self.channels,),
                   'component': (self.k, self.channels)}


class _Batch(PassShapes):

    """The checked activations of a pass, its lines and their chunks."""

    def __init__(self, x, coefficients):
        super(_Batch, self).__init__(x, coefficients, numpy.ndarray)
        self.x = numpy.ascontiguousarray(x)
        self.dtype = x.dtype
        if self.size == 1:  # a line is a point
            lines, length = self.n, self.channels
        else:  # a line is a channel of a sample
            lines, length = self.n * self.channels, self.size
        self.bounds = cpu_kernels.chunk_bounds(lines, length, max(self.k, 1))

    def array(self, name, a, shape):
        """``a`` as a C-contiguous array of the activations' dtype, checked
        for the shape of kind ``shape`` (:attr:`of`)."""
        a = numpy.ascontiguousarray(a, dtype=self.dtype)
        if a.shape != self.of[shape]:
            raise ValueError('{} must have shape {}, got {}'.format(
                name, self.of[shape], a.shape))
        return a

    def mask(self, mask):
        """A mask's ``(sign, thresholds)``, checked (None: no mask, NULL)."""
        if mask is None:
            return None, None
        return (self.array('sign', mask[0], 'channel'),
                self.array('thresholds', mask[1], 'component'))

    def run(self, name, *arguments):
        """Run kernel ``name`` on the chunks of lines: ``arguments`` are
        the kernel's before ``C, P, K`` and the chunks (arrays are passed by
        address, None as NULL)."""
        cpu_kernels.function(name, self.dtype)(
            *[cpu_kernels.address(a) if isinstance(a, numpy.ndarray) else a
              for a in arguments], self.channels, self.size, self.k,
            *cpu_kernels.chunk_arguments(self.bounds))


def mix_sums(x, w, shift, values=None, mask=None):
    """The responsibility-weighted sums of one pass over the batch.

    ``sums[0, k, c] = sum_{n,p} w_nkp m_nkcp v_ncp`` and ``sums[1, k, c] =
    sum_{n,p} w_nkp m_nkcp v_ncp (x_ncp - shift_c)`` with ``v = x - shift``
    (``values`` None: the statistics' sums of ``x - c`` and ``(x - c)^2``)
    or ``v = values`` (the gradient's sums of ``g`` and ``g (x - c)``), and
    ``m`` the mask (1 for None).

    Args:
        x: Activations ``(N, C, P)``, float32 or float64.
        w: Coefficients ``(N, K, P)``.
        shift: ``(C,)``.
        values: None, or ``(N, C, P)``.
        mask: None, or ``(sign, thresholds)``, ``(C,)`` and ``(K, C)``:
            ``m = [sign_c (x - shift_c) > thresholds_kc]``.

    Returns:
        numpy.ndarray: ``(2, K, C)``, float64.
    """
    batch = _Batch(x, w)
    sums = cpu_kernels.PartBuffers(len(batch.bounds) - 1,
                                   (2, batch.k, batch.channels),
                                   numpy.float64)
    batch.run('mn_mix_sums', batch.x,
              None if values is None else batch.array('values', values, 'x'),
              batch.array('w', w, 'point'),
              batch.array('shift', shift, 'channel'), *batch.mask(mask),
              sums.addr, sums.step)
    return sums.sum()


def mix_forward(x, a, shift, scale, offset, relu):
    """The output of the transform (Eqs. 34 + 37; Eq. 40 with ``relu``):
    ``y_ncp = sum_k a_nkp f(scale_kc (x_ncp - shift_c) + offset_kc)``, ``f``
    the identity or ``max(., 0)``.

    Args:
        x: Activations ``(N, C, P)``, float32 or float64.
        a: Coefficients ``(N, K, P)``.
        shift: ``(C,)``.
        scale, offset: ``(K, C)``.
        relu (bool): The per-component ReLU.

    Returns:
        numpy.ndarray: ``y`` ``(N, C, P)`` in the dtype of ``x``.
    """
    batch = _Batch(x, a)
    y = numpy.empty(batch.x.shape, dtype=batch.dtype)
    batch.run('mn_mix_forward', batch.x, batch.array('a', a, 'point'),
              batch.array('shift', shift, 'channel'),
              batch.array('scale', scale, 'component'),
              batch.array('offset', offset, 'component'), int(bool(relu)), y)
    return y


def mix_grad_x(x, a, g, shift, u, w1, w2, mask=None):
    """The gradient of the transform's input, its terms expanded in ``x``
    (DESIGN §1.3): ``gx_ncp = sum_k a_nkp (m_nkcp u_kc g_ncp + w1_kc +
    w2_kc (x_ncp - shift_c))``.

    Args:
        x: Activations ``(N, C, P)``, float32 or float64.
        a: Coefficients ``(N, K, P)``.
        g: The output's gradient ``(N, C, P)``.
        shift: ``(C,)``.
        u, w1, w2: ``(K, C)``.
        mask: As in :func:`mix_sums`.

    Returns:
        numpy.ndarray: ``gx`` ``(N, C, P)`` in the dtype of ``x``.
    """
    batch = _Batch(x, a)
    gx = numpy.empty(batch.x.shape, dtype=batch.dtype)
    batch.run('mn_mix_grad_x', batch.x, batch.array('a', a, 'point'),
              batch.array('g', g, 'x'),
              batch.array('shift', shift, 'channel'), *batch.mask(mask),
              batch.array('u', u, 'component'),
              batch.array('w1', w1, 'component'),
              batch.array('w2', w2, 'component'), gx)
    return gx
