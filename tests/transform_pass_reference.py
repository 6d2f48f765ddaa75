"""Float64 references of the transform's fused passes, written from their
definitions, and their test inputs (NumPy only: ``tests/test_kernels.py``
uses them without Chainer).

The passes (``mix_sums``, ``mix_forward``, ``mix_grad_x`` of
:mod:`mn_chainer.transform_kernels` and :mod:`mn_chainer.kernels`), for
activations ``x`` ``(N, C, P)``, ``xc = x - shift``, coefficients ``w``
``(N, K, P)`` and the mask ``m_kc = [sign_c xc > thresholds_kc]`` (1
without one)::

    sums[0, k, c] = sum_{n,p} w_nkp m_nkcp v_ncp
    sums[1, k, c] = sum_{n,p} w_nkp m_nkcp v_ncp xc_ncp
    y_ncp  = sum_k w_nkp f(scale_kc xc_ncp + offset_kc)
    gx_ncp = sum_k w_nkp (m_nkcp u_kc g_ncp + w1_kc + w2_kc xc_ncp)

with ``v = xc`` or given values, ``f`` the identity or the ReLU.
"""
import collections

import numpy


#: (N, C, P): one point (P = 1, C = 1), points of one channel (C = 1),
#: lines shorter than a vector, a segment and more than one (P = 130: two
#: segments of 64 and one of 2), several samples per warp (P = 9).
SHAPES = [(1, 1, 1), (5, 3, 1), (3, 1, 70), (4, 6, 9), (2, 3, 130),
          (3, 5, 64)]

Case = collections.namedtuple(
    'Case', ('x', 'w', 'shift', 'values', 'sign', 'thresholds', 'scale',
             'offset', 'u', 'w1', 'w2'))


def _f64(*arrays):
    return [None if a is None else numpy.asarray(a, numpy.float64)
            for a in arrays]


def _centred(x, shift):
    x, shift = _f64(x, shift)
    return x - shift[None, :, None]


def _mask(xc, k, sign, thresholds):
    """``m`` ``(N, K, C, P)`` (ones without a mask)."""
    n, c, p = xc.shape
    if sign is None:
        return numpy.ones((n, k, c, p))
    sign, thresholds = _f64(sign, thresholds)
    return (sign[None, None, :, None] * xc[:, None]
            > thresholds[None, :, :, None]).astype(numpy.float64)


def mix_sums(x, w, shift, values=None, sign=None, thresholds=None):
    """``(2, K, C)``."""
    xc = _centred(x, shift)
    w, values = _f64(w, values)
    v = xc if values is None else values
    wm = w[:, :, None, :] * _mask(xc, w.shape[1], sign, thresholds)
    return numpy.stack(((wm * v[:, None]).sum(axis=(0, 3)),
                        (wm * (v * xc)[:, None]).sum(axis=(0, 3))))


def mix_forward(x, a, shift, scale, offset, relu):
    """``(N, C, P)``."""
    xc = _centred(x, shift)
    a, scale, offset = _f64(a, scale, offset)
    z = scale[None, :, :, None] * xc[:, None] + offset[None, :, :, None]
    if relu:
        z = numpy.maximum(z, 0)
    return (a[:, :, None, :] * z).sum(axis=1)


def mix_grad_x(x, a, g, shift, u, w1, w2, sign=None, thresholds=None):
    """``(N, C, P)``."""
    xc = _centred(x, shift)
    a, g, u, w1, w2 = _f64(a, g, u, w1, w2)
    um = u[None, :, :, None] * _mask(xc, a.shape[1], sign, thresholds)
    terms = um * g[:, None] + w1[None, :, :, None] + \
        w2[None, :, :, None] * xc[:, None]
    return (a[:, :, None, :] * terms).sum(axis=1)


def case(shape, k, dtype, seed=0, offset=0.0):
    """Random inputs of every pass in ``dtype``: ``x`` about ``offset``
    with 30% exact zeros and channel 0 dead (all zero), the shift zero in
    channel 0 and near the data elsewhere, signs of every kind (+1, -1 and
    0) and thresholds among the centred values, so that the masks cut the
    points, some of them 0 where ``sign (x - shift)`` is 0 (ties: off)."""
    rs = numpy.random.RandomState(seed)
    n, c, p = shape
    x = offset + rs.randn(n, c, p) * rs.uniform(0.5, 2, size=(1, c, 1))
    x[rs.rand(n, c, p) < 0.3] = 0
    x[:, 0] = 0
    shift = offset + 0.1 * rs.randn(c)
    shift[0] = 0
    w = rs.rand(n, k, p) ** 2
    sign = rs.choice([1.0, -1.0, 0.0], size=c)
    thresholds = rs.randn(k, c) * 0.7
    # Exact ties (the mask is off): the dead channel, and sign 0, at 0.
    thresholds[::2, 0] = 0
    thresholds[1::2, sign == 0] = 0
    per_component = [rs.randn(k, c) for _ in range(5)]
    arrays = [x, w, shift, rs.randn(n, c, p), sign, thresholds] + \
        per_component
    return Case(*(a.astype(dtype) for a in arrays))


def absolute(case):
    """``case`` with every value replaced by its magnitude, the shift
    applied (zero): the passes of it bound the magnitude of the terms
    that each result of ``case`` sums."""
    xc = numpy.abs(_centred(case.x, case.shift)).astype(case.x.dtype)
    return case._replace(
        x=xc, shift=numpy.zeros_like(case.shift),
        **{name: numpy.abs(getattr(case, name)) for name in (
            'w', 'values', 'scale', 'offset', 'u', 'w1', 'w2')})


def assert_pass_close(actual, expected, magnitude, dtype, name):
    """``|actual - expected| <= 64 eps(dtype) magnitude`` element by
    element (``magnitude``: the pass of :func:`absolute`)."""
    bound = 64 * numpy.finfo(dtype).eps * numpy.asarray(magnitude) \
        + numpy.finfo(numpy.float64).tiny
    error = numpy.abs(numpy.asarray(actual, numpy.float64) - expected)
    worst = numpy.unravel_index(numpy.argmax(error - bound), error.shape)
    assert (error <= bound).all(), '{}: error {:.3g} > {:.3g} at {}'.format(
        name, error[worst], bound[worst], worst)
