"""float32 accuracy of the mixture fit on the inputs the layers meet
(issue 14, items 2-5), against float64 references.

Every test runs on both CPU paths: the C kernels of
:mod:`mn_chainer.cpu_kernels` and the NumPy passes
(``MN_CHAINER_CPU_KERNELS=0``); the fits also run on CuPy where a GPU is
present.  Without one, the CUDA E-step is checked on the same kind of data
in ``test_kernels.py`` (CPU emulation of the CUDA sources), and the CuPy
passes' M-step here, with a NumPy stand-in for the kernel.  The
references (:mod:`mixture_reference`) are float64 direct differences and
two-pass variances.  The data: rectified sparse activations (exact zeros,
channels where a mode is all zero: components with the variance
``reg_covar``), large offsets, points near the float32 overflow, and odd
input (big-endian, no features, Python lists).
"""
import numpy
import pytest

from mn_chainer import cpu_kernels
from mn_chainer import fit_passes
from mn_chainer import gmm

import mixture_reference


def _select_cpu_path(name, monkeypatch):
    if name == 'c':
        if not cpu_kernels.available():
            pytest.skip('the C kernels are not built')
        monkeypatch.delenv('MN_CHAINER_CPU_KERNELS', raising=False)
    else:
        monkeypatch.setenv('MN_CHAINER_CPU_KERNELS', '0')
    return name


@pytest.fixture(params=['c', 'array'])
def path(request, monkeypatch):
    """The CPU path under test: the C kernels (skipped where they are not
    built) or the NumPy passes."""
    return _select_cpu_path(request.param, monkeypatch)


@pytest.fixture(params=[
    'c', 'array', pytest.param('cupy', marks=pytest.mark.gpu)])
def xp(request, monkeypatch):
    """The array module of a fit: NumPy through the C kernels and through
    the NumPy passes, and CuPy (skipped without a GPU)."""
    if request.param != 'cupy':
        _select_cpu_path(request.param, monkeypatch)
        return numpy
    cupy = pytest.importorskip('cupy')
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip('no CUDA GPU')
    except Exception as e:  # no driver, no device, ...
        pytest.skip('no usable CUDA GPU: {}'.format(e))
    return cupy


def _host(a):
    return a if isinstance(a, numpy.ndarray) else a.get()


def _fit(xp, points, *args, **kwargs):
    """``fit_gmm`` on ``xp``; the mixture and posterior on the host."""
    out = gmm.fit_gmm(xp.asarray(points), *args, **kwargs)
    if kwargs.get('return_posterior'):
        return gmm.Mixture(*map(_host, out[0])), _host(out[1])
    return gmm.Mixture(*map(_host, out))


def _float64(mixture):
    return gmm.Mixture(*(numpy.asarray(a, numpy.float64) for a in mixture))


# ---------------------------------------------------------------------------
# Item 2: posterior and E-step with tiny component variances


@pytest.mark.parametrize('scale', [10.0, 1.0])
@pytest.mark.parametrize('seed', [1, 3])
def test_fit_posterior_on_rectified_activations(xp, scale, seed):
    """The issue's recipe: 4,096 points, d = 64, two modes rectified at
    their 70% quantile, K = 3, one K-means and one EM iteration.  The
    fit's posterior and :func:`gmm.posterior` are within 1e-4 of the
    float64 posterior of the returned mixture (they were 0.1 to 1 away
    on this data before, on both paths), with the same most likely
    component for every point."""
    points = mixture_reference.rectified_modes(
        scale=scale, seed=seed).astype(numpy.float32)
    mixture, tau = _fit(xp, points, 3, kmeans_iters=1, em_iters=1, rng=0,
                        return_posterior=True)
    assert (mixture.variances < 1.1e-6).any()  # dead channels: the premise
    expected = mixture_reference.posterior(points, mixture)
    numpy.testing.assert_allclose(tau, expected, atol=1e-4)
    numpy.testing.assert_allclose(
        _host(gmm.posterior(xp.asarray(points),
                            gmm.Mixture(*map(xp.asarray, mixture)))),
        expected, atol=1e-4)
    numpy.testing.assert_array_equal(tau.argmax(axis=1),
                                     expected.argmax(axis=1))


