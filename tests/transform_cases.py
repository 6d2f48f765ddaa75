"""Inputs, references and path switches for the tests of the transform's
passes (``test_transform_blocks.py``, ``test_transform_kernels.py``).

The references are :mod:`mn_reference` (float64, written from the
equations); :func:`use_path` chooses the CPU passes the function runs
(:mod:`mn_chainer.functions.transform_passes`): the array passes, or the C
kernels (skipped where the extension is not built, failed instead with
``MN_CHAINER_REQUIRE_CPU_KERNELS=1``).
"""
import os

import numpy
import pytest

import chainer

from mn_chainer import cpu_kernels
import mn_chainer.functions as MF
from mn_chainer.functions import transform_passes
import mn_reference


NAMES = ('y', 'gx', 'ggamma', 'gbeta')

# A scale of every sign; channel 2 (gamma = 0, beta > 0) is always on,
# channel 4 (gamma = 0, beta < 0) always off.
SIGNED_GAMMA = numpy.array([1.3, -0.7, 0.0, 0.4, 0.0, -1.1])
SIGNED_BETA = numpy.array([0.2, -0.3, 0.5, 0.0, -0.4, 0.3])


def require_c_kernels(monkeypatch):
    """Skip unless the C extension is built (fail with
    ``MN_CHAINER_REQUIRE_CPU_KERNELS=1``), and enable it."""
    if cpu_kernels._library() is None:
        if os.environ.get('MN_CHAINER_REQUIRE_CPU_KERNELS') == '1':
            pytest.fail('the C extension mn_chainer._cpu_kernels is not '
                        'built (pip install -e . needs a C compiler)')
        pytest.skip('the C extension mn_chainer._cpu_kernels is not built')
    monkeypatch.delenv('MN_CHAINER_CPU_KERNELS', raising=False)


def use_path(monkeypatch, path):
    """Run the transform's passes on ``path``: ``'array'`` or ``'c'``."""
    if path == 'c':
        require_c_kernels(monkeypatch)
    monkeypatch.setattr(transform_passes, 'USE_KERNELS', path == 'c')
    expected = (transform_passes.CKernelPasses if path == 'c'
                else transform_passes.ArrayPasses)
    assert transform_passes.select_passes(numpy) is expected


def split_chunks(monkeypatch):
    """Cut every pass of the C kernels into up to seven uneven chunks of
    lines, taken by three threads."""
    monkeypatch.setattr(cpu_kernels, 'n_threads', lambda: 3)
    monkeypatch.setattr(cpu_kernels, 'CHUNK_WORK', 1)
    monkeypatch.setattr(cpu_kernels, 'MAX_CHUNKS', 7)


def inputs(shape, k, seed=0, dtype=numpy.float64, gamma=None):
    """``x`` with ``k`` modes, soft responsibilities, ``gamma``, ``beta``
    and the output's gradient ``gy``."""
    rs = numpy.random.RandomState(seed)
    n, c = shape[:2]
    modes = rs.randint(0, k, size=(n, 1) + shape[2:])
    x = rs.randn(*shape) + 2.0 * modes
    tau = rs.rand(n, k, *shape[2:]) ** 3 + 1e-3
    tau /= tau.sum(axis=1, keepdims=True)
    if gamma is None:
        gamma = rs.uniform(0.5, 1.5, c)
    beta = rs.uniform(-0.5, 0.5, c)
    gy = rs.randn(*shape)
    return tuple(numpy.asarray(a, dtype=dtype)
                 for a in (x, tau, gamma, beta, gy))


def forward_backward(x, tau, gamma, beta, gy, relu, **kwargs):
    """``y`` and the gradients of ``x``, ``gamma`` and ``beta``."""
    xv, gv, bv = (chainer.Variable(a.copy()) for a in (x, gamma, beta))
    y = MF.mixture_normalization(xv, tau, gv, bv, relu=relu, **kwargs)
    y.grad = gy.copy()
    y.backward()
    return y.array, xv.grad, gv.grad, bv.grad


def expected(x, tau, gamma, beta, gy, relu, eps=2e-5):
    """What :func:`forward_backward` gives, in float64 from the equations."""
    return (mn_reference.mixture_normalization(x, tau, gamma, beta, eps,
                                               relu),) + \
        mn_reference.transform_gradients(x, tau, gamma, beta, gy, eps, relu)


def assert_close(actual, expected, rtol, name):
    """``|actual - expected| <= rtol * max|expected|``."""
    expected = numpy.asarray(expected, dtype=numpy.float64)
    bound = rtol * max(numpy.abs(expected).max(initial=0), 1e-30)
    error = numpy.abs(numpy.asarray(actual, numpy.float64) - expected).max(
        initial=0)
    assert error <= bound, '{}: max error {:.3g} > {:.3g}'.format(
        name, error, bound)


def assert_all_close(actual, expected, rtol):
    """:func:`assert_close` of each of ``y, gx, ggamma, gbeta``."""
    for name, a, b in zip(NAMES, actual, expected):
        assert_close(a, b, rtol, name)
