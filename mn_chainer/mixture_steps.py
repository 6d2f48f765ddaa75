"""The steps of the mixture fit, named by what they compute.

This is the lowest room of the fit (DESIGN §1.1): array-generic functions on
validated input, in the manner of scikit-learn's ``sklearn.mixture`` module
(``_estimate_gaussian_parameters``, ``_estimate_log_gaussian_prob``,
``_kmeans_plusplus``).  Above it, :mod:`mn_chainer.fit_passes` runs these
steps over the points with one backend (NumPy arrays, the C kernels of
:mod:`mn_chainer.cpu_kernels`, the CUDA kernels of :mod:`mn_chainer.kernels`);
on top, :mod:`mn_chainer.gmm` is the public estimator that validates and
orchestrates.

* E-step: :func:`gaussian_log_terms`, :func:`estimate_log_prob`,
  :func:`estimate_log_resp`, :func:`responsibilities`.
* M-step: :func:`gaussian_sums`, :func:`gaussians_from_sums`
  (together :func:`estimate_gaussian_parameters`).
* K-means++: :func:`kmeans_plusplus` (with a backend's :class:`Seeding`).
* Lloyd: :func:`lloyd` (with a backend's assignment).
* Pruning: :func:`prune` (paper §5.3).

**Tiny values** (one rule for the three E-steps: NumPy here, C in
``_cpu_kernels_impl.h``, CUDA in :mod:`mn_chainer.kernels`): a log-density
more than ``log_floor(dtype) = ln(tiny) / 2`` below its point's largest
(-43.7 in float32, -354 in float64; ``dtype`` is the one the E-step
computes in: float64 in the NumPy passes) is raised to that floor before it
is exponentiated, in the log-sum-exp normalizer and in the responsibilities
that weigh the M-step's sums.  Such a term is below the rounding of the
largest one (``exp(floor) = sqrt(tiny)``), so the floor changes no result
beyond rounding, but no subnormal number is ever produced or summed (they
make x86 arithmetic tens of times slower).  Log responsibilities are
returned exact (``log p - log_norm``); posteriors returned to a caller are
set to zero below the smallest normal number (:func:`exp_normal`).

Every function takes the array module ``xp`` first (NumPy or CuPy) and
imports neither Chainer nor CuPy.
"""
import collections
import math

import numpy

from mn_chainer import data_parallel


#: Bytes of one row block of ``[x, x^2]`` in the NumPy passes of the fit
#: (:class:`mn_chainer.fit_passes.RowBlocks`): the E-step and the M-step of
#: a block read it from the cache.
BLOCK_BYTES = 2 ** 19


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


class NonFiniteError(ValueError):

    """Points, or the mixture fitted to them, that are not finite numbers.

    Raised by :func:`mn_chainer.gmm.fit_gmm` and :func:`mn_chainer.gmm.
    posterior` for points holding NaN or Inf, and where a fit to finite
    points cannot be represented in their dtype (variances beyond its
    largest number).  A subclass of :class:`ValueError`, so that callers
    catching that keep working.
    """


def get_array_module(x):
    """Return :mod:`cupy` for CuPy arrays and :mod:`numpy` otherwise.

    CuPy is imported only when ``x`` is a CuPy array.
    """
    if type(x).__module__.split('.')[0] == 'cupy':
        import cupy
        return cupy
    return numpy


def to_host(a):
    """A NumPy array of a NumPy or CuPy array (a copy for CuPy)."""
    if isinstance(a, numpy.ndarray):
        return a
    return a.get()


def compute_dtype(dtype):
    """The dtype statistics of ``dtype`` arrays are computed in.

    float16 is computed in float32 (as Chainer's batch normalization does);
    float32 and float64 keep their precision, in the machine's byte order
    (big-endian ``>f4`` points are computed in native float32).

    Raises:
        TypeError: ``dtype`` is not a floating type.
    """
    dtype = numpy.dtype(dtype)
    if dtype.kind != 'f':
        raise TypeError('expected floating point values, got dtype {}'
                        .format(dtype))
    if dtype.itemsize < 4:
        return numpy.dtype(numpy.float32)
    return dtype.newbyteorder('=')


def accumulation_dtype(dtype):
    """The dtype the NumPy passes accumulate ``dtype`` points in: float64
    (or wider).

    The squares of float32 numbers are exact in float64, and its sums
    neither cancel in ``E[x^2] - mu^2`` nor in the expanded E-step where a
    precision is large (module doc of :mod:`mn_chainer.fit_passes`).
    """
    return numpy.promote_types(dtype, numpy.float64)