@pytest.mark.parametrize('scale', [10.0, 1.0])
@pytest.mark.parametrize('seed', [1, 3])
def test_fit_log_likelihood_equals_float64_fit(xp, scale, seed):
    """The float32 fit gives the float64 fit's mixture (same seed) on
    rectified activations: its log-likelihood (in float64 on the same
    points) is the same to 1e-4 relative (-176.4 against -174.9 before on
    the first of these), and so are the weights."""
    points = mixture_reference.rectified_modes(scale=scale, seed=seed)
    points = points.astype(numpy.float32).astype(numpy.float64)
    fits = [_fit(xp, points.astype(dtype), 3, rng=seed, min_weight=0)
            for dtype in (numpy.float32, numpy.float64)]
    lls = [mixture_reference.log_likelihood(points, f) for f in fits]
    numpy.testing.assert_allclose(lls[0], lls[1], rtol=1e-4)
    numpy.testing.assert_allclose(fits[0].weights, fits[1].weights,
                                  atol=1e-5)
    numpy.testing.assert_allclose(fits[0].means, fits[1].means,
                                  atol=1e-4 * scale)


@pytest.mark.parametrize('reg_covar', [1e-6, 1e-3])
def test_em_step_on_dead_channels_equals_float64(path, reg_covar):
    """One EM step of the fit's passes from a mixture with dead channels
    against the float64 EM step on the same float32 points: the variance
    of a channel where a component's points are all zero comes out as
    ``reg_covar`` (not ``reg_covar`` plus the rounding of ``E[x^2] -
    mu^2`` at the channel's mean, which exceeded 1e-6)."""
    points = mixture_reference.rectified_modes(m=2048, scale=10.0).astype(
        numpy.float32)
    start = gmm.Mixture(*(a.astype(numpy.float32) for a in gmm.fit_gmm(
        points.astype(numpy.float64), 3, rng=0, min_weight=0,
        reg_covar=reg_covar)))
    shift = points.mean(axis=0)
    passes = fit_passes.select_passes(numpy, points)(numpy, points, shift)
    ours = passes.em_step(start._replace(means=start.means - shift),
                          reg_covar)
    ours = _float64(ours._replace(means=ours.means + shift))
    weights, means, variances = mixture_reference.em_step(points, start,
                                                          reg_covar)
    numpy.testing.assert_allclose(ours.weights, weights, rtol=1e-5)
    numpy.testing.assert_allclose(ours.means, means, atol=1e-4)
    numpy.testing.assert_allclose(ours.variances, variances, rtol=1e-3,
                                  atol=reg_covar * 1e-2)
    tight = variances < 2 * reg_covar
    assert tight.any()
    numpy.testing.assert_allclose(ours.variances[tight], variances[tight],
                                  rtol=1e-2)


def test_cuda_passes_m_step(monkeypatch):
    """The CuPy passes (E-step kernel, float64 M-step on the arrays) on
    NumPy arrays, the kernel replaced by the float64 reference: the M-step
    keeps a dead channel's variance at ``reg_covar``."""
    points = mixture_reference.rectified_modes(m=2048, scale=10.0).astype(
        numpy.float32)

    def estep_log_resp(x, log_weights, means, precisions):
        log_resp, log_norm = mixture_reference.log_resp(
            x, gmm.Mixture(numpy.exp(log_weights), means, 1 / precisions))
        return log_resp.astype(x.dtype), log_norm.astype(x.dtype)

    monkeypatch.setattr(fit_passes.kernels, 'estep_log_resp', estep_log_resp)
    start = gmm.Mixture(*(a.astype(numpy.float32) for a in gmm.fit_gmm(
        points.astype(numpy.float64), 3, rng=0, min_weight=0)))
    shift = points.mean(axis=0)
    ours = fit_passes.CudaPasses(numpy, points, shift).em_step(
        start._replace(means=start.means - shift), 1e-6)
    weights, means, variances = mixture_reference.em_step(points, start,
                                                          1e-6)
    numpy.testing.assert_allclose(ours.weights, weights, rtol=1e-5)
    numpy.testing.assert_allclose(ours.means + shift, means, atol=1e-4)
    numpy.testing.assert_allclose(ours.variances, variances, rtol=1e-3,
                                  atol=1e-8)


