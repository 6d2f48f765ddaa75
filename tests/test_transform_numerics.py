"""Float32 accuracy of the Mixture Normalizing Transform (issue 14, item 1).

The float32 transform (forward, backward, double backward, the statistics
the link queues for inference, and the multi-worker reducer) is compared
with float64 references written from the equations (``mn_reference``) and
with Chainer's float64 batch normalization at ``K = 1``, on the inputs the
layers meet: activations 1e2 to 1e4 standard deviations away from zero,
rectified activations with 70% exact zeros and dead channels, components
of zero variance and variances far below ``eps``.
"""
import threading

import numpy
import pytest

import chainer
from chainer import gradient_check
import chainer.functions as F

from mn_chainer import gmm
import mn_chainer.functions as MF
import mn_chainer.links as ML
import mn_reference


OFFSETS = [1e2, 1e3, 1e4]
# Per-channel standard deviations (the offsets are in these units) and
# signs: the transform is per channel, so each scale is checked at once.
SCALES = numpy.array([1.0, 0.01, 100.0, 3.0])
SIGNS = numpy.array([1.0, -1.0, 1.0, 1.0])


def _far_inputs(offset, k, shape=(16, 4, 6, 6), seed=0):
    """Float32 ``x`` with ``K`` modes 3 sd apart, ``offset`` sd from zero,
    and soft responsibilities centred on the modes."""
    rs = numpy.random.RandomState(seed)
    n, c = shape[:2]
    modes = rs.randint(0, k, size=(n, 1) + shape[2:])
    unit = rs.randn(*shape) + 3.0 * modes
    scale = SCALES[:c].reshape((1, c) + (1,) * (len(shape) - 2))
    sign = SIGNS[:c].reshape(scale.shape)
    x = (sign * offset + unit) * scale
    distance = (numpy.arange(k).reshape((1, k) + (1,) * (len(shape) - 2))
                - modes) * 3.0
    tau = numpy.exp(-0.5 * (distance / 2.0) ** 2)
    tau /= tau.sum(axis=1, keepdims=True)
    gamma = rs.uniform(0.5, 1.5, c)
    beta = rs.uniform(-0.3, 0.3, c)
    gy = rs.randn(*shape)
    return tuple(a.astype(numpy.float32) for a in (x, tau, gamma, beta, gy))


def _rectified_inputs(k=3, shape=(16, 5, 6, 6), seed=1):
    """Rectified float32 activations: each channel zero below its 70%
    quantile, scale 10; channel 1 is dead (all zero); channel 4 lies 1e4 sd
    from zero.  Component 0 holds exactly the points that are zero in
    channel 0, so its variance there is 0."""
    rs = numpy.random.RandomState(seed)
    n, c = shape[:2]
    z = rs.randn(*shape) + 2.0 * rs.randint(0, 2, size=(n, 1) + shape[2:])
    q = numpy.quantile(z, 0.7, axis=(0, 2, 3), keepdims=True)
    x = 10.0 * numpy.maximum(z - q, 0)
    x[:, 1] = 0
    x[:, 4] = 1e4 + z[:, 4]
    zero = (x[:, 0] == 0)[:, None]
    rest = rs.rand(n, k - 1, *shape[2:]) + 0.1
    rest /= rest.sum(axis=1, keepdims=True)
    tau = numpy.concatenate((zero.astype(numpy.float64), ~zero * rest),
                            axis=1)
    gamma = rs.uniform(0.5, 1.5, c)
    beta = rs.uniform(-0.3, 0.3, c)
    gy = rs.randn(*shape)
    return tuple(a.astype(numpy.float32) for a in (x, tau, gamma, beta, gy))