def log_floor(dtype):
    """``ln(tiny) / 2`` of ``dtype``: the tiny-value floor (module doc)."""
    return 0.5 * math.log(numpy.finfo(dtype).tiny)


def exp_normal(xp, log_p):
    """``exp(log_p)``, with results below the smallest normal float set to 0.

    Such results (below ``1.2e-38`` in float32, ``2.2e-308`` in float64)
    are subnormal numbers, which keep a few significant bits at most and
    make every later product with them tens of times slower on x86 CPUs;
    the posterior of a well separated mixture is full of them.
    """
    tiny = math.log(numpy.finfo(log_p.dtype).tiny)
    return xp.where(log_p < tiny, 0, xp.exp(log_p))


def log_weights(xp, weights):
    """``log(weights)`` with ``log(0) = -inf`` (an absent component) and no
    warning."""
    if xp is not numpy:  # CuPy does not warn
        return xp.log(weights)
    # The logarithm of the non-zero weights only (cheaper than errstate).
    return numpy.log(weights, out=numpy.full(weights.shape, -numpy.inf,
                                             weights.dtype),
                     where=weights != 0)


# ---------------------------------------------------------------------------
# E-step


def gaussian_log_const(xp, mixture):
    """``log pi_k - sum_j log(2 pi var_kj) / 2``, shape ``(K,)``: the part
    of ``log pi_k N(x | mu_k, var_k)`` that does not depend on ``x``."""
    return log_weights(xp, mixture.weights) - 0.5 * xp.log(
        2 * math.pi * mixture.variances).sum(axis=1)


def gaussian_log_terms(xp, mixture):
    """The E-step's log-densities as one product: ``log pi_k p(x | k) =
    [x, x^2] @ coef[:, k] + const[k]``.

    Expanding ``sum_j prec_kj (x_j - mu_kj)^2`` (as scikit-learn does) makes
    the log-densities of all components one matrix product.  Its terms
    cancel where a precision is large, so the NumPy passes evaluate it in
    float64 (:func:`accumulation_dtype`), the C and CUDA E-steps take direct
    differences instead.

    Args:
        mixture (Mixture): The mixture (``weights`` may hold zeros).

    Returns:
        tuple: ``coef (2d, K)`` (C-contiguous) and ``const (K,)``.
    """
    means = mixture.means
    precisions = 1 / mixture.variances
    coef = xp.concatenate((means * precisions, -0.5 * precisions), axis=1).T
    const = gaussian_log_const(xp, mixture) - 0.5 * (
        means * means * precisions).sum(axis=1)
    return xp.ascontiguousarray(coef), const


def estimate_log_prob(xp, augmented, terms):
    """Weighted log-densities ``log pi_k + log N(x_i | mu_k, var_k)``.

    Args:
        augmented: ``[x, x^2]`` of the points, shape ``(m, 2d)``
            (:func:`augment`).
        terms: :func:`gaussian_log_terms` of the mixture.

    Returns:
        Array of shape ``(m, K)``.
    """
    coef, const = terms
    log_prob = augmented @ coef
    log_prob += const
    return log_prob


def logsumexp(xp, log_prob):
    """Row-wise log-sum-exp of ``(m, K)``, shape ``(m,)``, with the
    tiny-value floor of the module doc; a row of ``-inf`` gives ``-inf``."""
    amax = log_prob.max(axis=1, keepdims=True)
    shifted = log_prob - xp.where(xp.isfinite(amax), amax, 0)
    xp.maximum(shifted, log_floor(shifted.dtype), out=shifted)
    out = xp.log(xp.exp(shifted, out=shifted).sum(axis=1)) + amax[:, 0]
    return out


def estimate_log_resp(xp, log_prob):
    """E-step in log space (overwrites ``log_prob``).

    Args:
        log_prob: :func:`estimate_log_prob`, shape ``(m, K)``.

    Returns:
        tuple: log responsibilities ``log_prob - log_norm[:, None]``
        ``(m, K)`` and ``log_norm (m,)`` (:func:`logsumexp`).
    """
    log_norm = logsumexp(xp, log_prob)
    log_prob -= log_norm[:, None]
    return log_prob, log_norm


def responsibilities(xp, log_prob):
    """Responsibilities of the M-step from log-densities (overwrites them).

    The softmax of every row (max subtracted, exponentiated in place,
    divided by the row sums): the same numbers as ``exp(log_resp)`` in half
    the array operations, with the tiny-value floor of the module doc.

    Args:
        log_prob: ``(m, K)`` log-densities, or anything that differs from
            them by a per-row constant (log responsibilities).

    Returns:
        ``(m, K)`` responsibilities, rows summing to one.
    """
    resp = log_prob
    resp -= resp.max(axis=1, keepdims=True)
    xp.maximum(resp, log_floor(resp.dtype), out=resp)
    xp.exp(resp, out=resp)
    resp /= resp.sum(axis=1, keepdims=True)
    return resp


