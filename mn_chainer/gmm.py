"""Diagonal Gaussian mixtures fitted to mini-batch activations.

Mixture Normalization (Kalayeh & Shah, paper §3.2, §5.1) fits, for every
normalized layer and every mini-batch, one Gaussian mixture with ``K``
diagonal components to the layer's *points*: the ``C``-dimensional channel
vectors ``x[n, :, h, w]``.  The fit happens outside the autograd graph:

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

Every function here is array-generic: NumPy in gives NumPy out, CuPy in gives
CuPy out on the same device.  This module imports neither Chainer nor CuPy
at module level, so it works with NumPy alone (1.26 or 2.x).  On the GPU the
E-step and the K-means++ distance update run as fused CUDA kernels
(:mod:`mn_chainer.kernels`); on the CPU, where the optional C extension is
built, every pass over the points runs as a C kernel
(:mod:`mn_chainer.cpu_kernels`, :class:`_KernelPasses`).  The NumPy code
below (:class:`_ArrayPasses`) is the reference of both.

The private helpers take ``xp`` first and assume validated input, in the
manner of scikit-learn's ``sklearn.mixture`` module.
"""
import collections
import math
import numbers

import numpy


class Mixture(collections.namedtuple('Mixture',
                                     ('weights', 'means', 'variances'))):
    """Parameters of a diagonal Gaussian mixture (immutable).

    Attributes:
        weights: Mixing weights ``pi_k``, array of shape ``(K,)``, summing
            to one.
        means: Component means ``mu_k``, array of shape ``(K, d)``.
        variances: Per-dimension component variances ``var_k``, array of
            shape ``(K, d)``.
    """

    __slots__ = ()

    @property
    def n_components(self):
        """Number of components (the *effective K* after pruning)."""
        return int(self.weights.shape[0])


def get_array_module(x):
    """Return :mod:`cupy` for CuPy arrays and :mod:`numpy` otherwise.

    CuPy is imported only when ``x`` is a CuPy array.
    """
    if type(x).__module__.split('.')[0] == 'cupy':
        import cupy
        return cupy
    return numpy


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


def _compute_dtype(dtype):
    dtype = numpy.dtype(dtype)
    if dtype.kind != 'f':
        raise TypeError('points must be floating point, got dtype {}'
                        .format(dtype))
    # float16 is fitted in float32 (like Chainer's batch normalization).
    return numpy.dtype(numpy.float32) if dtype.itemsize < 4 else dtype


def _check_points(points, n_components, check_finite=True):
    if points.ndim != 2:
        raise ValueError('points must be a 2-D array (n_samples, n_features),'
                         ' got {} dimension(s) with shape {}'
                         .format(points.ndim, points.shape))
    dtype = _compute_dtype(points.dtype)
    if (not isinstance(n_components, numbers.Integral)
            or isinstance(n_components, bool) or n_components < 1):
        raise ValueError('n_components must be a positive integer, got {!r}'
                         .format(n_components))
    if points.shape[0] < n_components:
        raise ValueError(
            'n_samples={} should be >= n_components={}: there are fewer '
            'points than mixture components'.format(points.shape[0],
                                                    n_components))
    xp = get_array_module(points)
    points = points.astype(dtype, copy=False)
    if check_finite:
        _check_finite(xp, points)
    return xp, points


def _check_finite(xp, points, column_sums=None):
    """ValueError if ``points`` holds NaN or Inf.

    ``column_sums`` (the sums of the columns, which a NaN or Inf makes
    non-finite) spare the full check where they are finite.
    """
    if column_sums is not None and bool(xp.isfinite(column_sums).all()):
        return
    if not bool(xp.isfinite(points).all()):
        raise ValueError('points contain NaN or Inf (non-finite values)')


def _check_iters(name, value):
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or value < 0):
        raise ValueError('{} must be a non-negative integer, got {!r}'
                         .format(name, value))
    return int(value)


def _check_rng(xp, rng):
    """Return an ``xp.random.RandomState`` from None, a seed or a state."""
    if rng is None:
        return xp.random.RandomState()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return xp.random.RandomState(int(rng))
    if isinstance(rng, xp.random.RandomState):
        return rng
    if hasattr(rng, 'randint'):
        # A state of the other array module: derive a seed from it.
        return xp.random.RandomState(int(rng.randint(0, 2 ** 31 - 1)))
    raise TypeError('rng must be None, an integer seed or a RandomState, '
                    'got {!r}'.format(type(rng)))


