"""Diagonal Gaussian mixtures fitted to mini-batch activations.

Mixture Normalization (Kalayeh & Shah, paper §3.2, §5.1) fits, for every
normalized layer and every mini-batch, one Gaussian mixture with ``K``
diagonal components to the layer's *points*: the ``C``-dimensional channel
vectors ``x[n, :, h, w]``.  The fit happens outside the autograd graph
(:func:`fit_gmm`, DESIGN §1.1):

1. optional random subsample of the points (``sample_ratio``),
2. greedy K-means++ seeding (:func:`kmeans_plusplus`),
3. ``kmeans_iters`` Lloyd iterations (an empty cluster keeps its centre),
4. the mixture is initialised from the last hard assignment (cluster share,
   mean and variance plus ``reg_covar``),
5. ``em_iters`` EM iterations (E-step in log space),
6. the posterior of *every* point under the final mixture, and
7. components whose mean responsibility is below ``min_weight`` are dropped;
   the kept weights are renormalised, so the returned posterior is exactly
   :func:`posterior` under the returned (pruned) mixture.

This module is the public estimator: it validates its input and runs the
steps.  The steps themselves are named in :mod:`mn_chainer.mixture_steps`
(:func:`estimate_gaussian_parameters` is the M-step the fit runs, block by
block); :mod:`mn_chainer.fit_passes` runs them over the points with one
backend, chosen once per call (NumPy arrays, the C kernels of
:mod:`mn_chainer.cpu_kernels` where they are built, the CUDA kernels of
:mod:`mn_chainer.kernels` for CuPy arrays); data-parallel fits sum their
statistics with a :class:`Reducer` (:mod:`mn_chainer.data_parallel`).

Every function here is array-generic: NumPy in gives NumPy out, CuPy in gives
CuPy out on the same device.  This module imports neither Chainer nor CuPy
at module level, so it works with NumPy alone (1.26 or 2.x).
"""
import functools
import math
import numbers
import threading

import numpy

from mn_chainer import data_parallel
from mn_chainer import fit_passes
from mn_chainer import mixture_steps


Mixture = mixture_steps.Mixture
NonFiniteError = mixture_steps.NonFiniteError
Reducer = data_parallel.Reducer
SEED_POINTS = data_parallel.SEED_POINTS
get_array_module = mixture_steps.get_array_module
estimate_gaussian_parameters = mixture_steps.estimate_gaussian_parameters


def split_em_iter(em_iter):
    """Split the paper's "EM iter." number into K-means and EM iterations.

    The paper counts both phases together with equal shares: "EM iter. = 2"
    is one K-means and one EM iteration, 4 is 2 + 2 and 8 is 4 + 4.  An odd
    count gives the extra iteration to K-means.

    Args:
        em_iter (int): The summed count, ``>= 0``.

    Returns:
        tuple: ``(kmeans_iters, em_iters)``.
    """
    if (not isinstance(em_iter, numbers.Integral) or isinstance(em_iter, bool)
            or em_iter < 0):
        raise ValueError(
            'em_iter must be a non-negative integer, got {!r}'.format(em_iter))
    em_iter = int(em_iter)
    return (em_iter + 1) // 2, em_iter // 2


def to_points(x):
    """Turn activations ``(N, C, *spatial)`` into the point matrix ``(m, C)``.

    The points are the channel vectors ``x[n, :, h, w]`` (``m = N*H*W``),
    ordered by sample, then spatial position.
    """
    if x.ndim < 2:
        raise ValueError(
            'activations must have shape (N, C, *spatial), got shape {}'
            .format(x.shape))
    xp = get_array_module(x)
    if x.ndim == 2:
        return x
    return xp.ascontiguousarray(xp.moveaxis(x, 1, -1)).reshape(-1, x.shape[1])


def from_points(points, shape):
    """Inverse of :func:`to_points` for a per-point matrix ``(m, K)``.

    Args:
        points: Array of shape ``(m, K)`` in :func:`to_points` order.
        shape (tuple): The activations' shape ``(N, C, *spatial)``.

    Returns:
        Array of shape ``(N, K, *spatial)`` (C-contiguous).
    """
    xp = get_array_module(points)
    n, spatial = shape[0], tuple(shape[2:])
    k = points.shape[1]
    if points.shape[0] != n * int(numpy.prod(spatial, dtype=numpy.int64)):
        raise ValueError('{} points do not match activations of shape {}'
                         .format(points.shape[0], shape))
    if not spatial:
        return points
    out = points.reshape((n,) + spatial + (k,))
    return xp.ascontiguousarray(xp.moveaxis(out, -1, 1))


