"""The transform computed block by block (issue 19), against references.

On NumPy the forward and backward passes of
:func:`mn_chainer.functions.mixture_normalization` visit the batch in blocks
of about :data:`mn_chainer.functions.batch_blocks.BLOCK_BYTES` bytes, shared
among threads, and the per-component ReLU of Eq. 40 is evaluated through
thresholds on ``sign(gamma) x``.  These tests shrink the blocks to one or a
few samples (with a last, shorter block) and check every output against the
float64 references of :mod:`mn_reference` (written from the equations), with
``chainer.gradient_check``, with Chainer's batch normalization (followed by
ReLU) at ``K = 1``, and with the same transform computed in one block; the
scale ``gamma`` takes negative and zero values, where the thresholds flip or
vanish.
"""
import importlib
import unittest

import numpy
import pytest

import chainer
from chainer import gradient_check
import chainer.functions as F
from chainer import testing

import backends
from backends import skip_gpu_tests_without_gpu  # NOQA: F401 (fixture)
import mn_chainer.functions as MF
from mn_chainer.functions import batch_blocks
import mn_reference


# The module (its name is also the function's, which the package exports).
mn_module = importlib.import_module(
    'mn_chainer.functions.mixture_normalization')


#: Block sizes in samples: one per block, three (the last block shorter),
#: and the whole batch.
SAMPLES_PER_BLOCK = [1, 3, None]


@pytest.fixture
def blocks_of(monkeypatch):
    """Sets the blocks to ``samples`` samples of ``x`` (None: one block)."""
    def set_blocks(x, samples):
        sample_bytes = x[0].size * max(x.dtype.itemsize, 4)
        monkeypatch.setattr(batch_blocks, 'BLOCK_BYTES',
                            1 << 40 if samples is None
                            else samples * sample_bytes)
    return set_blocks


def _inputs(shape, k, seed=0, dtype=numpy.float64, gamma=None):
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


def _forward_backward(x, tau, gamma, beta, gy, relu, **kwargs):
    xv, gv, bv = (chainer.Variable(a.copy()) for a in (x, gamma, beta))
    y = MF.mixture_normalization(xv, tau, gv, bv, relu=relu, **kwargs)
    y.grad = gy.copy()
    y.backward()
    return y.array, xv.grad, gv.grad, bv.grad


def _expected(x, tau, gamma, beta, gy, relu, eps=2e-5):
    return (mn_reference.mixture_normalization(x, tau, gamma, beta, eps,
                                               relu),) + \
        mn_reference.transform_gradients(x, tau, gamma, beta, gy, eps, relu)


def _assert_close(actual, expected, rtol, name):
    """``|actual - expected| <= rtol * max|expected|``."""
    expected = numpy.asarray(expected, dtype=numpy.float64)
    bound = rtol * max(numpy.abs(expected).max(), 1e-30)
    error = numpy.abs(numpy.asarray(actual, numpy.float64) - expected).max()
    assert error <= bound, '{}: max error {:.3g} > {:.3g}'.format(
        name, error, bound)


NAMES = ('y', 'gx', 'ggamma', 'gbeta')

# A scale of every sign; channel 2 (gamma = 0, beta > 0) is always on,
# channel 4 (gamma = 0, beta < 0) always off.
SIGNED_GAMMA = numpy.array([1.3, -0.7, 0.0, 0.4, 0.0, -1.1])
SIGNED_BETA = numpy.array([0.2, -0.3, 0.5, 0.0, -0.4, 0.3])


@pytest.mark.parametrize('samples', SAMPLES_PER_BLOCK)
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', [(7, 3, 4, 4), (11, 5), (5, 4, 3),
                                   (4, 2, 2, 3, 2)])
def test_blocks_match_float64_equations(blocks_of, shape, relu, samples):
    x, tau, gamma, beta, gy = _inputs(shape, 3)
    blocks_of(x, samples)
    for name, a, b in zip(NAMES, _forward_backward(x, tau, gamma, beta, gy,
                                                   relu),
                          _expected(x, tau, gamma, beta, gy, relu)):
        _assert_close(a, b, 1e-10, name)