# ---------------------------------------------------------------------------
# Item 3: large offsets (the centre and the long sums)


@pytest.mark.parametrize('offset, m, rtol', [(1e5, 131072, 1e-4),
                                             (1e6, 200000, 1e-3)])
def test_far_from_zero_fit_equals_float64(xp, offset, m, rtol):
    """Two unit-variance modes 6 sd apart at 1e5 (1e6) from zero: the
    float32 fit's weights and variances are those of the float64 fit of
    the same (float32) points (they were 2e-3..6e-3 off at 1e5, and the
    modes merged at 1e6 on the C path)."""
    points, labels = mixture_reference.offset_modes(m, offset=offset)
    points = points.astype(numpy.float32)
    ours = _fit(xp, points, 2, rng=0)
    ref = _fit(xp, points.astype(numpy.float64), 2, rng=0)
    assert ours.n_components == ref.n_components == 2
    order = numpy.argsort(ours.means[:, 0]), numpy.argsort(ref.means[:, 0])
    numpy.testing.assert_allclose(ours.weights[order[0]],
                                  ref.weights[order[1]], rtol=1e-5)
    numpy.testing.assert_allclose(ours.variances[order[0]],
                                  ref.variances[order[1]], rtol=rtol)
    numpy.testing.assert_allclose(ours.means[order[0]], ref.means[order[1]],
                                  rtol=1e-7)
    # The modes are the truth's (their sample variances, in float64).
    truth = [points[labels == k].astype(numpy.float64).var(axis=0)
             for k in range(2)]
    numpy.testing.assert_allclose(ours.variances[order[0]], truth,
                                  rtol=0.05)


# ---------------------------------------------------------------------------
# Item 4: finite points near the float32 overflow


def _huge_points(spread, m=600, d=5):
    rs = numpy.random.RandomState(3)
    labels = rs.randint(0, 2, m)
    x = spread * (4 * labels[:, None] + rs.randn(m, d))
    return x.astype(numpy.float32)


@pytest.mark.parametrize('spread', [1e15, 3e18])
def test_huge_points_fit_equals_float64(xp, spread):
    """Points spread over up to ~2e19 (their squares overflow float32):
    the fit rescales them by a power of two and returns the float64 fit's
    mixture and posterior, finite (they were NaN/Inf)."""
    points = _huge_points(spread)
    mixture, tau = _fit(xp, points, 2, rng=0, return_posterior=True)
    ref, ref_tau = _fit(xp, points.astype(numpy.float64), 2, rng=0,
                        return_posterior=True)
    for a in list(mixture) + [tau]:
        assert a.dtype == numpy.float32 and numpy.isfinite(a).all()
    numpy.testing.assert_allclose(mixture.weights, ref.weights, rtol=1e-5)
    numpy.testing.assert_allclose(mixture.means, ref.means, rtol=1e-4,
                                  atol=1e-4 * spread)
    numpy.testing.assert_allclose(mixture.variances, ref.variances,
                                  rtol=1e-3)
    numpy.testing.assert_allclose(tau, ref_tau, atol=1e-4)
    on_xp = gmm.Mixture(*map(xp.asarray, mixture))
    numpy.testing.assert_allclose(
        _host(gmm.posterior(xp.asarray(points), on_xp)),
        mixture_reference.posterior(points, mixture), atol=1e-4)
    numpy.testing.assert_allclose(
        gmm.log_likelihood(xp.asarray(points), on_xp),
        mixture_reference.log_likelihood(points, mixture), rtol=1e-5)