# ---------------------------------------------------------------------------
# Validation


def _check_points(points, n_components, check_finite=True):
    """``(xp, points)``: the points' module and the points in their compute
    dtype (:func:`mn_chainer.mixture_steps.compute_dtype`, native byte
    order), checked.  Anything but a CuPy array (lists, array-likes) is
    taken as a NumPy array."""
    xp = get_array_module(points)
    if xp is numpy:
        points = numpy.asarray(points)
    if points.ndim != 2:
        raise ValueError('points must be a 2-D array (n_samples, n_features),'
                         ' got {} dimension(s) with shape {}'
                         .format(points.ndim, points.shape))
    if points.dtype.kind != 'f':
        raise TypeError('points must be floating point, got dtype {}'
                        .format(points.dtype))
    if points.shape[1] == 0:
        raise ValueError('points must have at least one feature, got shape '
                         '{} (n_features=0)'.format(points.shape))
    dtype = mixture_steps.compute_dtype(points.dtype)
    if (not isinstance(n_components, numbers.Integral)
            or isinstance(n_components, bool) or n_components < 1):
        raise ValueError('n_components must be a positive integer, got {!r}'
                         .format(n_components))
    if points.shape[0] < n_components:
        raise ValueError(
            'n_samples={} should be >= n_components={}: there are fewer '
            'points than mixture components'.format(points.shape[0],
                                                    n_components))
    points = points.astype(dtype, copy=False)
    if check_finite:
        _check_finite(xp, points)
    return xp, points


def _check_finite(xp, points):
    """:class:`NonFiniteError` if ``points`` holds NaN or Inf."""
    if not bool(xp.isfinite(points).all()):
        raise NonFiniteError('points contain NaN or Inf (non-finite values)')


def _rescaling(magnitude, dtype, m, d):
    """The exponent ``e >= 0`` of the power of two ``2**-e`` that the fit
    scales finite points by so that no sum overflows.

    The largest sum of a fit is K-means++'s potential, at most
    ``m d (2 A)^2`` for points within ``A`` of their mean (``A <= 2
    magnitude``, the largest ``|points[i, j]|``); the points are scaled so
    that this bound stays 64 times below the largest number of ``dtype``.
    Scaling by a power of two is exact, so the scaled fit, scaled back, is
    the fit (``reg_covar`` scaled alike); ``e = 0`` (no scaling) for every
    input below about ``1e14`` in float32 (``m d = 4e6``) and ``1e150`` in
    float64.
    """
    limit = math.sqrt(numpy.finfo(dtype).max / (64.0 * 16 * m * d))
    if not magnitude > limit:  # NaN: the finite check has raised
        return 0
    return int(math.ceil(math.log2(magnitude / limit)))


def _scaled_reg_covar(reg_covar, scale, dtype):
    """``reg_covar * scale**2``, raised to the smallest normal number where
    it would fall below it (a variance floor below the resolution of the
    scaled points, which keeps every precision finite)."""
    reg_covar = reg_covar * scale * scale
    tiny = float(numpy.finfo(dtype).tiny)
    return tiny if 0 < reg_covar < tiny else reg_covar


def _unscale(mixture, shift, scale):
    """The mixture of the points from that of ``(points - shift) * scale``
    (:func:`_rescaling`); :class:`NonFiniteError` where its variances are
    beyond the dtype's range."""
    dtype = mixture.means.dtype
    means = (mixture.means + shift) / dtype.type(scale)
    variances = mixture.variances.astype(numpy.float64) / (scale * scale)
    if not bool((variances <= numpy.finfo(dtype).max).all()):
        raise NonFiniteError(
            'points too large for {}: their fitted variances (up to {:.3g}) '
            'exceed its largest number; fit them in float64'.format(
                dtype, float(variances.max())))
    return Mixture(mixture.weights, means, variances.astype(dtype))


def _check_iters(name, value):
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or value < 0):
        raise ValueError('{} must be a non-negative integer, got {!r}'
                         .format(name, value))
    return int(value)