def _tiny_variance_inputs(k=2, shape=(16, 3, 4, 4), seed=2):
    """Channels of standard deviation 1e-4 (variance 5e3 times below eps)
    at 1, 1e-3 at 10 (1e4 sd away) and 1 at 0."""
    rs = numpy.random.RandomState(seed)
    unit = rs.randn(*shape)
    x = unit * numpy.array([1e-4, 1e-3, 1.0])[None, :, None, None]
    x += numpy.array([1.0, 10.0, 0.0])[None, :, None, None]
    tau = rs.rand(shape[0], k, *shape[2:]) + 0.2
    tau /= tau.sum(axis=1, keepdims=True)
    gamma = rs.uniform(0.5, 1.5, shape[1])
    beta = rs.uniform(-0.3, 0.3, shape[1])
    gy = rs.randn(*shape)
    return tuple(a.astype(numpy.float32) for a in (x, tau, gamma, beta, gy))


def _run(x, tau, gamma, beta, gy, relu=False, ggrads=None, **kwargs):
    """Output and gradients of the transform (and, with ``ggrads``, the
    second-order gradients as in :func:`mn_reference.transform_gradients`)."""
    xv, gv, bv, gyv = (chainer.Variable(a.copy())
                       for a in (x, gamma, beta, gy))
    y = MF.mixture_normalization(xv, tau, gv, bv, relu=relu, **kwargs)
    grads = chainer.grad([y], [xv, gv, bv], grad_outputs=[gyv],
                         enable_double_backprop=ggrads is not None)
    out = (y.array,) + tuple(g.array for g in grads)
    if ggrads is None:
        return out
    second = chainer.grad(
        list(grads), [xv, gv, gyv],
        grad_outputs=[chainer.Variable(g) for g in ggrads])
    return out + tuple(g.array for g in second)


def _assert_close(actual, expected, rtol, name=''):
    """``|actual - expected| <= rtol * max|expected|`` (float64 compare)."""
    expected = numpy.asarray(expected, dtype=numpy.float64)
    bound = rtol * max(numpy.abs(expected).max(), 1e-30)
    error = numpy.abs(numpy.asarray(actual, numpy.float64) - expected).max()
    assert error <= bound, '{}: max error {:.3g} > {:.3g}'.format(
        name, error, bound)


def _double(a):
    return numpy.asarray(a, dtype=numpy.float64)


def _assert_transform_matches_float64(x, tau, gamma, beta, gy, relu=False,
                                      rtol=2e-6, **kwargs):
    """Float32 output and gradients against the float64 references."""
    ours = _run(x, tau, gamma, beta, gy, relu, **kwargs)
    assert all(a.dtype == numpy.float32 for a in ours)
    expected = (mn_reference.mixture_normalization(
        x, tau, gamma, beta, relu=relu),) + mn_reference.transform_gradients(
            x, tau, gamma, beta, gy, relu=relu)
    for name, a, b in zip(('y', 'gx', 'ggamma', 'gbeta'), ours, expected):
        _assert_close(a, b, rtol, name)


# -- the reference itself ---------------------------------------------------

@pytest.mark.parametrize('relu', [False, True])
def test_reference_gradients_are_the_derivatives(relu):
    x, tau, gamma, beta, gy = (_double(a) for a in _far_inputs(
        0.0, 3, shape=(4, 3, 2, 2), seed=6))
    y = mn_reference.mixture_normalization_variable(
        chainer.Variable(x), tau, chainer.Variable(gamma),
        chainer.Variable(beta), relu=relu)
    numpy.testing.assert_allclose(
        y.array, mn_reference.mixture_normalization(x, tau, gamma, beta,
                                                    relu=relu), rtol=1e-12)

    def f(x, gamma, beta):
        return mn_reference.mixture_normalization_variable(
            x, tau, gamma, beta, relu=relu)

    rs = numpy.random.RandomState(8)
    gradient_check.check_double_backward(
        f, (x, gamma, beta), gy, tuple(rs.randn(*a.shape)
                                       for a in (x, gamma, beta)),
        eps=1e-6, atol=1e-6, rtol=1e-5, dtype=numpy.float64)


# -- forward, backward, double backward far from zero ---------------------

@pytest.mark.parametrize('offset', OFFSETS)
@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('relu', [False, True])
def test_far_from_zero_matches_float64(offset, k, relu):
    # Chainer's float32 BN reaches 4e-4 (y) and 1e-3 (ggamma) at 1e4 sd;
    # on sums about zero MN was off by 200x the output's scale there.
    _assert_transform_matches_float64(*_far_inputs(offset, k), relu=relu)