@pytest.mark.parametrize('samples', [1, 3])
@pytest.mark.parametrize('relu', [False, True])
def test_blocks_equal_one_block(blocks_of, relu, samples):
    x, tau, gamma, beta, gy = _inputs((10, 4, 3, 3), 4, seed=1)
    blocks_of(x, None)
    whole = _forward_backward(x, tau, gamma, beta, gy, relu)
    blocks_of(x, samples)
    for name, a, b in zip(NAMES, _forward_backward(x, tau, gamma, beta, gy,
                                                   relu), whole):
        _assert_close(a, b, 1e-13, name)


@pytest.mark.parametrize('samples', [1, None])
@pytest.mark.parametrize('shape', [(6, 6, 3, 3), (9, 6)])
def test_relu_with_negative_and_zero_gamma(blocks_of, shape, samples):
    x, tau, _, _, gy = _inputs(shape, 3, seed=2)
    gamma, beta = SIGNED_GAMMA, SIGNED_BETA
    blocks_of(x, samples)
    y, gx, ggamma, gbeta = _forward_backward(x, tau, gamma, beta, gy, True)
    for name, a, b in zip(NAMES, (y, gx, ggamma, gbeta),
                          _expected(x, tau, gamma, beta, gy, True)):
        _assert_close(a, b, 1e-10, name)
    # gamma = 0: the output is relu(beta) times sum_k a_ik.
    assert (y[:, 4] == 0).all()
    assert (y[:, 2] > 0).all()
    assert (y >= 0).all()

    def f(x, gamma, beta):
        return MF.mixture_normalization(x, tau, gamma, beta, relu=True)

    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6,
                                  atol=1e-6, rtol=1e-5, dtype=numpy.float64)


