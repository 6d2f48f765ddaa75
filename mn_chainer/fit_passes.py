"""The passes of a mixture fit over its points, one class per backend.

A fit (:func:`mn_chainer.gmm.fit_gmm`) reads its points in a few *passes*:
the column sums (the centre, and the NaN/Inf check), the M-step from the
hard clusters, each E-step with the M-step that follows it, and the final
posterior.  The steps themselves are those of :mod:`mn_chainer.mixture_steps`;
a passes class runs them over the points with one backend, chosen once per
fit by :func:`select_passes` (as Chainer's batch normalization picks one
implementation per call):

======================  ====================================  ==============
passes                  points                                E-step
======================  ====================================  ==============
:class:`ArrayPasses`    NumPy, where the C kernels do not     float64 array
                        apply                                 products
:class:`CKernelPasses`  NumPy, float32 or float64,            C kernels
                        C-contiguous, C kernels built
:class:`CudaPasses`     CuPy                                  CUDA kernels
======================  ====================================  ==============

Every passes class works on the centred points ``x = points - shift`` (a
diagonal mixture is translation invariant, and the expanded distances
cancel in float32 when ``|mean| >> sd``), and returns mixtures in that
frame, in the points' dtype.

Accuracy in float32, whatever the component variances (a channel whose
component variance is ``reg_covar``, as rectified activations give, has a
precision of ``1e6``): the NumPy passes evaluate the E-step's expanded
quadratic and accumulate the M-step's sums in float64
(:func:`~mn_chainer.mixture_steps.accumulation_dtype`: one float64 product
per cached row block, the squares of float32 numbers exact); the C kernels
take direct differences ``prec (x - mu)^2`` and sum about the E-step's
means in double; the CUDA E-step takes direct differences, and the M-step
on CuPy is the NumPy one.  Every E-step follows the tiny-value rule of
:mod:`mn_chainer.mixture_steps`.

The interface of a passes class:

* ``column_stats(xp, points, first=None)`` (static): the column sums
  (float64 where the backend accumulates so), the largest magnitude
  ``max |points[i, j]|`` and, where the backend fuses them, the
  squared distances to the point ``first`` (K-means++'s first centre),
  else None;
* ``candidate_distances(xp, points)`` (static): K-means++'s distances
  ``candidate_d2(candidates, closest_d2)`` for these points, and
  ``seeding(xp, points, n_components)`` (class method): its seeding state,
  ``seeding(first, first_d2)`` (:class:`~mn_chainer.mixture_steps.
  Seeding` or its C twin);
* ``hard_assign(xp, x, centers)`` (static): Lloyd's assignment;
* ``passes.x`` (the centred points) and ``passes.seed_points()``;
* ``passes.cluster_m_step``, ``passes.em_step``, ``passes.log_posterior``.

This module imports neither Chainer nor CuPy.
"""
import functools

import numpy

from mn_chainer import cpu_kernels
from mn_chainer import kernels
from mn_chainer import mixture_steps


def select_passes(xp, points):
    """The passes a fit over ``points`` runs (the one backend switch).

    Args:
        xp: The points' array module.
        points: The (validated) points ``(m, d)``.

    Returns:
        type: :class:`CudaPasses` for CuPy arrays; :class:`CKernelPasses`
        for float32 or float64 C-contiguous NumPy arrays where the C kernels
        are available (:func:`mn_chainer.cpu_kernels.available`);
        :class:`ArrayPasses` otherwise.
    """
    if xp is not numpy:
        return CudaPasses
    if (points.dtype.char in 'fd' and points.flags.c_contiguous
            and cpu_kernels.available()):
        return CKernelPasses
    return ArrayPasses


class RowBlocks(object):

    """The centred points in row blocks of ``[x, x^2]``, one pass at a time.

    A pass (the M-step from the clusters, each E-step with the M-step that
    follows it, the final posterior) visits every block once.  With NumPy a
    block of about :data:`mn_chainer.mixture_steps.BLOCK_BYTES` is built in
    one reused buffer, so that the E-step and the M-step of a block read it
    from the cache and no ``(m, 2d)`` array is ever allocated; with CuPy
    (and for small NumPy inputs) there is a single block, built once and
    kept.

    Iterating yields ``(rows, x[rows], augmented)`` with ``augmented =
    [x[rows], x[rows] ** 2]`` in the accumulation dtype
    (:func:`~mn_chainer.mixture_steps.accumulation_dtype`), valid until the
    next block.
    """

    def __init__(self, xp, x):
        self.xp = xp
        self.x = x
        self.dtype = mixture_steps.accumulation_dtype(x.dtype)
        m, d = x.shape
        self.block_rows = m
        if xp is numpy:
            self.block_rows = max(1, mixture_steps.BLOCK_BYTES // (
                2 * max(d, 1) * self.dtype.itemsize))
        self._whole = None

    def __iter__(self):
        xp, x = self.xp, self.x
        m, d = x.shape
        if self.block_rows >= m:
            if self._whole is None:
                self._whole = mixture_steps.augment(xp, x, dtype=self.dtype)
            yield slice(0, m), x, self._whole
            return
        buf = xp.empty((self.block_rows, 2 * d), dtype=self.dtype)
        for start in range(0, m, self.block_rows):
            rows = slice(start, min(start + self.block_rows, m))
            block = x[rows]
            yield rows, block, mixture_steps.augment(
                xp, block, out=buf[:block.shape[0]])