@pytest.mark.parametrize('offset', OFFSETS)
def test_k1_far_from_zero_matches_float64_batch_normalization(offset):
    x, _, gamma, beta, gy = _far_inputs(offset, 1)
    tau = numpy.ones((x.shape[0], 1) + x.shape[2:], dtype=numpy.float32)
    ours = _run(x, tau, gamma, beta, gy)
    xv, gv, bv = (chainer.Variable(_double(a)) for a in (x, gamma, beta))
    y = F.batch_normalization(xv, gv, bv, eps=2e-5)
    y.grad = _double(gy)
    y.backward()
    for name, a, b in zip(('y', 'gx', 'ggamma', 'gbeta'), ours,
                          (y.array, xv.grad, gv.grad, bv.grad)):
        _assert_close(a, b, 2e-6, name)


@pytest.mark.parametrize('offset', [0.0] + OFFSETS)
@pytest.mark.parametrize('relu', [False, True])
def test_double_backward_far_from_zero(offset, relu):
    x, tau, gamma, beta, gy = _far_inputs(offset, 3, shape=(8, 4, 3, 3))
    rs = numpy.random.RandomState(7)
    ggrads = tuple(rs.randn(*a.shape).astype(numpy.float32)
                   for a in (x, gamma, beta))
    ours = _run(x, tau, gamma, beta, gy, relu, ggrads)
    expected = mn_reference.transform_gradients(
        x, tau, gamma, beta, gy, relu=relu, ggrads=ggrads)
    names = ('gx', 'ggamma', 'gbeta', 'gx2', 'ggamma2', 'ggy2')
    for name, a, b in zip(names, ours[1:], expected):
        _assert_close(a, b, 1e-5, name)


@pytest.mark.parametrize('offset', [0.0] + OFFSETS)
def test_statistics_far_from_zero(offset):
    x, tau, gamma, beta, _ = _far_inputs(offset, 3)
    node = MF.MixtureNormalization()
    node.apply((x, tau, gamma, beta))
    pi, mean, var = mn_reference.component_stats(x, tau)
    numpy.testing.assert_allclose(node.pi, pi, rtol=1e-6)
    # The means to float32 resolution; the variances to 1e-5 relative
    # (float32 sums of 576 points about a shift a few sd away).
    numpy.testing.assert_allclose(node.mean, mean, rtol=2e-7,
                                  atol=1e-7 * SCALES.max())
    numpy.testing.assert_allclose(node.var, var, rtol=1e-5)
    numpy.testing.assert_allclose(node.shifted_mean + (
        0 if node.shift is None else node.shift), node.mean, rtol=1e-7)


# -- rectified activations, dead channels, tiny variances -----------------

@pytest.mark.parametrize('relu', [False, True])
def test_rectified_sparse_and_dead_channels(relu):
    x, tau, gamma, beta, gy = _rectified_inputs()
    assert 0.69 < (x[:, 0] == 0).mean() < 0.71
    node = MF.MixtureNormalization(relu=relu)
    node.apply((x, tau, gamma, beta))
    # Exact zeros stay exact: a component whose points are all zero in a
    # channel has variance 0 there, as in float64, and so has every
    # component in the dead channel; only the channel far from zero is
    # summed about a shift.
    assert node.var[0, 0] == 0
    assert (node.var[:, 1] == 0).all() and (node.mean[:, 1] == 0).all()
    assert node.shift is not None and (node.shift[:4] == 0).all()
    _, _, var = mn_reference.component_stats(x, tau)
    numpy.testing.assert_allclose(node.var, var, rtol=1e-6, atol=1e-12)
    _assert_transform_matches_float64(x, tau, gamma, beta, gy, relu)


@pytest.mark.parametrize('relu', [False, True])
def test_tiny_variances(relu):
    x, tau, gamma, beta, gy = _tiny_variance_inputs()
    node = MF.MixtureNormalization(relu=relu)
    node.apply((x, tau, gamma, beta))
    _, _, var = mn_reference.component_stats(x, tau)
    numpy.testing.assert_allclose(node.var, var, rtol=1e-5)
    _assert_transform_matches_float64(x, tau, gamma, beta, gy, relu)