@testing.parameterize(*testing.product({'shape': [(6, 6, 3, 3), (9, 6)]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestSignedGammaOnEveryBackend(unittest.TestCase):

    """The thresholds of Eq. 40 with negative and zero ``gamma`` on NumPy
    and CuPy (where the batch is one block)."""

    def test_forward_and_backward(self, backend_config):
        x, tau, _, _, gy = _inputs(self.shape, 3, seed=2)
        gamma, beta = SIGNED_GAMMA, SIGNED_BETA
        xv, gv, bv = (chainer.Variable(backend_config.get_array(a))
                      for a in (x, gamma, beta))
        y = MF.mixture_normalization(xv, backend_config.get_array(tau), gv,
                                     bv, relu=True)
        y.grad = backend_config.get_array(gy)
        y.backward()
        for name, a, b in zip(NAMES, (y, xv.grad, gv.grad, bv.grad),
                              _expected(x, tau, gamma, beta, gy, True)):
            _assert_close(backends.to_cpu(a), b, 1e-10, name)


@pytest.mark.parametrize('samples', [1, 2, None])
@pytest.mark.parametrize('relu', [False, True])
def test_k1_is_batch_normalization(blocks_of, relu, samples):
    x, _, _, _, gy = _inputs((5, 6, 3, 3), 1, seed=3,
                             dtype=numpy.float32)
    gamma = SIGNED_GAMMA.astype(numpy.float32)
    beta = SIGNED_BETA.astype(numpy.float32)
    tau = numpy.ones((5, 1, 3, 3), dtype=numpy.float32)
    blocks_of(x, samples)
    ours = _forward_backward(x, tau, gamma, beta, gy, relu)
    xv, gv, bv = (chainer.Variable(a.copy()) for a in (x, gamma, beta))
    y = F.batch_normalization(xv, gv, bv, eps=2e-5)
    if relu:
        y = F.relu(y)
    y.grad = gy.copy()
    y.backward()
    for name, a, b in zip(NAMES, ours, (y.array, xv.grad, gv.grad,
                                        bv.grad)):
        numpy.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4,
                                      err_msg=name)


@pytest.mark.parametrize('samples', [1, 3])
@pytest.mark.parametrize('relu', [False, True])
def test_float32_far_from_zero_in_blocks(blocks_of, relu, samples):
    """The shifted sums (issue 14) hold block by block: activations 1e4
    standard deviations from zero, float32 against float64."""
    rs = numpy.random.RandomState(4)
    x, tau, gamma, beta, gy = _inputs((8, 3, 4, 4), 3, seed=4)
    x = (x + 1e4 * numpy.array([1., -1., 1.])[None, :, None, None]) * \
        numpy.array([1., 0.01, 100.])[None, :, None, None]
    gamma = rs.uniform(-1.5, 1.5, 3)
    x32, tau32, gamma32, beta32, gy32 = (
        a.astype(numpy.float32) for a in (x, tau, gamma, beta, gy))
    blocks_of(x32, samples)
    ours = _forward_backward(x32, tau32, gamma32, beta32, gy32, relu)
    assert all(a.dtype == numpy.float32 for a in ours)
    expected = _expected(*(a.astype(numpy.float64) for a in (
        x32, tau32, gamma32, beta32, gy32)), relu=relu)
    for name, a, b in zip(NAMES, ours, expected):
        _assert_close(a, b, 2e-6, name)


@pytest.mark.parametrize('samples', [1, 3])
def test_rectified_activations_and_dead_channel(blocks_of, samples):
    """Exact zeros (70% of every channel, and a dead channel) with Eq. 40,
    float32 in blocks against float64; the output is never negative and
    exactly zero where every component's ReLU is off."""
    rs = numpy.random.RandomState(5)
    x, tau, gamma, beta, gy = _inputs((9, 4, 3, 3), 3, seed=5)
    x = 10 * numpy.maximum(x - numpy.quantile(x, 0.7), 0)
    x[:, 1] = 0
    beta = numpy.array([-0.2, 0.3, 0.1, -0.3])
    gamma = rs.uniform(0.5, 1.5, 4)
    x, tau, gamma, beta, gy = (a.astype(numpy.float32)
                               for a in (x, tau, gamma, beta, gy))
    blocks_of(x, samples)
    ours = _forward_backward(x, tau, gamma, beta, gy, True)
    expected = _expected(*(a.astype(numpy.float64)
                           for a in (x, tau, gamma, beta, gy)), relu=True)
    for name, a, b in zip(NAMES, ours, expected):
        _assert_close(a, b, 2e-6, name)
    y = ours[0]
    assert (y >= 0).all()
    numpy.testing.assert_array_equal(y[expected[0] == 0], 0)


@pytest.mark.parametrize('relu', [False, True])
def test_float16_in_blocks(blocks_of, relu):
    x, tau, gamma, beta, gy = _inputs((6, 3, 4, 4), 2, seed=6,
                                      dtype=numpy.float32)
    blocks_of(x.astype(numpy.float16), 2)
    y16 = MF.mixture_normalization(x.astype(numpy.float16),
                                   tau.astype(numpy.float16), gamma, beta,
                                   relu=relu)
    y32 = MF.mixture_normalization(x, tau, gamma, beta, relu=relu)
    assert y16.dtype == numpy.float16
    numpy.testing.assert_allclose(y16.array.astype(numpy.float32), y32.array,
                                  rtol=2e-2, atol=2e-2)


def test_statistics_do_not_depend_on_the_blocks(blocks_of):
    x, tau, gamma, beta, _ = _inputs((10, 5, 2, 2), 3, seed=7)
    stats = []
    for samples in (1, 4, None):
        blocks_of(x, samples)
        node = MF.MixtureNormalization()
        node.apply((x, tau, gamma, beta))
        stats.append((node.pi, node.mean, node.var))
    pi, mean, var = mn_reference.component_stats(x, tau)
    for got in stats:
        numpy.testing.assert_allclose(got[0], pi, rtol=1e-12)
        numpy.testing.assert_allclose(got[1], mean, rtol=1e-11, atol=1e-13)
        numpy.testing.assert_allclose(got[2], var, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('threads', [2, 3])
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_threads_give_the_same_bits(blocks_of, monkeypatch, threads, relu,
                                    dtype):
    """Shares of the blocks on several threads: the block sums are added in
    block order, so the result is bitwise that of one thread."""
    x, tau, gamma, beta, gy = _inputs((11, 4, 3, 3), 3, seed=8, dtype=dtype)
    gamma = SIGNED_GAMMA[:4].astype(dtype)
    blocks_of(x, 2)
    monkeypatch.setattr(batch_blocks, 'MIN_ELEMENTS_PER_THREAD', 1)
    monkeypatch.setattr(batch_blocks, 'THREADS', 1)
    one = _forward_backward(x, tau, gamma, beta, gy, relu)
    monkeypatch.setattr(batch_blocks, 'THREADS', threads)
    blocks = batch_blocks.Blocks(numpy, (11, 4, 9), numpy.dtype(dtype))
    assert len(blocks.shares) == threads
    several = _forward_backward(x, tau, gamma, beta, gy, relu)
    for name, a, b in zip(NAMES, several, one):
        numpy.testing.assert_array_equal(a, b, err_msg=name)
    for name, a, b in zip(NAMES, several,
                          _expected(x, tau, gamma, beta, gy, relu)):
        _assert_close(a, b, 1e-10 if dtype == numpy.float64 else 2e-6,
                      name)


def test_blas_on_one_thread_while_the_loops_run(monkeypatch):
    """The small products of the loops run with BLAS on one thread; the
    setting is restored afterwards, also when a loop raises."""
    threadpoolctl = pytest.importorskip('threadpoolctl')

    def blas_threads():
        return [info['num_threads'] for info in
                threadpoolctl.threadpool_info()
                if info['user_api'] == 'blas']

    before = blas_threads()
    if not before:
        pytest.skip('no BLAS library found by threadpoolctl')
    seen = []
    expand = mn_module._expand

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return expand(*args, **kwargs)

    monkeypatch.setattr(mn_module, '_expand', spy)
    x, tau, gamma, beta, gy = _inputs((4, 3, 2, 2), 2, seed=9)
    _forward_backward(x, tau, gamma, beta, gy, False)
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before

    def fail(*args, **kwargs):
        raise RuntimeError('in a loop')

    monkeypatch.setattr(mn_module, '_expand', fail)
    with pytest.raises(RuntimeError, match='in a loop'):
        _forward_backward(x, tau, gamma, beta, gy, False)
    assert blas_threads() == before


@pytest.mark.parametrize('n,block_bytes,threads', [
    (1, 1, 4), (10, 3 * 96, 1), (10, 3 * 96, 2), (10, 96, 3), (10, 1 << 40, 2),
    (7, 2 * 96, 8)])
def test_blocks_cover_the_batch_in_order(monkeypatch, n, block_bytes,
                                         threads):
    monkeypatch.setattr(batch_blocks, 'BLOCK_BYTES', block_bytes)
    monkeypatch.setattr(batch_blocks, 'THREADS', threads)
    monkeypatch.setattr(batch_blocks, 'MIN_ELEMENTS_PER_THREAD', 1)
    # A sample of (4, 6) float32 values is 96 bytes.
    blocks = batch_blocks.Blocks(numpy, (n, 4, 6), numpy.dtype('f4'))
    assert blocks.step == max(1, min(n, block_bytes // 96))
    flat = [b for share in blocks.shares for b in share]
    assert [(b.start, b.stop) for b in flat] == [
        (s, min(s + blocks.step, n)) for s in range(0, n, blocks.step)]
    assert len(blocks.shares) == min(threads, len(flat))
    assert all(blocks.shares)
    assert blocks.scratch().shape == (blocks.step, 4, 6)
    seen = blocks.map(lambda share: ((b.start, b.stop) for b in share))
    assert seen == [(b.start, b.stop) for b in flat]
