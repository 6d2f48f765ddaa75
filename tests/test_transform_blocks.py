"""The transform's CPU passes against references (issue 19).

On NumPy the forward and backward passes of
:func:`mn_chainer.functions.mixture_normalization` run as the C kernels of
:mod:`mn_chainer.transform_kernels` where the extension is built, else as
array operations over blocks of about
:data:`mn_chainer.functions.batch_blocks.BLOCK_BYTES` bytes shared among
threads (:mod:`mn_chainer.functions.transform_passes`).  The function-level
tests here run on both paths (the *splits*): the array passes with blocks
of one or a few samples (a last, shorter block) or the whole batch, and the
C kernels in one chunk or cut into uneven chunks of lines on three threads.
They check every output against the float64 references of
:mod:`mn_reference` (written from the equations), with
``chainer.gradient_check``, with Chainer's batch normalization (followed by
ReLU) at ``K = 1``; the scale ``gamma`` takes negative and zero values,
where the thresholds of Eq. 40's masks flip or vanish.  The rest checks the
blocks themselves (``tests/test_transform_kernels.py`` the kernels).
"""
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
from mn_chainer.functions import transform_passes
import mn_reference
from transform_cases import assert_all_close
from transform_cases import expected as _expected
from transform_cases import forward_backward as _forward_backward
from transform_cases import inputs as _inputs
from transform_cases import NAMES
from transform_cases import SIGNED_BETA
from transform_cases import SIGNED_GAMMA
import transform_cases


#: The CPU paths and how they cut the batch (see :func:`split`).
SPLITS = ['array, 1 sample per block', 'array, 3 samples per block',
          'array, one block', 'c, one chunk', 'c, chunks on three threads']


def _set_blocks(monkeypatch, x, samples):
    sample_bytes = x[0].size * max(x.dtype.itemsize, 4)
    monkeypatch.setattr(batch_blocks, 'BLOCK_BYTES',
                        1 << 40 if samples is None
                        else samples * sample_bytes)


@pytest.fixture
def blocks_of(monkeypatch):
    """The array passes, their blocks ``samples`` samples of ``x`` (None:
    one block)."""
    transform_cases.use_path(monkeypatch, 'array')
    return lambda x, samples: _set_blocks(monkeypatch, x, samples)


@pytest.fixture(params=SPLITS)
def split(request, monkeypatch):
    """``split(x)`` runs the transform on one of :data:`SPLITS` for ``x``.
    """
    path, how = request.param.split(', ')
    transform_cases.use_path(monkeypatch, path)
    if how == 'chunks on three threads':
        transform_cases.split_chunks(monkeypatch)

    def apply(x):
        if path == 'array':
            _set_blocks(monkeypatch, x, None if how == 'one block'
                        else int(how.split()[0]))
    return apply


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', [(7, 3, 4, 4), (11, 5), (5, 4, 3),
                                   (4, 2, 2, 3, 2)])
def test_matches_float64_equations(split, shape, relu):
    x, tau, gamma, beta, gy = _inputs(shape, 3)
    split(x)
    assert_all_close(_forward_backward(x, tau, gamma, beta, gy, relu),
                     _expected(x, tau, gamma, beta, gy, relu), 1e-10)


@pytest.mark.parametrize('samples', [1, 3])
@pytest.mark.parametrize('relu', [False, True])
def test_blocks_equal_one_block(blocks_of, relu, samples):
    x, tau, gamma, beta, gy = _inputs((10, 4, 3, 3), 4, seed=1)
    blocks_of(x, None)
    whole = _forward_backward(x, tau, gamma, beta, gy, relu)
    blocks_of(x, samples)
    assert_all_close(_forward_backward(x, tau, gamma, beta, gy, relu),
                     whole, 1e-13)