# ---------------------------------------------------------------------------
# M-step


def augment(xp, x, out=None, dtype=None):
    """``[x, x^2]``, shape ``(m, 2d)``, in ``dtype`` (default: that of
    ``x``; the squares are taken in it) or into ``out`` if given."""
    d = x.shape[1]
    if out is None:
        out = xp.empty((x.shape[0], 2 * d), dtype=dtype or x.dtype)
    out[:, :d] = x
    xp.multiply(out[:, :d], out[:, :d], out=out[:, d:])
    return out


def gaussian_sums(xp, augmented, resp):
    """Sufficient statistics of the M-step, in the dtype of ``augmented``.

    Args:
        augmented: ``[x, x^2]`` ``(m, 2d)``.
        resp: Responsibilities ``(m, K)``.

    Returns:
        tuple: ``sum_i resp_ik`` ``(K,)`` and ``sum_i resp_ik [x_i, x_i^2]``
        ``(K, 2d)``.
    """
    resp = resp.astype(augmented.dtype, copy=False)
    return resp.sum(axis=0), resp.T @ augmented


def gaussians_from_sums(xp, nk, sums, reg_covar, dtype, centres=None):
    """``(nk, means, variances)`` from the sums of :func:`gaussian_sums`.

    The means and variances are the responsibility-weighted ones,
    ``mu = S1 / nk`` and ``var = S2 / nk - mu^2`` (never below zero) plus
    ``reg_covar``, about any origin the sums were taken about (a component
    whose points all share a value gets the variance ``reg_covar`` exactly,
    whatever its distance from that origin).  The returned ``nk`` gets
    ``10 * eps`` of ``dtype``, so that an empty component keeps a positive
    weight, as in scikit-learn's ``_estimate_gaussian_parameters`` (which
    also divides by it: its variances gain ``mu^2 10 eps / nk``).  The
    arithmetic is done in the sums' dtype, the results are in ``dtype``.

    Args:
        nk: ``(K,)`` responsibility sums.
        sums: ``(K, 2d)`` weighted sums of ``x - c_k`` and ``(x - c_k)^2``.
        reg_covar (float): Floor added to every variance.
        dtype: The dtype of the results.
        centres: ``(K, d)`` the origins ``c_k`` the sums are taken about
            (the C kernels take them about the E-step's means); None: zero.
    """
    d = sums.shape[1] // 2
    weight = xp.where(nk > 0, nk, 1)[:, None]  # an empty cluster: 0 / 1
    offsets = sums[:, :d] / weight
    variances = xp.maximum(sums[:, d:] / weight - offsets * offsets, 0)
    means = offsets if centres is None else offsets + centres
    nk = nk + 10 * numpy.finfo(dtype).eps
    return tuple(a.astype(dtype, copy=False)
                 for a in (nk, means, variances + reg_covar))


def estimate_gaussian_parameters(points, resp, reg_covar):
    """M-step statistics of diagonal Gaussians from responsibilities.

    The fit's M-step, which runs it block by block (:func:`gaussian_sums`,
    then :func:`gaussians_from_sums`); the sums are accumulated in float64
    (:func:`accumulation_dtype`).

    Args:
        points: Array of shape ``(m, d)``.
        resp: Responsibilities, array of shape ``(m, K)``.
        reg_covar (float): Floor added to every variance.

    Returns:
        tuple: ``nk (K,)`` (responsibility sums plus ``10 * eps`` so that an
        empty component stays finite), ``means (K, d)`` and
        ``variances (K, d)`` (``E[x^2] - mu^2 + reg_covar``, never below
        ``reg_covar``), in the points' compute dtype.
    """
    xp = get_array_module(points)
    dtype = compute_dtype(points.dtype)
    nk, sums = gaussian_sums(
        xp, augment(xp, points, dtype=accumulation_dtype(dtype)), resp)
    return gaussians_from_sums(xp, nk, sums, reg_covar, dtype)


def mixture_from_sums(xp, nk, sums, reg_covar, dtype, reducer=None,
                      centres=None):
    """The M-step's mixture (in ``dtype``) from the sums of a pass, summed
    over the workers (:func:`mn_chainer.data_parallel.allreduce_packed`);
    ``centres`` as in :func:`gaussians_from_sums`."""
    nk, sums = data_parallel.allreduce_packed(xp, reducer, nk, sums)
    nk, means, variances = gaussians_from_sums(xp, nk, sums, reg_covar,
                                               dtype, centres)
    return Mixture(nk / nk.sum(), means, variances)