_seeded_states = threading.local()


def _seeded_state(seed):
    """The stream of ``numpy.random.RandomState(seed)``, from this thread's
    reused state, reseeded.

    Constructing a ``RandomState`` from a seed first seeds it from the
    operating system's entropy (about 0.2 ms, a tenth of a small fit), then
    reseeds it; :meth:`~numpy.random.RandomState.seed` alone gives the same
    stream (and checks the seed alike).  A fit never keeps its state nor
    calls another fit while drawing from it, so one state per thread is
    enough.
    """
    state = getattr(_seeded_states, 'state', None)
    if state is None:
        state = _seeded_states.state = numpy.random.RandomState(0)
    state.seed(seed)
    return state


def _check_rng(xp, rng):
    """Return an ``xp.random.RandomState`` from None, a seed or a state."""
    if rng is None:
        return xp.random.RandomState()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if xp is numpy:
            return _seeded_state(int(rng))
        return xp.random.RandomState(int(rng))
    if isinstance(rng, xp.random.RandomState):
        return rng
    if hasattr(rng, 'randint'):
        # A state of the other array module: derive a seed from it.
        return xp.random.RandomState(int(rng.randint(0, 2 ** 31 - 1)))
    raise TypeError('rng must be None, an integer seed or a RandomState, '
                    'got {!r}'.format(type(rng)))


def check_fit_settings(n_components, kmeans_iters=1, em_iters=1,
                       n_trials=None, sample_ratio=1.0, min_weight=0.01,
                       reg_covar=1e-6):
    """Validate the settings of :func:`fit_gmm`.

    Raises a ValueError naming the bad setting.

    Returns:
        tuple: ``(kmeans_iters, em_iters, n_trials)`` as ints, ``n_trials``
        defaulting to ``2 + floor(ln K)``.
    """
    if (not isinstance(n_components, numbers.Integral)
            or isinstance(n_components, bool) or n_components < 1):
        raise ValueError('n_components must be a positive integer, got {!r}'
                         .format(n_components))
    kmeans_iters = _check_iters('kmeans_iters', kmeans_iters)
    em_iters = _check_iters('em_iters', em_iters)
    if n_trials is None:
        n_trials = mixture_steps.default_n_trials(n_components)
    elif (not isinstance(n_trials, numbers.Integral) or n_trials < 1):
        raise ValueError('n_trials must be a positive integer, got {!r}'
                         .format(n_trials))
    if not 0 < sample_ratio <= 1:
        raise ValueError('sample_ratio must be in (0, 1], got {!r}'
                         .format(sample_ratio))
    if not 0 <= min_weight < 1:
        raise ValueError('min_weight must be in [0, 1), got {!r}'
                         .format(min_weight))
    if not reg_covar >= 0:
        raise ValueError('reg_covar must be non-negative, got {!r}'
                         .format(reg_covar))
    return kmeans_iters, em_iters, int(n_trials)


# ---------------------------------------------------------------------------
# The steps on their own


def kmeans_plusplus(points, n_components, n_trials=None, rng=None):
    """Greedy K-means++ seeding (Arthur & Vassilvitskii; DESIGN §1.1).

    The first centre is a uniformly random point; each further centre is
    the best of ``n_trials`` candidates drawn with probability proportional
    to ``D(x)^2`` (the squared distance to the nearest chosen centre): the
    one that lowers the total potential most.  On the GPU nothing is copied
    to the host.  The fit's own seeding
    (:func:`mn_chainer.mixture_steps.kmeans_plusplus`).

    Args:
        points: Array of shape ``(m, d)``.
        n_components (int): Number of centres ``K <= m``.
        n_trials (int): Candidates per centre; ``2 + floor(ln K)`` if None.
        rng: None, an integer seed, or an ``xp.random.RandomState``.

    Returns:
        tuple: ``centers (K, d)`` and ``indices (K,)`` of the chosen points.
    """
    xp, points = _check_points(points, n_components)
    if n_trials is None:
        n_trials = mixture_steps.default_n_trials(n_components)
    elif (not isinstance(n_trials, numbers.Integral) or n_trials < 1):
        raise ValueError('n_trials must be a positive integer, got {!r}'
                         .format(n_trials))
    passes_type = fit_passes.select_passes(xp, points)
    centers, indices, _ = mixture_steps.kmeans_plusplus(
        xp, points, n_components, int(n_trials), _check_rng(xp, rng),
        passes_type.seeding(xp, points, n_components))
    return centers, indices