class ArrayPasses(object):

    """The passes of a fit with array operations (the NumPy reference).

    The points are centred once (``x = points - shift``); every pass runs
    on the row blocks of :class:`RowBlocks`: the E-step is
    :func:`~mn_chainer.mixture_steps.estimate_log_prob` (one matrix
    product per block), the M-step :func:`~mn_chainer.mixture_steps.
    gaussian_sums` and :func:`~mn_chainer.mixture_steps.mixture_from_sums`.

    Args:
        xp: The points' array module.
        points: ``(m, d)``.
        shift: ``(d,)``, the origin of the fit's frame.
    """

    def __init__(self, xp, points, shift):
        self.xp = xp
        self.dtype = points.dtype
        self.x = points - shift
        self.blocks = RowBlocks(xp, self.x)

    @staticmethod
    def column_stats(xp, points, first=None):
        """The column sums ``(d,)``, the largest ``|points[i, j]|`` (an
        array of one value) and None (no fused distances)."""
        # A product with a vector of ones: BLAS streams the points at
        # memory speed, twice as fast as a NumPy reduction here.
        sums = xp.ones(points.shape[0], dtype=points.dtype) @ points
        return sums, xp.maximum(points.max(), -points.min()), None

    @staticmethod
    def candidate_distances(xp, points):
        """K-means++'s ``candidate_d2(candidates, closest_d2)`` of
        ``points`` (:func:`mn_chainer.mixture_steps.candidate_d2`)."""
        return functools.partial(
            mixture_steps.candidate_d2, xp, points,
            points_sq=mixture_steps.row_norms_sq(xp, points))

    @classmethod
    def seeding(cls, xp, points, n_components):
        """K-means++'s ``seeding(first, first_d2)`` of ``points``
        (:class:`mn_chainer.mixture_steps.Seeding` with
        :meth:`candidate_distances`)."""
        return functools.partial(mixture_steps.Seeding, xp, points,
                                 n_components,
                                 cls.candidate_distances(xp, points))

    @staticmethod
    def hard_assign(xp, x, centers):
        """Lloyd's assignment (:func:`mn_chainer.mixture_steps.hard_assign`).
        """
        return mixture_steps.hard_assign(xp, x, centers)

    def seed_points(self):
        """The points K-means++ runs on and their origin: the centred
        points (the NumPy distances expand ``|x - c|^2``)."""
        return self.x, 0

    def cluster_m_step(self, labels, n_components, reg_covar, reducer=None):
        """The mixture of the hard clusters ``labels`` (DESIGN §1.1 step 4).
        """
        xp = self.xp
        nk, sums = self._sums(lambda rows, x, augmented: mixture_steps.one_hot(
            xp, labels[rows], n_components, augmented.dtype))
        return mixture_steps.mixture_from_sums(xp, nk, sums, reg_covar,
                                               self.dtype, reducer)

    def em_step(self, mixture, reg_covar, reducer=None):
        """One EM iteration (E-step, then M-step) from ``mixture``."""
        xp = self.xp
        terms = self._e_step_terms(mixture)
        nk, sums = self._sums(lambda rows, x, augmented:
                              self._responsibilities(terms, x, augmented))
        return mixture_steps.mixture_from_sums(xp, nk, sums, reg_covar,
                                               self.dtype, reducer)

    def log_posterior(self, mixture):
        """E-step of every point: log responsibilities ``(m, K)`` and log
        normalizers ``(m,)``."""
        xp, m, dtype = self.xp, self.x.shape[0], self.dtype
        terms = self._e_step_terms(mixture)
        log_resp = log_norm = None
        for rows, x, augmented in self.blocks:
            block, block_norm = self._log_resp(terms, x, augmented)
            if rows.stop - rows.start == m:
                return (block.astype(dtype, copy=False),
                        block_norm.astype(dtype, copy=False))
            if log_resp is None:
                log_resp = xp.empty((m, block.shape[1]), dtype=dtype)
                log_norm = xp.empty(m, dtype=dtype)
            log_resp[rows] = block
            log_norm[rows] = block_norm
        return log_resp, log_norm

    def _sums(self, resp_of):
        """The M-step's sums over a pass (:func:`~mn_chainer.mixture_steps.
        gaussian_sums`, in the accumulation dtype): ``resp_of(rows, x,
        augmented)`` gives the ``(rows, K)`` responsibilities of a block."""
        nk = sums = None
        for rows, x, augmented in self.blocks:
            block_nk, block_sums = mixture_steps.gaussian_sums(
                self.xp, augmented, resp_of(rows, x, augmented))
            if nk is None:
                nk, sums = block_nk, block_sums
            else:
                nk += block_nk
                sums += block_sums
        return nk, sums

    # The E-step of a block (overridden by CudaPasses).

    def _e_step_terms(self, mixture):
        dtype = self.blocks.dtype
        return mixture_steps.gaussian_log_terms(self.xp, mixture_steps.Mixture(
            *(a.astype(dtype) for a in mixture)))

    def _log_resp(self, terms, x, augmented):
        return mixture_steps.estimate_log_resp(
            self.xp, mixture_steps.estimate_log_prob(self.xp, augmented,
                                                     terms))

    def _responsibilities(self, terms, x, augmented):
        return mixture_steps.responsibilities(
            self.xp, mixture_steps.estimate_log_prob(self.xp, augmented,
                                                     terms))