@pytest.mark.parametrize('shape', [(6, 6, 3, 3), (9, 6)])
def test_relu_with_negative_and_zero_gamma(split, shape):
    x, tau, _, _, gy = _inputs(shape, 3, seed=2)
    gamma, beta = SIGNED_GAMMA, SIGNED_BETA
    split(x)
    ours = _forward_backward(x, tau, gamma, beta, gy, True)
    assert_all_close(ours, _expected(x, tau, gamma, beta, gy, True), 1e-10)
    y = ours[0]
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
    and CuPy, on each one's default passes (C or CUDA kernels where they
    apply)."""

    def test_forward_and_backward(self, backend_config):
        x, tau, _, _, gy = _inputs(self.shape, 3, seed=2)
        gamma, beta = SIGNED_GAMMA, SIGNED_BETA
        xv, gv, bv = (chainer.Variable(backend_config.get_array(a))
                      for a in (x, gamma, beta))
        y = MF.mixture_normalization(xv, backend_config.get_array(tau), gv,
                                     bv, relu=True)
        y.grad = backend_config.get_array(gy)
        y.backward()
        assert_all_close(
            [backends.to_cpu(a) for a in (y.array, xv.grad, gv.grad,
                                          bv.grad)],
            _expected(x, tau, gamma, beta, gy, True), 1e-10)


@pytest.mark.parametrize('relu', [False, True])
def test_k1_is_batch_normalization(split, relu):
    x, _, _, _, gy = _inputs((5, 6, 3, 3), 1, seed=3,
                             dtype=numpy.float32)
    gamma = SIGNED_GAMMA.astype(numpy.float32)
    beta = SIGNED_BETA.astype(numpy.float32)
    tau = numpy.ones((5, 1, 3, 3), dtype=numpy.float32)
    split(x)
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


@pytest.mark.parametrize('relu', [False, True])
def test_float32_far_from_zero(split, relu):
    """The shifted sums (issue 14) hold on every split: activations 1e4
    standard deviations from zero, float32 against float64."""
    rs = numpy.random.RandomState(4)
    x, tau, gamma, beta, gy = _inputs((8, 3, 4, 4), 3, seed=4)
    x = (x + 1e4 * numpy.array([1., -1., 1.])[None, :, None, None]) * \
        numpy.array([1., 0.01, 100.])[None, :, None, None]
    gamma = rs.uniform(-1.5, 1.5, 3)
    x32, tau32, gamma32, beta32, gy32 = (
        a.astype(numpy.float32) for a in (x, tau, gamma, beta, gy))
    split(x32)
    ours = _forward_backward(x32, tau32, gamma32, beta32, gy32, relu)
    assert all(a.dtype == numpy.float32 for a in ours)
    assert_all_close(ours, _expected(*(a.astype(numpy.float64) for a in (
        x32, tau32, gamma32, beta32, gy32)), relu=relu), 2e-6)


def test_rectified_activations_and_dead_channel(split):
    """Exact zeros (70% of every channel, and a dead channel) with Eq. 40,
    float32 against float64; the output is never negative and exactly zero
    where every component's ReLU is off."""
    rs = numpy.random.RandomState(5)
    x, tau, gamma, beta, gy = _inputs((9, 4, 3, 3), 3, seed=5)
    x = 10 * numpy.maximum(x - numpy.quantile(x, 0.7), 0)
    x[:, 1] = 0
    beta = numpy.array([-0.2, 0.3, 0.1, -0.3])
    gamma = rs.uniform(0.5, 1.5, 4)
    x, tau, gamma, beta, gy = (a.astype(numpy.float32)
                               for a in (x, tau, gamma, beta, gy))
    split(x)
    ours = _forward_backward(x, tau, gamma, beta, gy, True)
    expected = _expected(*(a.astype(numpy.float64)
                           for a in (x, tau, gamma, beta, gy)), relu=True)
    assert_all_close(ours, expected, 2e-6)
    y = ours[0]
    assert (y >= 0).all()
    numpy.testing.assert_array_equal(y[expected[0] == 0], 0)


@pytest.mark.parametrize('relu', [False, True])
def test_float16(split, relu):
    x, tau, gamma, beta, gy = _inputs((6, 3, 4, 4), 2, seed=6,
                                      dtype=numpy.float32)
    split(x.astype(numpy.float16))
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
    assert_all_close(several, _expected(x, tau, gamma, beta, gy, relu),
                     1e-10 if dtype == numpy.float64 else 2e-6)


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
    transform_cases.use_path(monkeypatch, 'array')
    seen = []
    expand = transform_passes.expand

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return expand(*args, **kwargs)

    monkeypatch.setattr(transform_passes, 'expand', spy)
    x, tau, gamma, beta, gy = _inputs((4, 3, 2, 2), 2, seed=9)
    _forward_backward(x, tau, gamma, beta, gy, False)
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before

    def fail(*args, **kwargs):
        raise RuntimeError('in a loop')

    monkeypatch.setattr(transform_passes, 'expand', fail)
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