def kmeans(points, centers, n_iter=1):
    """Lloyd iterations from the given centres.

    An empty cluster keeps its previous centre.

    Args:
        points: Array of shape ``(m, d)``.
        centers: Initial centres, array of shape ``(K, d)``.
        n_iter (int): Number of assignment + update steps (``>= 1``).

    Returns:
        tuple: ``centers (K, d)`` and the last assignment ``labels (m,)``.
    """
    xp, points = _check_points(points, numpy.shape(centers)[0])
    n_iter = _check_iters('n_iter', n_iter)
    passes_type = fit_passes.select_passes(xp, points)
    return mixture_steps.lloyd(
        xp, points, xp.asarray(centers, dtype=points.dtype), max(n_iter, 1),
        functools.partial(passes_type.hard_assign, xp))


def posterior(points, mixture, check_finite=True):
    """Responsibilities ``tau[i, k]`` of every point under ``mixture``.

    Computed in log space with log-sum-exp, so rows sum to one even for
    points far from every component; values below the smallest normal
    float are zero (:func:`mn_chainer.mixture_steps.exp_normal`).

    Args:
        points: Array of shape ``(m, d)``.
        mixture (Mixture): The mixture (weights, means, variances).
        check_finite (bool): Whether to check the points for NaN and Inf
            (:class:`NonFiniteError`); False spares a pass over them where
            the caller has checked.

    Returns:
        Array of shape ``(m, K)``.
    """
    xp, points = _check_points(points, 1, check_finite)
    return mixture_steps.exp_normal(
        xp, _log_posterior(xp, points, mixture)[0])


def log_likelihood(points, mixture):
    """Mean log-likelihood of the points under ``mixture`` (a float)."""
    xp, points = _check_points(points, 1)
    return float(_log_posterior(xp, points, mixture)[1].mean())


def _log_posterior(xp, points, mixture):
    """The E-step of the points' backend, in the frame of the mixture's
    mean: log responsibilities ``(m, K)`` and log normalizers ``(m,)``.

    Where a squared distance overflows (finite points ``1e19`` away from a
    component in float32), the E-step is taken again on the points and
    mixture scaled by a power of two (the posterior does not change; the
    log-density gains ``d log(scale)``); :class:`NonFiniteError` where that
    is not finite either (NaN points not checked by the caller).
    """
    mixture = Mixture(*(xp.asarray(a, dtype=points.dtype) for a in mixture))
    shift = mixture.weights @ mixture.means
    mixture = mixture._replace(means=mixture.means - shift)
    passes_type = fit_passes.select_passes(xp, points)
    with numpy.errstate(invalid='ignore', over='ignore'):  # checked below
        log_resp, log_norm = passes_type(xp, points, shift).log_posterior(
            mixture)
    if bool(xp.isfinite(log_norm).all()):
        return log_resp, log_norm
    x = points - shift
    magnitude = float(max(x.max(), -x.min(), xp.abs(mixture.means).max()))
    if math.isfinite(magnitude) and magnitude > 0:
        scale = 2.0 ** -math.ceil(math.log2(magnitude))
        x *= x.dtype.type(scale)
        tiny = numpy.finfo(points.dtype).tiny
        log_resp, log_norm = passes_type(
            xp, x, xp.zeros_like(shift)).log_posterior(mixture._replace(
                means=mixture.means * scale,
                variances=xp.maximum(mixture.variances * (scale * scale),
                                     tiny)))
        # p(x) = p'(scale x) scale^d.
        log_norm = log_norm + points.shape[1] * math.log(scale)
    if not bool(xp.isfinite(log_norm).all()):
        raise NonFiniteError(
            'the posterior is not finite: the points contain NaN or Inf, or '
            'the mixture is not finite or has a zero variance')
    return log_resp, log_norm


def centre(points, mixture):
    """Translate points and mixture by the mixture's mean (in ``points``'
    dtype).

    Posteriors and log-likelihoods do not change under a common
    translation, but the expanded distances of the E-step cancel in float32
    when ``|mean| >> sd``; centring avoids that.

    Returns:
        tuple: ``(points - shift, mixture with means - shift)``.
    """
    mixture = Mixture(*(a.astype(points.dtype, copy=False) for a in mixture))
    shift = mixture.weights @ mixture.means
    return points - shift, mixture._replace(means=mixture.means - shift)