def _default_n_trials(n_components):
    return 2 + int(math.log(n_components))


# ---------------------------------------------------------------------------
# Array kernels (NumPy twins of mn_chainer.kernels)


def _use_kernels(xp):
    return xp is not numpy


def _cpu_kernels(xp, x):
    """:mod:`mn_chainer.cpu_kernels` where its C kernels can run the passes
    over the NumPy points ``x`` (built, not disabled, float32 or float64,
    C-contiguous), else None (the NumPy code below runs)."""
    if (xp is not numpy or x.dtype.char not in 'fd'
            or not x.flags.c_contiguous):
        return None
    from mn_chainer import cpu_kernels
    return cpu_kernels if cpu_kernels.available() else None


def _candidate_d2(xp, points, candidates, closest_d2, points_sq=None):
    """Squared distance to the nearest centre if ``candidates[t]`` is added.

    Returns an array of shape ``(T, m)``:
    ``min(closest_d2[i], ||points[i] - candidates[t]||^2)``.  The NumPy path
    uses the expansion ``|x|^2 - 2 x.c + |c|^2`` (one matrix product),
    clipped at zero where rounding makes it negative; the CUDA and C twins
    (:func:`mn_chainer.kernels.kmeanspp_candidate_d2`,
    :func:`mn_chainer.cpu_kernels.candidate_d2`) sum direct differences.
    """
    if _use_kernels(xp):
        from mn_chainer import kernels
        return kernels.kmeanspp_candidate_d2(points, candidates, closest_d2)
    cpu = _cpu_kernels(xp, points)
    if cpu is not None:
        return cpu.candidate_d2(points, candidates, closest_d2)
    if points_sq is None:
        points_sq = _row_norms_sq(xp, points)
    # One matrix-vector product per candidate: BLAS streams the points at
    # memory speed in a product with one column, where a product with a few
    # columns runs at a third of it.  Chunks of rows of about
    # 2 * BLOCK_BYTES stay in cache from one candidate to the next.
    m, d = points.shape
    d2 = xp.empty((candidates.shape[0], m), dtype=points.dtype)
    rows = max(1, 4 * BLOCK_BYTES // (d * points.dtype.itemsize))
    for start in range(0, m, rows):
        xp.matmul(points[start:start + rows], candidates[:, :, None],
                  out=d2[:, start:start + rows, None])
    d2 *= -2
    d2 += points_sq[None, :]
    d2 += (candidates * candidates).sum(axis=1)[:, None]
    xp.maximum(d2, 0, out=d2)
    xp.minimum(d2, closest_d2[None, :], out=d2)
    return d2


def _row_norms_sq(xp, points):
    """``|x_i|^2`` of every row, shape ``(m,)``."""
    if xp is numpy:
        return numpy.einsum('ij,ij->i', points, points)
    return (points * points).sum(axis=1)


def _logsumexp(xp, a):
    amax = a.max(axis=1, keepdims=True)
    amax = xp.where(xp.isfinite(amax), amax, 0)
    out = xp.log(xp.exp(a - amax).sum(axis=1, keepdims=True)) + amax
    return out[:, 0]


def _gaussian_terms(xp, log_weights, means, precisions):
    """``log p(x, k) = [x, x^2] @ coef[:, k] + const[k]`` (NumPy E-step).

    Expanding ``sum_j prec_kj (x_j - mu_kj)^2`` (as scikit-learn does) makes
    the log-densities of all components one matrix product.

    Returns:
        tuple: ``coef (2d, K)`` and ``const (K,)``.
    """
    d = means.shape[1]
    coef = xp.concatenate((means * precisions, -0.5 * precisions), axis=1).T
    const = log_weights - 0.5 * (
        d * math.log(2 * math.pi) + (means * means * precisions).sum(axis=1)
        - xp.log(precisions).sum(axis=1))
    return xp.ascontiguousarray(coef), const


def _estimate_log_resp(xp, points, log_weights, means, precisions,
                       points_sq=None, augmented=None, terms=None):
    """E-step in log space: log responsibilities and log normalizers.

    ``log p(x_i, k) = log pi_k - (d log 2pi - sum_j log prec_kj
    + sum_j prec_kj (x_ij - mu_kj)^2) / 2`` and ``log_norm_i =
    logsumexp_k log p(x_i, k)``.

    Args:
        points: ``(m, d)``.
        log_weights: ``(K,)``; ``-inf`` marks an absent component.
        means: ``(K, d)``.
        precisions: ``(K, d)``, the inverse variances.
        points_sq: Optional ``points ** 2`` (reused across EM iterations).
        augmented: Optional ``[points, points ** 2]`` of shape ``(m, 2d)``:
            the NumPy path then needs a single matrix product.
        terms: Optional :func:`_gaussian_terms` of these parameters (NumPy;
            computed once for a pass over many row blocks).

    Returns:
        tuple: ``log_resp (m, K)`` and ``log_norm (m,)``.
    """
    if _use_kernels(xp):
        from mn_chainer import kernels
        return kernels.estep_log_resp(xp.ascontiguousarray(points),
                                      log_weights, means, precisions)
    if terms is None:
        terms = _gaussian_terms(xp, log_weights, means, precisions)
    coef, const = terms
    if augmented is not None:
        log_prob = augmented @ coef
    else:
        if points_sq is None:
            points_sq = points * points
        d = points.shape[1]
        log_prob = points @ coef[:d]
        log_prob += points_sq @ coef[d:]
    log_prob += const
    log_norm = _logsumexp(xp, log_prob)
    log_prob -= log_norm[:, None]
    return log_prob, log_norm


def _exp_normal(xp, log_p):
    """``exp(log_p)``, with results below the smallest normal float set to 0.

    Such results (below ``1.2e-38`` in float32, ``2.2e-308`` in float64)
    are subnormal numbers, which keep a few significant bits at most and
    make every later product with them tens of times slower on x86 CPUs;
    the posterior of a well separated mixture is full of them.
    """
    tiny = math.log(numpy.finfo(log_p.dtype).tiny)
    return xp.where(log_p < tiny, 0, xp.exp(log_p))


def _log(xp, a):
    """``log(a)`` with ``log(0) = -inf`` and no warning."""
    with numpy.errstate(divide='ignore'):
        return xp.log(a)


# ---------------------------------------------------------------------------
# Steps, named by what they return (as sklearn.mixture)


def estimate_gaussian_parameters(points, resp, reg_covar, points_sq=None):
    """M-step statistics of diagonal Gaussians from responsibilities.

    Args:
        points: Array of shape ``(m, d)``.
        resp: Responsibilities, array of shape ``(m, K)``.
        reg_covar (float): Floor added to every variance.
        points_sq: Optional precomputed ``points ** 2``.

    Returns:
        tuple: ``nk (K,)`` (responsibility sums plus ``10 * eps`` so that an
        empty component stays finite), ``means (K, d)`` and
        ``variances (K, d)`` (``E[x^2] - mu^2 + reg_covar``, never below
        ``reg_covar``).
    """
    xp = get_array_module(points)
    if points_sq is None:
        points_sq = points * points
    sums = xp.concatenate((resp.T @ points, resp.T @ points_sq), axis=1)
    return _gaussians_from_sums(xp, resp.sum(axis=0), sums, reg_covar)


def _weighted_sums(xp, augmented, resp):
    """``sum_i resp_ik`` (K,) and ``sum_i resp_ik [x_i, x_i^2]`` (K, 2d)."""
    return resp.sum(axis=0), resp.T @ augmented


def _gaussians_from_sums(xp, nk, sums, reg_covar):
    """``(nk, means, variances)`` from responsibility-weighted sums."""
    d = sums.shape[1] // 2
    nk = nk + 10 * numpy.finfo(sums.dtype).eps
    means = sums[:, :d] / nk[:, None]
    variances = xp.maximum(sums[:, d:] / nk[:, None] - means * means, 0)
    return nk, means, variances + reg_covar


def kmeans_plusplus(points, n_components, n_trials=None, rng=None):
    """Greedy K-means++ seeding (Arthur & Vassilvitskii; DESIGN §1.1).

    The first centre is a uniformly random point; each further centre is
    the best of ``n_trials`` candidates drawn with probability proportional
    to ``D(x)^2`` (the squared distance to the nearest chosen centre): the
    one that lowers the total potential most.  On the GPU nothing is copied
    to the host.

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
        n_trials = _default_n_trials(n_components)
    elif (not isinstance(n_trials, numbers.Integral) or n_trials < 1):
        raise ValueError('n_trials must be a positive integer, got {!r}'
                         .format(n_trials))
    centers, indices, _ = _kmeans_plusplus(
        xp, points, n_components, int(n_trials), _check_rng(xp, rng))
    return centers, indices


def _kmeans_plusplus(xp, points, n_components, n_trials, rng,
                     points_sq_sum=None, first=None, first_d2=None):
    """Greedy K-means++; also returns the nearest seed of every point.

    ``first`` (the index of the first centre, drawn from ``rng`` by the
    caller) and ``first_d2`` (the squared distances to it), if given, spare
    the first draw and pass.

    Returns:
        tuple: ``centers (K, d)``, ``indices (K,)`` and ``labels (m,)``, the
        index of the nearest centre of every point (the first on a tie), as
        a Lloyd assignment to the seeds would give it: the seeding tracks
        it for free.
    """
    m = points.shape[0]
    if (points_sq_sum is None and not _use_kernels(xp)
            and _cpu_kernels(xp, points) is None):
        points_sq_sum = _row_norms_sq(xp, points)
    indices = xp.empty(n_components, dtype=numpy.int64)
    if first is None:
        first = rng.randint(0, m, size=1).astype(numpy.int64)
    indices[0:1] = first
    if first_d2 is None:
        first_d2 = _candidate_d2(
            xp, points, points[first], xp.full(m, numpy.inf, points.dtype),
            points_sq_sum)[0]
    closest_d2 = xp.ascontiguousarray(first_d2)
    labels = xp.zeros(m, dtype=numpy.int64)
    for c in range(1, n_components):
        cumulative = xp.cumsum(closest_d2)
        targets = rng.random_sample(n_trials).astype(points.dtype)
        targets *= cumulative[-1]
        candidates = xp.searchsorted(cumulative, targets)
        candidates = xp.minimum(candidates, m - 1)
        d2 = _candidate_d2(xp, points, points[candidates], closest_d2,
                           points_sq_sum)
        best = xp.argmin(d2.sum(axis=1))
        new_d2 = xp.ascontiguousarray(d2[best])
        labels = xp.where(new_d2 < closest_d2, c, labels)
        closest_d2 = new_d2
        indices[c:c + 1] = candidates[best:best + 1]
    return points[indices], indices, labels


def _hard_assign(xp, points, centers):
    """Index of the nearest centre of every point, shape ``(m,)``.

    The CUDA twin is :func:`mn_chainer.kernels.kmeans_assign`.
    """
    if _use_kernels(xp):
        from mn_chainer import kernels
        return kernels.kmeans_assign(xp.ascontiguousarray(points),
                                     centers)[0]
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin.
    scores = points @ centers.T
    scores *= -2
    scores += (centers * centers).sum(axis=1)[None, :]
    return scores.argmin(axis=1)


def _one_hot(xp, labels, n_components, dtype):
    return (labels[:, None] == xp.arange(n_components)[None, :]).astype(dtype)


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
    xp, points = _check_points(points, centers.shape[0])
    n_iter = _check_iters('n_iter', n_iter)
    return _kmeans(xp, points, centers.astype(points.dtype), max(n_iter, 1))


def _kmeans(xp, points, centers, n_iter, reducer=None, update_last=True,
            labels=None):
    """Lloyd iterations; ``labels``, if given, is the assignment to
    ``centers`` (from the seeding), which spares the first one."""
    n_components = centers.shape[0]
    for i in range(n_iter):
        if i > 0 or labels is None:
            labels = _hard_assign(xp, points, centers)
        if i == n_iter - 1 and not update_last:
            break  # the caller needs the assignment only
        one_hot = _one_hot(xp, labels, n_components, points.dtype)
        counts, sums = _allreduce(xp, reducer, one_hot.sum(axis=0),
                                  one_hot.T @ points)
        centers = xp.where(counts[:, None] > 0,
                           sums / xp.maximum(counts, 1)[:, None], centers)
    return centers, labels


def _e_step(xp, points, mixture, points_sq=None, augmented=None):
    return _estimate_log_resp(xp, points, _log(xp, mixture.weights),
                              mixture.means, 1 / mixture.variances, points_sq,
                              augmented)


def posterior(points, mixture):
    """Responsibilities ``tau[i, k]`` of every point under ``mixture``.

    Computed in log space with log-sum-exp, so rows sum to one even for
    points far from every component.

    Args:
        points: Array of shape ``(m, d)``.
        mixture (Mixture): The mixture (weights, means, variances).

    Returns:
        Array of shape ``(m, K)``.
    """
    xp, points = _check_points(points, 1)
    points, mixture = centre(points, mixture)
    return _exp_normal(xp, _e_step(xp, points, mixture)[0])


def log_likelihood(points, mixture):
    """Mean log-likelihood of the points under ``mixture`` (a float)."""
    xp, points = _check_points(points, 1)
    points, mixture = centre(points, mixture)
    return float(_e_step(xp, points, mixture)[1].mean())


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
        n_trials = _default_n_trials(n_components)
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


def fit_gmm(points, n_components, kmeans_iters=1, em_iters=1, n_trials=None,
            sample_ratio=1.0, min_weight=0.01, reg_covar=1e-6, rng=None,
            return_posterior=False, centers=None, reducer=None):
    """Fit a diagonal Gaussian mixture as Mixture Normalization does.

    K-means++ seeding, ``kmeans_iters`` Lloyd iterations, initialisation
    from the clusters, ``em_iters`` EM iterations, posterior of every point
    and pruning of components lighter than ``min_weight`` (DESIGN §1.1;
    paper §3.2, §5.1, §5.3).

    Args:
        points: Array of shape ``(m, d)`` (NumPy or CuPy).  float16 is fitted
            in float32; float32 and float64 keep their precision.
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
            mixture of the union of their points (see :class:`Reducer`).
            None fits the local points alone.

    Returns:
        Mixture: the pruned mixture (``n_components`` is the effective K),
        or ``(mixture, resp)`` when ``return_posterior`` is True.
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
        return mixture, _exp_normal(xp, log_resp)
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
            worker_rng.append(_worker_rng(xp, rng, reducer))
        return worker_rng[0]

    sample = points
    if sample_ratio < 1:
        rs = local_rng()
        n_sample = min(m, max(n_components, int(math.ceil(sample_ratio * m))))
        if n_sample < m:
            index = rs.choice(m, size=n_sample, replace=False)
            sample = points[index]
    # Fit centred points (a diagonal mixture is translation invariant):
    # E[x^2] - mu^2 and the distance expansions cancel catastrophically in
    # float32 when |mean| >> sd.
    passes_type = _passes_type(xp, points)
    first = first_d2 = None
    if (passes_type is _KernelPasses and centers is None and reducer is None
            and sample is points):
        # K-means++'s first centre is drawn now (its draw comes first in
        # any case), so that its distances come with the column sums.
        first = rng.randint(0, m, size=1).astype(numpy.int64)
        column_sums, first_d2 = _KernelPasses.column_sums(
            xp, points, points[first[0]])
    else:
        column_sums = passes_type.column_sums(xp, points)
    total, count = _allreduce(xp, reducer, column_sums,
                              xp.full(1, m, points.dtype))
    _check_finite(xp, points, total)
    shift = total / count
    passes = passes_type(xp, sample, shift)

    labels = None
    if centers is None:
        if reducer is None:
            # K-means++ does not depend on the origin: each kind of pass
            # gives the points (and their origin) it seeds best on.
            seed_points, seed_origin = passes.seed_points()
        else:
            seed_points, seed_origin = _gather_points(
                xp, passes.x, reducer, local_rng, int(_to_numpy(count)[0])), 0
        centers, _, seed_labels = _kmeans_plusplus(
            xp, seed_points, n_components, n_trials, rng, first=first,
            first_d2=first_d2)
        centers = centers - seed_origin
        if reducer is None:
            labels = seed_labels  # the assignment to the seeds
    else:
        centers = centers - shift
    if kmeans_iters > 1 or labels is None:
        # The mixture starts from the last assignment's clusters, so the
        # last Lloyd iteration's centre update would go unused.
        _, labels = _kmeans(xp, passes.x, centers, max(kmeans_iters, 1),
                            reducer, update_last=False, labels=labels)
    mixture = passes.cluster_m_step(labels, n_components, reg_covar, reducer)
    for _ in range(em_iters):
        mixture = passes.em_step(mixture, reg_covar, reducer)

    log_resp = None
    if need_posterior or min_weight > 0:
        if sample is not points:
            passes = passes_type(xp, points, shift)
        log_resp = passes.log_posterior(mixture)
        mixture, log_resp = _prune(xp, mixture, log_resp, min_weight,
                                   reducer)
    return mixture._replace(means=mixture.means + shift), log_resp


def _augment(xp, x):
    """``[x, x^2]``, shape ``(m, 2d)``."""
    d = x.shape[1]
    augmented = xp.empty((x.shape[0], 2 * d), dtype=x.dtype)
    augmented[:, :d] = x
    xp.multiply(x, x, out=augmented[:, d:])
    return augmented


#: Bytes of one row block of ``[x, x^2]`` in the NumPy passes of
#: :func:`fit_gmm` (see :class:`_RowBlocks`).
BLOCK_BYTES = 2 ** 19


class _RowBlocks(object):

    """The centred points in row blocks of ``[x, x^2]``, one pass at a time.

    A pass (the M-step from the clusters, each E-step with the M-step that
    follows it, the final posterior) visits every block once.  With NumPy a
    block of about :data:`BLOCK_BYTES` is built in one reused buffer, so
    that the E-step and the M-step of a block read it from the cache and no
    ``(m, 2d)`` array is ever allocated; with CuPy (and for small NumPy
    inputs) there is a single block, built once and kept.

    Iterating yields ``(rows, x[rows], augmented)`` with ``augmented =
    [x[rows], x[rows] ** 2]``, valid until the next block.
    """

    def __init__(self, xp, x):
        self.xp = xp
        self.x = x
        m, d = x.shape
        self.block_rows = m
        if xp is numpy:
            self.block_rows = max(
                1, BLOCK_BYTES // (2 * d * x.dtype.itemsize))
        self._whole = None

    def __iter__(self):
        xp, x = self.xp, self.x
        m, d = x.shape
        if self.block_rows >= m:
            if self._whole is None:
                self._whole = _augment(xp, x)
            yield slice(0, m), x, self._whole
            return
        buf = xp.empty((self.block_rows, 2 * d), dtype=x.dtype)
        for start in range(0, m, self.block_rows):
            rows = slice(start, min(start + self.block_rows, m))
            block = x[rows]
            augmented = buf[:block.shape[0]]
            augmented[:, :d] = block
            xp.multiply(block, block, out=augmented[:, d:])
            yield rows, block, augmented


def _mixture_from_sums(xp, nk, sums, reg_covar, reducer=None):
    nk, sums = _allreduce(xp, reducer, nk, sums)
    nk, means, variances = _gaussians_from_sums(xp, nk, sums, reg_covar)
    return Mixture(nk / nk.sum(), means, variances)


def _m_step_pass(xp, blocks, resp_of, reg_covar, reducer=None):
    """M-step over a pass: ``resp_of(rows, x, augmented)`` gives the
    ``(rows, K)`` responsibilities of a block (one-hot clusters, or an
    E-step: :func:`_responsibilities`)."""
    nk = sums = None
    for rows, x, augmented in blocks:
        block_nk, block_sums = _weighted_sums(
            xp, augmented, resp_of(rows, x, augmented))
        if nk is None:
            nk, sums = block_nk, block_sums
        else:
            nk += block_nk
            sums += block_sums
    return _mixture_from_sums(xp, nk, sums, reg_covar, reducer)


def _log_resp_of_blocks(xp, mixture):
    """E-step for the blocks of a pass: ``log_resp_of(x, augmented)`` gives
    the ``(rows, K)`` log responsibilities of a block under ``mixture`` (the
    Gaussian terms are computed once per pass)."""
    log_weights = _log(xp, mixture.weights)
    precisions = 1 / mixture.variances
    terms = None if _use_kernels(xp) else _gaussian_terms(
        xp, log_weights, mixture.means, precisions)

    def log_resp_of(x, augmented):
        return _estimate_log_resp(xp, x, log_weights, mixture.means,
                                  precisions, augmented=augmented,
                                  terms=terms)[0]
    return log_resp_of


def _responsibilities(xp, mixture):
    """``resp_of(rows, x, augmented)`` of an E-step, for
    :func:`_m_step_pass`.

    With NumPy the responsibilities are the softmax of the log-densities
    (max subtracted, exponentiated in place, divided by the row sums): the
    same numbers as ``exp(log_resp)`` in half the array operations, which
    count on small blocks.  Log-densities more than ``-log(tiny) / 2``
    below a row's maximum (43.7 in float32, 354 in float64) are raised to
    that floor before the exponential: the responsibilities they give (below
    ``1e-19`` in float32) weigh nothing next to the rounding of the sums,
    whereas subnormal numbers would slow the M-step's matrix product down
    about twofold on x86 CPUs (measured: bench_gmm, K = 5).
    """
    if _use_kernels(xp):
        log_resp_of = _log_resp_of_blocks(xp, mixture)
        return lambda rows, x, augmented: xp.exp(log_resp_of(x, augmented))
    coef, const = _gaussian_terms(xp, _log(xp, mixture.weights),
                                  mixture.means, 1 / mixture.variances)
    floor = 0.5 * math.log(numpy.finfo(coef.dtype).tiny)

    def resp_of(rows, x, augmented):
        resp = augmented @ coef
        resp += const
        resp -= resp.max(axis=1, keepdims=True)
        numpy.maximum(resp, floor, out=resp)
        numpy.exp(resp, out=resp)
        resp /= resp.sum(axis=1, keepdims=True)
        return resp
    return resp_of


def _passes_type(xp, points):
    """The passes a fit over ``points`` runs: :class:`_KernelPasses` where
    the C kernels apply, else :class:`_ArrayPasses`."""
    return _ArrayPasses if _cpu_kernels(xp, points) is None else _KernelPasses


class _ArrayPasses(object):

    """The passes of a fit over its points, with array operations.

    The points are centred once (``x = points - shift``); every pass (the
    M-step from hard clusters, an E-step with the M-step that follows it,
    the log posterior) runs on the row blocks of :class:`_RowBlocks`.  This
    is the NumPy reference of :class:`_KernelPasses` and the CuPy path (one
    block, fused CUDA E-step).
    """

    def __init__(self, xp, points, shift):
        self.xp = xp
        self.x = points - shift
        self.blocks = _RowBlocks(xp, self.x)

    @staticmethod
    def column_sums(xp, points):
        # A product with a vector of ones: BLAS streams the points at
        # memory speed, twice as fast as a NumPy reduction here.
        return xp.ones(points.shape[0], dtype=points.dtype) @ points

    def seed_points(self):
        """The points K-means++ runs on and their origin: the centred
        points (the NumPy distances expand ``|x - c|^2``)."""
        return self.x, 0

    def cluster_m_step(self, labels, n_components, reg_covar, reducer=None):
        """The mixture of the hard clusters ``labels``."""
        xp = self.xp
        return _m_step_pass(
            xp, self.blocks, lambda rows, x, augmented: _one_hot(
                xp, labels[rows], n_components, x.dtype), reg_covar, reducer)

    def em_step(self, mixture, reg_covar, reducer=None):
        """One EM iteration (E-step, then M-step) from ``mixture``."""
        return _m_step_pass(self.xp, self.blocks,
                            _responsibilities(self.xp, mixture), reg_covar,
                            reducer)

    def log_posterior(self, mixture):
        """Log responsibilities ``(m, K)`` of every point."""
        xp, blocks = self.xp, self.blocks
        log_resp_of = _log_resp_of_blocks(xp, mixture)
        log_resp = None
        for rows, x, augmented in blocks:
            block = log_resp_of(x, augmented)
            if rows.stop - rows.start == self.x.shape[0]:
                return block
            if log_resp is None:
                log_resp = xp.empty((self.x.shape[0], block.shape[1]),
                                    dtype=block.dtype)
            log_resp[rows] = block
        return log_resp


class _KernelPasses(object):

    """The passes of :class:`_ArrayPasses` with the C kernels of
    :mod:`mn_chainer.cpu_kernels` (NumPy, where they are built).

    Each pass reads the points once, as given, and centres every row in the
    cache: no centred copy is written, except for what needs one (Lloyd
    iterations after the first assignment, data-parallel seeding).
    """

    def __init__(self, xp, points, shift):
        from mn_chainer import cpu_kernels
        self.kernels = cpu_kernels
        self.xp = xp
        self.points = points
        self.shift = shift
        self._x = None

    @property
    def x(self):
        """The centred points (computed on first use)."""
        if self._x is None:
            self._x = self.points - self.shift
        return self._x

    @staticmethod
    def column_sums(xp, points, first=None):
        from mn_chainer import cpu_kernels
        return cpu_kernels.column_sums(points, first)

    def seed_points(self):
        """The points as given: the C distances are direct differences."""
        return self.points, self.shift

    def _terms(self, mixture):
        return _gaussian_terms(self.xp, _log(self.xp, mixture.weights),
                               mixture.means, 1 / mixture.variances)

    def cluster_m_step(self, labels, n_components, reg_covar, reducer=None):
        return _mixture_from_sums(
            self.xp, *self.kernels.cluster_sums(
                self.points, self.shift, labels, n_components),
            reg_covar=reg_covar, reducer=reducer)

    def em_step(self, mixture, reg_covar, reducer=None):
        return _mixture_from_sums(
            self.xp, *self.kernels.em_sums(self.points, self.shift,
                                           *self._terms(mixture)),
            reg_covar=reg_covar, reducer=reducer)

    def log_posterior(self, mixture):
        return self.kernels.log_resp(self.points, self.shift,
                                     *self._terms(mixture))


def _prune(xp, mixture, log_resp, min_weight, reducer=None):
    """Drop components lighter than ``min_weight`` (paper §5.3).

    The kept weights are renormalised, and so is the posterior (in log
    space), which equals the posterior under the pruned mixture.
    """
    if min_weight <= 0:
        return mixture, log_resp
    resp_sum, count = _allreduce(
        xp, reducer, _exp_normal(xp, log_resp).sum(axis=0),
        xp.full(1, log_resp.shape[0], log_resp.dtype))
    mean_resp = resp_sum / count
    keep = mean_resp >= min_weight
    keep[xp.argmax(mean_resp)] = True  # never drop every component
    keep = numpy.flatnonzero(_to_numpy(keep))  # one host sync per fit
    if keep.size == mixture.n_components:
        return mixture, log_resp
    keep = xp.asarray(keep)
    weights = mixture.weights[keep]
    mixture = Mixture(weights / weights.sum(), mixture.means[keep],
                      mixture.variances[keep])
    log_resp = log_resp[:, keep]
    log_resp = log_resp - _logsumexp(xp, log_resp)[:, None]
    return mixture, log_resp


# ---------------------------------------------------------------------------
# Data-parallel fits


class Reducer(object):

    """Sums arrays over the workers of a data-parallel job.

    :func:`fit_gmm` and :func:`mn_chainer.functions.mixture_normalization`
    take a reducer to fit and normalize by the statistics of the union of
    every worker's points: each step packs its sufficient statistics (the
    sums of the responsibilities and the responsibility-weighted sums of
    ``x`` and ``x^2``) into one buffer and sums it over the workers once.
    This base class is the single-worker reducer (the identity);
    :class:`mn_chainer.links.MultiNodeMixtureNormalization` uses a
    ChainerMN communicator.

    Attributes:
        rank (int): This worker's index.
        size (int): Number of workers.
    """

    rank = 0
    size = 1

    def allreduce(self, array):
        """Return the element-wise sum of ``array`` over the workers."""
        return array


#: Points gathered from all workers for the K-means++ seeding.
SEED_POINTS = 4096


def _allreduce(xp, reducer, *arrays):
    """Sum several arrays over the workers with one reduction."""
    if reducer is None or reducer.size == 1:
        return arrays
    flat = xp.concatenate([a.ravel() for a in arrays])
    flat = reducer.allreduce(flat)
    out, start = [], 0
    for a in arrays:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return tuple(out)


def _worker_rng(xp, rng, reducer):
    seed = int(_to_numpy(rng.randint(0, 2 ** 31 - 1, size=1))[0])
    return xp.random.RandomState((seed + reducer.rank) % (2 ** 32))


def _gather_points(xp, x, reducer, local_rng, total):
    """The union of all workers' points (ordered by rank), the same on all.

    Where there are more than ``SEED_POINTS`` points in all (``total``),
    every worker contributes ``SEED_POINTS // size`` of its points at most,
    drawn at random from ``local_rng()``.
    """
    if reducer.size == 1:
        return x
    n_local = x.shape[0]
    if total > SEED_POINTS:
        rs = local_rng()
        n_local = min(n_local, max(1, SEED_POINTS // reducer.size))
        if n_local < x.shape[0]:
            x = x[rs.choice(x.shape[0], size=n_local, replace=False)]
    counts = xp.zeros(reducer.size, dtype=x.dtype)
    counts[reducer.rank] = n_local
    counts, = _allreduce(xp, reducer, counts)
    counts = _to_numpy(counts).astype(numpy.int64)
    start = int(counts[:reducer.rank].sum())
    gathered = xp.zeros((int(counts.sum()), x.shape[1]), dtype=x.dtype)
    gathered[start:start + n_local] = x
    gathered, = _allreduce(xp, reducer, gathered)
    return gathered


def _to_numpy(a):
    if isinstance(a, numpy.ndarray):
        return a
    return a.get()