class CudaPasses(ArrayPasses):

    """:class:`ArrayPasses` on CuPy arrays with the fused CUDA kernels of
    :mod:`mn_chainer.kernels`: the E-step, K-means++'s distances and
    Lloyd's assignment (one block: the whole centred point matrix)."""

    @staticmethod
    def candidate_distances(xp, points):
        return functools.partial(_with_potentials, functools.partial(
            kernels.kmeanspp_candidate_d2, xp.ascontiguousarray(points)))

    @staticmethod
    def hard_assign(xp, x, centers):
        return kernels.kmeans_assign(xp.ascontiguousarray(x), centers)[0]

    def _e_step_terms(self, mixture):
        return (mixture_steps.log_weights(self.xp, mixture.weights),
                mixture.means, 1 / mixture.variances)

    def _log_resp(self, terms, x, augmented):
        return kernels.estep_log_resp(self.xp.ascontiguousarray(x), *terms)

    def _responsibilities(self, terms, x, augmented):
        return mixture_steps.responsibilities(
            self.xp, self._log_resp(terms, x, augmented)[0])


def _with_potentials(candidate_d2, candidates, closest_d2):
    """``(d2, potentials)`` of a distance function returning ``d2`` alone:
    the potentials are its row sums, in float64."""
    d2 = candidate_d2(candidates, closest_d2)
    return d2, d2.sum(axis=1, dtype=numpy.float64)


class CKernelPasses(object):

    """The passes of :class:`ArrayPasses` with the C kernels of
    :mod:`mn_chainer.cpu_kernels` (NumPy, where they are built).

    Each pass reads the points once, as given, and centres every row in the
    cache: no centred copy is written, except for what needs one (Lloyd
    iterations after the first assignment, data-parallel seeding).
    """

    hard_assign = ArrayPasses.hard_assign

    def __init__(self, xp, points, shift):
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
    def column_stats(xp, points, first=None):
        """The column sums (in double), the largest magnitude and, with
        ``first``, the squared distances to it, in one pass
        (:func:`mn_chainer.cpu_kernels.column_sums`)."""
        return cpu_kernels.column_sums(points, first)

    @staticmethod
    def candidate_distances(xp, points):
        return functools.partial(cpu_kernels.candidate_d2, points)

    @classmethod
    def seeding(cls, xp, points, n_components):
        """:class:`mn_chainer.cpu_kernels.Seeding` of ``points``."""
        return functools.partial(cpu_kernels.Seeding, points, n_components)

    def seed_points(self):
        """The points as given: the C distances are direct differences."""
        return self.points, self.shift

    def cluster_m_step(self, labels, n_components, reg_covar, reducer=None):
        nk, sums = cpu_kernels.cluster_sums(self.points, self.shift, labels,
                                            n_components)
        return mixture_steps.mixture_from_sums(
            self.xp, nk, sums, reg_covar, self.points.dtype, reducer)

    def em_step(self, mixture, reg_covar, reducer=None):
        nk, sums, centres = cpu_kernels.em_sums(self.points, self.shift,
                                                mixture)
        return mixture_steps.mixture_from_sums(
            self.xp, nk, sums, reg_covar, self.points.dtype, reducer,
            centres=centres)

    def log_posterior(self, mixture):
        return cpu_kernels.log_resp(self.points, self.shift, mixture)