# ---------------------------------------------------------------------------
# The fit


def fit_gmm(points, n_components, kmeans_iters=1, em_iters=1, n_trials=None,
            sample_ratio=1.0, min_weight=0.01, reg_covar=1e-6, rng=None,
            return_posterior=False, centers=None, reducer=None):
    """Fit a diagonal Gaussian mixture as Mixture Normalization does.

    K-means++ seeding, ``kmeans_iters`` Lloyd iterations, initialisation
    from the clusters, ``em_iters`` EM iterations, posterior of every point
    and pruning of components lighter than ``min_weight`` (DESIGN §1.1;
    paper §3.2, §5.1, §5.3).

    Args:
        points: Array of shape ``(m, d)`` (NumPy or CuPy; lists and other
            array-likes are taken as NumPy arrays), ``d >= 1``.  float16 is
            fitted in float32; float32 and float64 keep their precision
            (in the machine's byte order).
        n_components (int): Number of components ``K`` (``m >= K``).
        kmeans_iters (int): Lloyd iterations (the mixture is initialised
            from the last hard assignment; 0 assigns to the seeds).
        em_iters (int): EM iterations (E-step then M-step).
        n_trials (int): K-means++ candidates per centre, default
            ``2 + floor(ln K)``.
        sample_ratio (float): Fraction of the points, drawn at random, that
            the mixture is fitted on (the posterior covers all points).
        min_weight (float): Components whose mean responsibility over all
            points is below this are dropped (``0`` keeps all).
        reg_covar (float): Variance floor added to every variance.
        rng: None, an integer seed or an ``xp.random.RandomState``; a fixed
            seed gives identical results.
        return_posterior (bool): Also return the ``(m, K_eff)`` posterior.
        centers: Optional initial centres ``(K, d)``; skips K-means++.
        reducer (Reducer): For data-parallel fits: sums the sufficient
            statistics over the workers, so that every worker fits the
            mixture of the union of their points
            (:mod:`mn_chainer.data_parallel`).  None fits the local points
            alone.

    Returns:
        Mixture: the pruned mixture (``n_components`` is the effective K),
        or ``(mixture, resp)`` when ``return_posterior`` is True.

    Points whose squares would overflow (float32 beyond about ``1e14``)
    are fitted scaled by a power of two, which is exact, and the mixture is
    scaled back.

    Raises:
        NonFiniteError: The points hold NaN or Inf, or the fitted variances
            exceed the largest number of the points' dtype.
    """
    # The NaN/Inf check is folded into the fit's first pass (_fit_gmm).
    xp, points = _check_points(points, n_components, check_finite=False)
    kmeans_iters, em_iters, n_trials = check_fit_settings(
        n_components, kmeans_iters, em_iters, n_trials, sample_ratio,
        min_weight, reg_covar)
    rng = _check_rng(xp, rng)
    if centers is not None:
        centers = xp.asarray(centers, dtype=points.dtype)
        if centers.shape != (n_components, points.shape[1]):
            raise ValueError('centers must have shape {}, got {}'.format(
                (n_components, points.shape[1]), centers.shape))
    mixture, log_resp = _fit_gmm(
        xp, points, n_components, kmeans_iters, em_iters, n_trials,
        sample_ratio, min_weight, reg_covar, rng, centers, reducer,
        need_posterior=return_posterior)
    if return_posterior:
        return mixture, mixture_steps.exp_normal(xp, log_resp)
    return mixture