def test_float16_far_from_zero():
    x, tau, gamma, beta, gy = _far_inputs(1e3, 3, shape=(8, 1, 4, 4))
    x16 = x.astype(numpy.float16)
    y = MF.mixture_normalization(x16, tau.astype(numpy.float16), gamma, beta)
    assert y.dtype == numpy.float16
    expected = mn_reference.mixture_normalization(
        x16, tau.astype(numpy.float16), gamma, beta)
    # float16 outputs: rounded to 2^-11 relative.
    _assert_close(y.array, expected, 1e-3, 'y')


# -- the shift -------------------------------------------------------------

def test_result_does_not_depend_on_the_shift():
    x, tau, gamma, beta, gy = _far_inputs(0.0, 3, seed=3)
    x = x.astype(numpy.float64)
    reference = _run(x, tau, gamma, beta, gy)
    for shift in (0, 2.5, x.mean(axis=(0, 2, 3)), -x.mean(axis=(0, 2, 3))):
        for a, b in zip(_run(x, tau, gamma, beta, gy, shift=shift),
                        reference):
            numpy.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_given_shift_far_from_zero():
    x, tau, gamma, beta, gy = _far_inputs(1e4, 3)
    _assert_transform_matches_float64(x, tau, gamma, beta, gy,
                                      shift=x.mean(axis=(0, 2, 3)))


@pytest.mark.parametrize('shift, message', [
    (numpy.zeros(3), 'shape'), (numpy.zeros((1, 4)), 'shape'),
    (numpy.array([0, numpy.nan, 0, 0]), 'finite'),
    (numpy.array(['a'] * 4), 'finite')])
def test_bad_shift_is_a_clear_error(shift, message):
    x, tau, gamma, beta, _ = _far_inputs(0.0, 2)
    with pytest.raises(ValueError, match='mixture_normalization: shift.*'
                       + message):
        MF.mixture_normalization(x, tau, gamma, beta, shift=shift)


def test_statistics_shift():
    weights = numpy.array([0.5, 0.3, 0.2, 0.0])
    means = numpy.array([[0.0, 1e4, 0.0, -50.0],
                         [1.0, 1e4 + 3, 5.0, -40.0],
                         [2.0, 1e4 - 3, 10.0, -60.0],
                         [9e9, 9e9, 9e9, 9e9]])   # weight 0: ignored
    variances = numpy.array([[1.0, 1.0, 0.0, 1.0],
                             [1.0, 1.0, 4.0, 1.0],
                             [1.0, 1.0, 0.01, 1.0]] + [[1.0] * 4])
    shift = MF.statistics_shift(weights, means, variances)
    centre = weights @ means[:, :] / weights.sum()
    # Channel 0 is near zero; channel 2 has a zero-variance component at
    # zero, which a shift would hurt; channels 1 and 3 are shifted.
    numpy.testing.assert_array_equal(shift, [0, centre[1], 0, centre[3]])
    assert MF.statistics_shift(weights, means[:, :1], variances[:, :1]) \
        == 0


# -- inference from the queued statistics ---------------------------------