# ---------------------------------------------------------------------------
# K-means++ and Lloyd


def default_n_trials(n_components):
    """Greedy K-means++ candidates per centre: ``2 + floor(ln K)``."""
    return 2 + int(math.log(n_components))


def row_norms_sq(xp, points):
    """``|x_i|^2`` of every row, shape ``(m,)``."""
    if xp is numpy:
        return numpy.einsum('ij,ij->i', points, points)
    return (points * points).sum(axis=1)


def candidate_d2(xp, points, candidates, closest_d2, points_sq=None):
    """One round of K-means++: the squared distance to the nearest centre if
    ``candidates[t]`` is added, and the potential of each candidate.

    ``d2[t, i] = min(closest_d2[i], ||points[i] - candidates[t]||^2)``, with
    the expansion ``|x|^2 - 2 x.c + |c|^2`` (one matrix-vector product per
    candidate), clipped at zero where rounding makes it negative; the
    potentials are its row sums in float64.  The CUDA and C twins
    (:func:`mn_chainer.kernels.kmeanspp_candidate_d2`,
    :func:`mn_chainer.cpu_kernels.candidate_d2`) sum direct differences.

    Args:
        points_sq: Optional :func:`row_norms_sq` of ``points``.

    Returns:
        tuple: ``d2 (T, m)`` and ``potentials (T,)`` (float64).
    """
    if points_sq is None:
        points_sq = row_norms_sq(xp, points)
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
    return d2, d2.sum(axis=1, dtype=numpy.float64)


class Seeding(object):

    """The state of greedy K-means++ (DESIGN §1.1 step 2) on arrays (NumPy
    or CuPy), which :func:`kmeans_plusplus` drives round by round: every
    point's squared distance to its nearest centre (``closest``) and the
    index of that centre (``labels``).  The C kernels' twin is
    :class:`mn_chainer.cpu_kernels.Seeding`.

    Args:
        points: ``(m, d)``.
        n_components (int): ``K <= m``.
        candidate_d2: The backend's distances of these points:
            ``candidate_d2(candidates (T, d), closest_d2 (m,))`` returns
            ``d2 (T, m)`` and ``potentials (T,)`` as
            :func:`mn_chainer.mixture_steps.candidate_d2`.
        first: Index ``(1,)`` of the first centre.
        first_d2: Optional squared distances ``(m,)`` to the first centre.
    """

    def __init__(self, xp, points, n_components, candidate_d2, first,
                 first_d2=None):
        m = points.shape[0]
        self.xp = xp
        self.points = points
        self.candidate_d2 = candidate_d2
        self.indices = xp.empty(n_components, dtype=numpy.int64)
        self.indices[0:1] = first
        if first_d2 is None:
            first_d2 = candidate_d2(points[first],
                                    xp.full(m, numpy.inf, points.dtype))[0][0]
        self.closest = xp.ascontiguousarray(first_d2)
        self.labels = xp.zeros(m, dtype=numpy.int64)
        self.count = 1

    def add_centre(self, uniforms):
        """One round: draws ``len(uniforms)`` candidates with probability
        proportional to ``closest`` (the inverse of its cumulative sum, in
        float64, at ``uniforms`` in ``[0, 1)``) and keeps the one that
        lowers the potential most (the first on a tie); on the GPU nothing
        is copied to the host."""
        xp = self.xp
        m = self.points.shape[0]
        cumulative = xp.cumsum(self.closest, dtype=numpy.float64)
        candidates = xp.minimum(
            xp.searchsorted(cumulative, uniforms * cumulative[-1]), m - 1)
        d2, potentials = self.candidate_d2(self.points[candidates],
                                           self.closest)
        best = potentials.argmin()
        if xp is numpy:
            best = int(best)  # the distances of the best: a view
        new_d2 = d2[best]
        self.labels = xp.where(new_d2 < self.closest, self.count,
                               self.labels)
        self.closest = new_d2
        self.indices[self.count] = candidates[best]
        self.count += 1

    def result(self):
        """``centers (K, d)``, ``indices (K,)`` and ``labels (m,)``, the
        index of the nearest centre of every point (the first on a tie), as
        a Lloyd assignment to the seeds would give it: the seeding tracks
        it for free."""
        return self.points[self.indices], self.indices, self.labels