def test_rescaled_fit_is_the_fit_scaled(path):
    """Scaling points by a power of two scales the fit (``reg_covar``
    alike): the rescaling the fit applies to huge points changes
    nothing else."""
    points = mixture_reference.rectified_modes(m=1024, d=16, scale=1.0)
    points = points.astype(numpy.float32)
    big = points * numpy.float32(2.0 ** 60)  # up to ~1e19
    # The premise: K-means++'s potential overflows float32 unscaled.
    with numpy.errstate(over='ignore'):
        assert not numpy.isfinite((big * big).sum())
    mixture, tau = gmm.fit_gmm(points, 3, rng=2, return_posterior=True,
                               reg_covar=1e-3)
    scaled, scaled_tau = gmm.fit_gmm(big, 3, rng=2, return_posterior=True,
                                     reg_covar=1e-3 * 4.0 ** 60)
    numpy.testing.assert_allclose(scaled.weights, mixture.weights,
                                  rtol=1e-5)
    numpy.testing.assert_allclose(scaled.means / 2.0 ** 60, mixture.means,
                                  rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(scaled.variances / 4.0 ** 60,
                                  mixture.variances, rtol=1e-4)
    numpy.testing.assert_allclose(scaled_tau, tau, atol=1e-4)


def test_points_beyond_float32_variances_raise(xp):
    """Points spread over 1e20 have variances beyond float32's range: a
    clear error, never a silent Inf."""
    points = xp.asarray(_huge_points(1e20))
    with pytest.raises(gmm.NonFiniteError, match='float32.*float64'):
        gmm.fit_gmm(points, 2, rng=0)
    assert isinstance(gmm.NonFiniteError('x'), ValueError)


@pytest.mark.parametrize('bad', [numpy.nan, numpy.inf])
def test_non_finite_points_raise_the_dedicated_error(xp, bad):
    points = _huge_points(1.0)
    points[7, 3] = bad
    points = xp.asarray(points)
    mixture = gmm.Mixture(xp.ones(2) / 2, xp.zeros((2, 5)), xp.ones((2, 5)))
    for call in (lambda: gmm.fit_gmm(points, 2),
                 lambda: gmm.posterior(points, mixture),
                 lambda: gmm.posterior(points, mixture, check_finite=False),
                 lambda: gmm.log_likelihood(points, mixture)):
        with pytest.raises(gmm.NonFiniteError, match='NaN or Inf'):
            call()


# ---------------------------------------------------------------------------
# Item 5: odd input, the same answer on every path


@pytest.mark.parametrize('dtype', ['>f4', '>f8'])
def test_big_endian_points(path, dtype):
    native = mixture_reference.rectified_modes(m=512, d=12, scale=1.0)
    native = native.astype(numpy.dtype(dtype).newbyteorder('='))
    swapped = native.astype(dtype)
    fits = [gmm.fit_gmm(x, 3, rng=1, return_posterior=True)
            for x in (native, swapped)]
    for a, b in zip(fits[0][0], fits[1][0]):
        assert b.dtype == native.dtype
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(fits[0][1], fits[1][1])
    numpy.testing.assert_array_equal(gmm.posterior(swapped, fits[0][0]),
                                     gmm.posterior(native, fits[0][0]))


def test_points_without_features_raise(path):
    for points in (numpy.zeros((10, 0), numpy.float32), numpy.zeros((10, 0))):
        with pytest.raises(ValueError, match='n_features=0'):
            gmm.fit_gmm(points, 2)
        with pytest.raises(ValueError, match='n_features=0'):
            gmm.posterior(points, gmm.Mixture(numpy.ones(1),
                                              numpy.zeros((1, 0)),
                                              numpy.ones((1, 0))))


def test_python_lists(path):
    points = mixture_reference.rectified_modes(m=200, d=4, scale=1.0)
    as_list = points.tolist()
    fit, tau = gmm.fit_gmm(points, 2, rng=0, return_posterior=True)
    fit_list, tau_list = gmm.fit_gmm(as_list, 2, rng=0,
                                     return_posterior=True,
                                     centers=fit.means.tolist())
    fit_again, tau_again = gmm.fit_gmm(points, 2, rng=0,
                                       return_posterior=True,
                                       centers=fit.means)
    for a, b in zip(fit_list, fit_again):
        numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_array_equal(tau_list, tau_again)
    mixture_list = [a.tolist() for a in fit]
    numpy.testing.assert_array_equal(gmm.posterior(as_list, mixture_list),
                                     gmm.posterior(points, fit))
    assert gmm.log_likelihood(as_list, fit) == gmm.log_likelihood(points,
                                                                  fit)
    centers, indices = gmm.kmeans_plusplus(as_list, 2, rng=0)
    numpy.testing.assert_array_equal(indices,
                                     gmm.kmeans_plusplus(points, 2,
                                                         rng=0)[1])
    with pytest.raises(TypeError, match='floating'):
        gmm.fit_gmm([[1, 2], [3, 4], [5, 6]], 2)