def _fit_gmm(xp, points, n_components, kmeans_iters, em_iters, n_trials,
             sample_ratio, min_weight, reg_covar, rng, centers=None,
             reducer=None, need_posterior=True):
    """The fit of :func:`fit_gmm` on validated input.

    Returns:
        tuple: The pruned mixture and the ``(m, K_eff)`` log posterior of
        every point, or None in its place when neither ``need_posterior``
        nor pruning (``min_weight > 0``) calls for that last pass.
    """
    m = points.shape[0]
    # With a reducer the workers share `rng` (same seed, same draws: the
    # seeding is the same everywhere) and draw their local subsamples from
    # a per-worker stream, split off `rng` only where a subsample is drawn
    # (under conditions that are the same on every worker).
    worker_rng = []

    def local_rng():
        if reducer is None:
            return rng
        if not worker_rng:
            worker_rng.append(
                data_parallel.worker_random_state(xp, rng, reducer))
        return worker_rng[0]

    index = None
    if sample_ratio < 1:
        rs = local_rng()
        n_sample = min(m, max(n_components, int(math.ceil(sample_ratio * m))))
        if n_sample < m:
            index = rs.choice(m, size=n_sample, replace=False)
    passes_type = fit_passes.select_passes(xp, points)
    first = None
    if centers is None and reducer is None and index is None:
        # K-means++'s first centre is drawn now (its draw comes first in
        # any case), so that a backend may measure its distances in the
        # pass of the column sums.
        first = rng.randint(0, m, size=1).astype(numpy.int64)
    column_sums, magnitude, first_d2 = passes_type.column_stats(
        xp, points, None if first is None else points[first[0]])
    magnitudes = xp.zeros(1 if reducer is None else reducer.size,
                          column_sums.dtype)
    magnitudes[0 if reducer is None else reducer.rank] = magnitude
    total, count, magnitudes = data_parallel.allreduce_packed(
        xp, reducer, column_sums, xp.full(1, m, column_sums.dtype),
        magnitudes)
    # One transfer to the host (a synchronisation on the GPU) for the
    # decisions: NaN/Inf, the number of points, the rescaling.
    sums_finite, n_total, magnitude = mixture_steps.to_host(xp.stack([
        xp.isfinite(total).all(), count[0], magnitudes.max()]).astype(
            numpy.float64)).tolist()
    if not sums_finite:
        # A NaN or Inf makes its column's sum non-finite (the check of
        # every point is spared where they are finite).
        _check_finite(xp, points)
    n_total = int(n_total)
    # Fit centred points (a diagonal mixture is translation invariant):
    # E[x^2] - mu^2 and the distance expansions cancel catastrophically in
    # float32 when |mean| >> sd.
    shift = (total / count).astype(points.dtype)
    scale = 2.0 ** -_rescaling(magnitude, points.dtype, n_total,
                               points.shape[1])
    if scale != 1:
        points = points * points.dtype.type(scale)  # exact
        shift = shift * points.dtype.type(scale)
        reg_covar = _scaled_reg_covar(reg_covar, scale, points.dtype)
        first_d2 = None
        if centers is not None:
            centers = centers * points.dtype.type(scale)
    sample = points if index is None else points[index]
    passes = passes_type(xp, sample, shift)

    labels = None
    if centers is None:
        if reducer is None:
            # K-means++ does not depend on the origin: each backend gives
            # the points (and their origin) it seeds best on.
            seed_points, seed_origin = passes.seed_points()
        else:
            seed_points, seed_origin = data_parallel.gather_points(
                xp, passes.x, reducer, local_rng, n_total), 0
        centers, _, seed_labels = mixture_steps.kmeans_plusplus(
            xp, seed_points, n_components, n_trials, rng,
            passes_type.seeding(xp, seed_points, n_components), first=first,
            first_d2=first_d2)
        centers = centers - seed_origin
        if reducer is None:
            labels = seed_labels  # the assignment to the seeds
    else:
        centers = centers - shift
    if kmeans_iters > 1 or labels is None:
        # The mixture starts from the last assignment's clusters, so the
        # last Lloyd iteration's centre update would go unused.
        _, labels = mixture_steps.lloyd(
            xp, passes.x, centers, max(kmeans_iters, 1),
            functools.partial(passes_type.hard_assign, xp), reducer,
            update_last=False, labels=labels)
    mixture = passes.cluster_m_step(labels, n_components, reg_covar, reducer)
    for _ in range(em_iters):
        mixture = passes.em_step(mixture, reg_covar, reducer)

    log_resp = None
    if need_posterior or min_weight > 0:
        if sample is not points:
            passes = passes_type(xp, points, shift)
        log_resp, _ = passes.log_posterior(mixture)
        mixture, log_resp = mixture_steps.prune(xp, mixture, log_resp,
                                                min_weight, reducer)
    if scale != 1:
        return _unscale(mixture, shift, scale), log_resp
    return mixture._replace(means=mixture.means + shift), log_resp