def kmeans_plusplus(xp, points, n_components, n_trials, rng, seeding,
                    first=None, first_d2=None):
    """Greedy K-means++ seeding (DESIGN §1.1 step 2), on validated input.

    The first centre is a uniformly random point; each further centre is
    the best of ``n_trials`` candidates drawn with probability proportional
    to ``D(x)^2`` (the squared distance to the nearest chosen centre): the
    one that lowers the total potential most.  The random draws are made
    here, from ``rng``, alike for every backend: the first index, then
    ``n_trials`` uniform numbers per round.

    Args:
        points: ``(m, d)``.
        n_components (int): ``K <= m``.
        n_trials (int): Candidates per centre.
        rng: ``xp.random.RandomState``.
        seeding: The backend's seeding state of these points:
            ``seeding(first, first_d2)`` returns a :class:`Seeding` (or its
            twin).
        first: Optional index ``(1,)`` of the first centre (drawn from
            ``rng`` by the caller, which spares the draw here).
        first_d2: Optional squared distances ``(m,)`` to the first centre.

    Returns:
        tuple: ``centers (K, d)``, ``indices (K,)`` and ``labels (m,)``
        (:meth:`Seeding.result`).
    """
    if first is None:
        first = rng.randint(0, points.shape[0], size=1).astype(numpy.int64)
    state = seeding(first, first_d2)
    for _ in range(1, n_components):
        state.add_centre(rng.random_sample(n_trials))
    return state.result()


def hard_assign(xp, points, centers):
    """Index of the nearest centre of every point, shape ``(m,)``.

    The CUDA twin is :func:`mn_chainer.kernels.kmeans_assign`.
    """
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin.
    scores = points @ centers.T
    scores *= -2
    scores += (centers * centers).sum(axis=1)[None, :]
    return scores.argmin(axis=1)


def one_hot(xp, labels, n_components, dtype):
    """``(m, K)`` indicator of ``labels``."""
    return (labels[:, None] == xp.arange(n_components)[None, :]).astype(dtype)


def lloyd(xp, x, centers, n_iter, assign, reducer=None, update_last=True,
          labels=None):
    """Lloyd iterations (DESIGN §1.1 step 3); an empty cluster keeps its
    centre.

    Args:
        x: Points ``(m, d)``.
        centers: ``(K, d)``.
        n_iter (int): Assignment + update steps, ``>= 1``.
        assign: The backend's assignment: ``assign(x, centers)`` gives the
            labels ``(m,)`` (as :func:`hard_assign`).
        reducer: Sums the cluster sums over the workers.
        update_last (bool): False skips the last update (the caller needs
            the assignment only).
        labels: Optional assignment to ``centers`` (from the seeding),
            which spares the first one.

    Returns:
        tuple: ``centers (K, d)`` and the last assignment ``labels (m,)``.
    """
    n_components = centers.shape[0]
    for i in range(n_iter):
        if i > 0 or labels is None:
            labels = assign(x, centers)
        if i == n_iter - 1 and not update_last:
            break
        indicator = one_hot(xp, labels, n_components, x.dtype)
        counts, sums = data_parallel.allreduce_packed(
            xp, reducer, indicator.sum(axis=0), indicator.T @ x)
        centers = xp.where(counts[:, None] > 0,
                           sums / xp.maximum(counts, 1)[:, None], centers)
    return centers, labels


# ---------------------------------------------------------------------------
# Pruning


def prune(xp, mixture, log_resp, min_weight, reducer=None):
    """Drop components lighter than ``min_weight`` (paper §5.3).

    The weight of a component is its mean responsibility over every point
    (of every worker).  The kept weights are renormalised, and so is the
    posterior (in log space), which equals the posterior under the pruned
    mixture.  The heaviest component is always kept.

    Returns:
        tuple: The pruned mixture and log posterior ``(m, K_eff)``.
    """
    if min_weight <= 0:
        return mixture, log_resp
    resp_sum, count = data_parallel.allreduce_packed(
        xp, reducer, exp_normal(xp, log_resp).sum(axis=0),
        xp.full(1, log_resp.shape[0], log_resp.dtype))
    mean_resp = resp_sum / count
    keep = mean_resp >= min_weight
    keep[xp.argmax(mean_resp)] = True  # never drop every component
    keep = numpy.flatnonzero(to_host(keep))  # one host sync per fit
    if keep.size == mixture.n_components:
        return mixture, log_resp
    keep = xp.asarray(keep)
    weights = mixture.weights[keep]
    mixture = Mixture(weights / weights.sum(), mixture.means[keep],
                      mixture.variances[keep])
    log_resp = log_resp[:, keep]
    log_resp = log_resp - logsumexp(xp, log_resp)[:, None]
    return mixture, log_resp