@pytest.mark.parametrize('relu', [False, True])
def test_link_queue_and_inference_far_from_zero(relu):
    offset = 1e4
    link = ML.MixtureNormalization(4, n_components=3, queue_size=3, relu=relu,
                                   seed=0)
    link.gamma.array[...] = [1.0, 0.5, 2.0, 1.5]
    link.beta.array[...] = [0.0, 0.1, -0.2, 0.3]
    queue = []
    for step in range(3):
        x, _, _, _, _ = _far_inputs(offset, 3, seed=10 + step)
        with chainer.using_config('train', True):
            y = link(x).array
        tau = link._last_tau
        expected = mn_reference.mixture_normalization(
            x, tau, link.gamma.array, link.beta.array, relu=relu)
        _assert_close(y, expected, 2e-6, 'y (train)')
        pi, mean, var = mn_reference.component_stats(x, tau)
        k = len(pi)
        numpy.testing.assert_allclose(link.queue_means[step, :k], mean,
                                      rtol=2e-7, atol=1e-7 * SCALES.max())
        numpy.testing.assert_allclose(link.queue_variances[step, :k], var,
                                      rtol=1e-5)
        entry = (numpy.zeros(3), numpy.zeros((3, 4)), numpy.ones((3, 4)))
        entry[0][:k], entry[1][:k], entry[2][:k] = pi, mean, var
        queue.append(entry)
    x, _, _, _, _ = _far_inputs(offset, 3, seed=99)
    with chainer.using_config('train', False):
        y = link(x).array
    inference_args = (link.gamma.array, link.beta.array, link.decay,
                      link.eps, relu)
    # The inference under the queue the link holds, in float64 ...
    held = [(_double(link.queue_weights[i]), _double(link.queue_means[i]),
             _double(link.queue_variances[i])) for i in range(3)]
    _assert_close(y, mn_reference.inference(x, held, *inference_args),
                  2e-6, 'y (test, held queue)')
    # ... and under the exact statistics: the queue holds float32 means, 1e4
    # sd away rounded by up to 5e-4 sd (as BN's float32 running mean is).
    _assert_close(y, mn_reference.inference(x, queue, *inference_args),
                  5e-4, 'y (test)')


def test_link_sums_about_its_fitted_mixture(monkeypatch):
    """The link passes the shift of its fitted mixture (the same on every
    worker), so that the statistics take one all-reduce."""
    shifts = []

    class Recording(MF.MixtureNormalization):
        def __init__(self, eps, relu, reducer=None, shift=None):
            shifts.append(shift)
            super(Recording, self).__init__(eps, relu, reducer, shift)

    monkeypatch.setattr(MF, 'MixtureNormalization', Recording)
    link = ML.MixtureNormalization(4, n_components=3, seed=0)
    for offset in (0.0, 1e4):
        x = _far_inputs(offset, 3)[0]
        link(x)
    assert len(shifts) == 2 and numpy.isscalar(shifts[0]) \
        and shifts[0] == 0
    numpy.testing.assert_allclose(shifts[1], x.mean(axis=(0, 2, 3)),
                                  rtol=1e-4)


def test_fixed_mixture_normalization_far_from_zero():
    rs = numpy.random.RandomState(5)
    c, j = 4, 6
    mean = 1e4 * SIGNS[:c] + rs.randn(j, c) * 3
    var = rs.uniform(0.5, 2.0, (j, c))
    x = (mean[0] + rs.randn(8, c, 3, 3).transpose(0, 2, 3, 1)).transpose(
        0, 3, 1, 2)
    coef = rs.rand(8, j, 3, 3)
    # A pruned queue entry: mean 0, variance 1, coefficient 0.
    mean[-1], var[-1], coef[:, -1] = 0, 1, 0
    gamma, beta = rs.uniform(0.5, 1.5, c), rs.randn(c)
    f32 = [a.astype(numpy.float32) for a in (x, coef, gamma, beta, mean,
                                             var)]
    y = MF.fixed_mixture_normalization(*f32).array
    xs, cs, gs, bs, ms, vs = (_double(a) for a in f32)
    expected = numpy.zeros_like(xs)
    for i in range(j):
        x_hat = (xs - ms[i][:, None, None]) / numpy.sqrt(
            vs[i] + 2e-5)[:, None, None]
        expected += cs[:, i:i + 1] * (gs[:, None, None] * x_hat
                                      + bs[:, None, None])
    _assert_close(y, expected, 2e-6, 'y')


# -- several workers --------------------------------------------------------

class _ThreadReducer(gmm.Reducer):

    """Sums over ``size`` threads that play the workers (counts calls)."""

    def __init__(self, rank, shared):
        self.rank = rank
        self.size = shared['size']
        self.shared = shared
        self.calls = 0

    def allreduce(self, array):
        self.calls += 1
        slots, barrier = self.shared['slots'], self.shared['barrier']
        slots[self.rank] = array.copy()
        barrier.wait()
        total = slots[0].copy()
        for other in slots[1:]:
            total += other
        barrier.wait()
        return total


def _run_workers(n_workers, x, tau, gamma, beta, gy, **kwargs):
    """Forward and backward on ``n_workers`` threads, each with a slice of
    the batch; returns the per-worker results and all-reduce counts."""
    shared = dict(size=n_workers, slots=[None] * n_workers,
                  barrier=threading.Barrier(n_workers, timeout=60))
    parts = numpy.array_split(numpy.arange(x.shape[0]), n_workers)
    results, errors = [None] * n_workers, []

    def work(rank):
        try:
            reducer = _ThreadReducer(rank, shared)
            mine = parts[rank]
            xv, gv, bv = (chainer.Variable(a.copy())
                          for a in (x[mine], gamma, beta))
            node = MF.MixtureNormalization(reducer=reducer, **kwargs)
            y, = node.apply((xv, tau[mine], gv, bv))
            forward_calls = reducer.calls
            y.grad = gy[mine]
            y.backward()
            results[rank] = dict(
                y=y.array, gx=xv.grad, ggamma=gv.grad, gbeta=bv.grad,
                mean=node.mean, var=node.var, s=node.s,
                forward_calls=forward_calls,
                backward_calls=reducer.calls - forward_calls)
        except Exception as e:  # reported by the main thread
            errors.append(e)
            shared['barrier'].abort()

    threads = [threading.Thread(target=work, args=(r,))
               for r in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results, parts


@pytest.mark.parametrize('n_workers', [2, 3])
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('given_shift', [True, False])
def test_workers_equal_one_process_far_from_zero(n_workers, relu,
                                                 given_shift):
    x, tau, gamma, beta, gy = _far_inputs(1e4, 3, seed=4)
    kwargs = dict(relu=relu)
    if given_shift:
        # What the link passes: a function of the global mixture, the same
        # on every worker.
        pi, mean, var = mn_reference.component_stats(x, tau)
        kwargs['shift'] = MF.statistics_shift(pi, mean, var)
        assert not numpy.isscalar(kwargs['shift'])
    results, parts = _run_workers(n_workers, x, tau, gamma, beta, gy,
                                  **kwargs)
    single = MF.MixtureNormalization(relu=relu)
    single.apply((x, tau, gamma, beta))
    y, gx, ggamma, gbeta = _run(x, tau, gamma, beta, gy, relu)
    expected_y = mn_reference.mixture_normalization(x, tau, gamma, beta,
                                                    relu=relu)
    expected = mn_reference.transform_gradients(x, tau, gamma, beta, gy,
                                                relu=relu)
    for rank, r in enumerate(results):
        mine = parts[rank]
        # One all-reduce for the statistics when the shift is given, and
        # one for the gradient sums; choosing the shift from the batch
        # takes a second one in the forward (only where a shift is needed).
        assert r['forward_calls'] == (1 if given_shift else 2)
        assert r['backward_calls'] == 1
        numpy.testing.assert_allclose(r['s'], single.s, rtol=1e-6)
        numpy.testing.assert_allclose(r['mean'], single.mean, rtol=1e-7)
        numpy.testing.assert_allclose(r['var'], single.var, rtol=1e-5)
        _assert_close(r['y'], y[mine], 2e-6, 'y')
        _assert_close(r['y'], expected_y[mine], 2e-6, 'y vs float64')
        _assert_close(r['gx'], gx[mine], 2e-6, 'gx')
        _assert_close(r['gx'], expected[0][mine], 2e-6, 'gx vs float64')
    # Each worker gets the mean of the workers' parameter gradients; their
    # sum is the gradient of the whole batch.
    for name, whole, exact in (('ggamma', ggamma, expected[1]),
                               ('gbeta', gbeta, expected[2])):
        total = sum(r[name] for r in results)
        _assert_close(total, whole, 2e-6, name)
        _assert_close(total, exact, 2e-6, name + ' vs float64')


def test_workers_near_zero_need_one_all_reduce():
    x, tau, gamma, beta, gy = _far_inputs(0.0, 3, seed=4)
    results, _ = _run_workers(2, x, tau, gamma, beta, gy)
    assert [r['forward_calls'] for r in results] == [1, 1]
