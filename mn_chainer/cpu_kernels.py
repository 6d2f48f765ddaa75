"""Fused CPU kernels of the mixture fit (:mod:`mn_chainer.gmm` on NumPy).

The passes of :func:`mn_chainer.gmm.fit_gmm` over the points, written in C
(``mn_chainer/_cpu_kernels_impl.h``) so that each one reads a point once,
does all its work on it while it is in the L1 cache, and runs on several
cores; :class:`mn_chainer.fit_passes.CKernelPasses` runs them.  NumPy's
versions of the same passes (:class:`mn_chainer.fit_passes.ArrayPasses`,
with the steps of :mod:`mn_chainer.mixture_steps`) are the references the
tests compare against:

==============================  ===========================================
kernel (this module)            NumPy twin
==============================  ===========================================
:func:`column_sums`             ``ArrayPasses.column_stats``
:class:`Seeding`                ``mixture_steps.Seeding``
:func:`candidate_d2`            ``mixture_steps.candidate_d2``
:func:`cluster_sums`            ``ArrayPasses.cluster_m_step``
:func:`em_sums`                 ``ArrayPasses.em_step``
:func:`log_resp`                ``ArrayPasses.log_posterior``
==============================  ===========================================

The kernels read the points as given and centre every row on the fly
(``x = points - shift``, in the cache), so the fit never writes a centred
copy of the point matrix.  Their accuracy is that of the NumPy passes in
float64 (``_cpu_kernels_impl.h``): sums over the rows in double; in
float32 the E-step by direct differences ``prec (x - mu)^2`` and the
M-step's sums about the E-step's means, in float64 the forms of fewer
operations whose rounding stays far below what a float64 fit resolves.

The library is the optional C extension ``mn_chainer._cpu_kernels``, built
by ``pip install`` where a C compiler is present and loaded here with
:mod:`ctypes` (which releases the GIL during each call).  Every function
checks its arguments (dtype, shape, contiguity, label range) before calling
C.  A pass cuts its rows into chunks by its work (:data:`CHUNK_WORK`),
which up to :func:`n_threads` threads take in turn (a thread that starts
late or shares its core takes fewer); every chunk accumulates its own sums,
added in chunk order at the end, so that the results never depend on the
threads.  The threads are the library's own (``_thread_team.h``): the
calling thread and workers kept between passes, which a pass reaches in
microseconds, without the GIL.  :func:`available` is False where the
extension is not built or ``MN_CHAINER_CPU_KERNELS=0`` is set; the fit then
runs its NumPy path (:func:`mn_chainer.fit_passes.select_passes`).

The same library holds the transform's kernels
(``_transform_kernels_impl.h``), which :mod:`mn_chainer.transform_kernels`
runs with this module's loader and chunks: :func:`function` (an exported
function), :func:`address`, :func:`chunk_bounds`, :func:`chunk_arguments`
and :class:`PartBuffers`.
"""
import ctypes
import functools
import math
import os

import numpy

from mn_chainer import mixture_steps


#: The work of a chunk of rows: a pass is cut into chunks of about this
#: many elements of the point matrix times operations per element (the
#: components of an E-step, the candidates of a K-means++ round, 1 for the
#: sums), 0.05 to 0.15 ms on one core, whatever the threads; the threads
#: take the chunks in turn.
CHUNK_WORK = 1 << 18
#: The most chunks of a pass (each has sums of its own, added at the end).
MAX_CHUNKS = 8

_SUFFIX = {numpy.dtype(numpy.float32): 'f32',
           numpy.dtype(numpy.float64): 'f64'}
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_CHUNKS = (_PTR, _I64, _I64)  # chunk_arguments: bounds, chunks, threads
_SIGNATURES = {  # None: the floating type of the kernel
    'mn_column_sums': (_PTR, _PTR, _PTR, _I64, _PTR, _I64, _PTR, _I64)
    + _CHUNKS,
    'mn_seed_draw': (_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64),
    'mn_candidate_d2': (_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64,
                        _I64) + _CHUNKS,
    'mn_cluster_sums': (_PTR, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _I64)
    + _CHUNKS,
    'mn_em_sums': (_PTR, _PTR, _PTR, _PTR, _PTR, None, _PTR, _I64, _PTR,
                   _I64, _PTR, _I64, _I64, _I64) + _CHUNKS,
    'mn_log_resp': (_PTR, _PTR, _PTR, _PTR, _PTR, None, _PTR, _PTR, _PTR,
                    _I64, _I64, _I64) + _CHUNKS,
    # The transform's (mn_chainer.transform_kernels).
    'mn_mix_sums': (_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64,
                    _I64, _I64) + _CHUNKS,
    'mn_mix_forward': (_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _PTR, _I64, _I64,
                       _I64) + _CHUNKS,
    'mn_mix_grad_x': (_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR,
                      _PTR, _I64, _I64, _I64) + _CHUNKS,
}
#: Exported functions returning an int64, with their argument types.
_SIZE_SIGNATURES = {
    'mn_scratch_size': (_I64, _I64),
    'mn_seed_keep': (_PTR, _PTR, _I64, _I64, _I64, _PTR, _PTR, _PTR, _I64,
                     _I64),
}


@functools.lru_cache(maxsize=None)
def _extension():
    """The extension module, or None where it is not built."""
    try:
        from mn_chainer import _cpu_kernels
    except ImportError:
        return None
    return _cpu_kernels


@functools.lru_cache(maxsize=None)
def _library():
    if _extension() is None:
        return None
    lib = ctypes.CDLL(_extension().__file__)
    for suffix, real in (('f32', ctypes.c_float), ('f64', ctypes.c_double)):
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, '{}_{}'.format(name, suffix))
            fn.argtypes = [real if a is None else a for a in argtypes]
            fn.restype = None
        for name, argtypes in _SIZE_SIGNATURES.items():
            fn = getattr(lib, '{}_{}'.format(name, suffix))
            fn.argtypes = list(argtypes)
            fn.restype = _I64
    return lib


def available():
    """Whether the C kernels are built and not disabled by the
    ``MN_CHAINER_CPU_KERNELS=0`` environment variable."""
    if os.environ.get('MN_CHAINER_CPU_KERNELS', '1') == '0':
        return False
    return _library() is not None


def n_threads():
    """Threads a pass may use: ``MN_CHAINER_CPU_THREADS`` where it is set
    (a positive integer), else the CPUs this process may run on."""
    limit = os.environ.get('MN_CHAINER_CPU_THREADS')
    if limit:
        try:
            return max(1, int(limit))
        except ValueError:
            raise ValueError('MN_CHAINER_CPU_THREADS must be a positive '
                             'integer, got {!r}'.format(limit)) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def chunk_bounds(m, d, work=1):
    """The bounds ``(n + 1,)`` of the chunks of rows of a pass over ``m``
    rows of ``d`` values with ``work`` operations per value
    (:data:`CHUNK_WORK`, :data:`MAX_CHUNKS`)."""
    n = max(1, min(MAX_CHUNKS, m, m * d * work // CHUNK_WORK))
    return numpy.array([m * c // n for c in range(n + 1)], dtype=numpy.int64)


def _threads(bounds):
    """The threads of a pass over the chunks ``bounds``."""
    return min(n_threads(), len(bounds) - 1)


def chunk_arguments(bounds):
    """The last three arguments of a kernel's pass over the chunks
    ``bounds`` (:func:`chunk_bounds`, which must outlive the call): their
    address, their number and the threads that take them in turn
    (:func:`n_threads`, at most one per chunk; ``MN_EACH_CHUNK`` of
    ``_thread_team.h``)."""
    return address(bounds), len(bounds) - 1, _threads(bounds)


class PartBuffers(object):

    """Zeroed buffers of ``shape``, one per part (a chunk of rows: its sums,
    or a thread: its scratch), at least one cache line (64 bytes) apart:
    threads adding into neighbouring bytes of one line would take the line
    from each other at every row.  ``addr`` is the address of part 0's
    buffer, ``step`` the values from one part's to the next's (what the
    kernels take), :meth:`sum` the sum of the parts in their order."""

    def __init__(self, parts, shape, dtype):
        itemsize = numpy.dtype(dtype).itemsize
        self.shape = shape
        self._size = math.prod(shape)
        self._pad = 128 // itemsize
        self.block = numpy.zeros((parts, self._size + self._pad), dtype)
        self.addr = address(self.block) + self._pad // 2 * itemsize
        self.step = self.block.shape[1]

    def sum(self):
        start = self._pad // 2
        return self.block[:, start:start + self._size].sum(axis=0).reshape(
            self.shape)


def _scratch(parts, d, k, dtype):
    """The E-step kernels' scratch buffers, one per thread, of the size the
    C side asks for (``mn_scratch_size``)."""
    return PartBuffers(parts, (function('mn_scratch_size', dtype)(d, k),),
                       dtype)


@functools.lru_cache(maxsize=None)
def function(name, dtype):
    """The exported C function ``name`` for ``dtype`` (float32 or float64),
    its argument types set."""
    return getattr(_library(), '{}_{}'.format(name, _SUFFIX[dtype]))


def address(a):
    """The address of the data of ``a``, a contiguous array (what the C
    functions take)."""
    return _extension().address(a)


# ---------------------------------------------------------------------------
# Argument checks (a wrong argument must never reach C)


def _check_points(x):
    if not isinstance(x, numpy.ndarray) or x.ndim != 2:
        raise ValueError('points must be a 2-D NumPy array, got {!r}'
                         .format(getattr(x, 'shape', type(x))))
    if x.dtype not in _SUFFIX:
        raise TypeError('points must be float32 or float64, got {}'
                        .format(x.dtype))
    if not x.flags.c_contiguous:
        raise ValueError('points must be C-contiguous')
    return x.shape


def _as(name, a, dtype, shape):
    """``a`` as a C-contiguous array of ``dtype``, checked for ``shape``."""
    a = numpy.ascontiguousarray(a, dtype=dtype)
    if a.shape != tuple(shape):
        raise ValueError('{} must have shape {}, got {}'
                         .format(name, tuple(shape), a.shape))
    return a


def _e_step_arguments(points, shift, mixture):
    """Checked ``(m, d, K, shift, a, b, log_const)`` of an E-step kernel, in
    the points' dtype (computed in float64): the coefficients ``a, b`` of
    its form (``_cpu_kernels_impl.h``), ``means, 1 / variances`` in
    float32 (direct differences), ``1 / sqrt(variances), means /
    sqrt(variances)`` in float64 (one fused multiply-add), and the
    constants :func:`mn_chainer.mixture_steps.gaussian_log_const`."""
    m, d = _check_points(points)
    dtype = points.dtype
    shift = _as('shift', shift, dtype, (d,))
    k = numpy.shape(mixture.weights)[0]
    weights = _as('weights', mixture.weights, numpy.float64, (k,))
    means = _as('means', mixture.means, dtype, (k, d))
    variances = _as('variances', mixture.variances, numpy.float64, (k, d))
    log_const = mixture_steps.gaussian_log_const(
        numpy, mixture_steps.Mixture(weights, means, variances))
    if dtype == numpy.float64:
        a = 1 / numpy.sqrt(variances)
        b = means * a
    else:
        a, b = means, (1 / variances).astype(dtype)
    return m, d, k, shift, a, b, log_const.astype(dtype)


# ---------------------------------------------------------------------------
# Kernels


def column_sums(points, first=None):
    """The column sums and the largest magnitude in one pass; with
    ``first`` (a point, ``(d,)``), also ``|points[i] - first|^2`` of every
    row (K-means++'s distances to its first centre).

    Returns:
        tuple: ``sums (d,)`` (float64, accumulated in double), the largest
        ``|points[i, j]|`` (a float, 0 without rows) and the distances
        ``(m,)`` or None.
    """
    m, d = _check_points(points)
    bounds = chunk_bounds(m, d, 1 if first is None else 2)
    sums = PartBuffers(len(bounds) - 1, (d,), numpy.float64)
    amax = PartBuffers(len(bounds) - 1, (d,), points.dtype)
    d2 = first_addr = d2_addr = None
    if first is not None:
        first = _as('first', first, points.dtype, (d,))
        d2 = numpy.empty(m, dtype=points.dtype)
        first_addr, d2_addr = address(first), address(d2)
    function('mn_column_sums', points.dtype)(
        address(points), first_addr, sums.addr, sums.step, amax.addr,
        amax.step, d2_addr, d, *chunk_arguments(bounds))
    return sums.sum(), float(numpy.max(amax.block, initial=0)), d2


def candidate_d2(x, candidates, closest_d2):
    """One round of K-means++'s distances: ``min(closest_d2[i], |x_i -
    candidates[t]|^2)``, shape ``(T, m)``, from direct differences (never
    negative), and its row sums, the potential of each candidate
    (accumulated in double).

    Returns:
        tuple: ``d2 (T, m)`` (the points' dtype) and ``potentials (T,)``
        (float64).
    """
    m, d = _check_points(x)
    candidates = numpy.ascontiguousarray(candidates, dtype=x.dtype)
    if candidates.ndim != 2 or candidates.shape[1] != d:
        raise ValueError('candidates must have shape (T, {}), got {}'
                         .format(d, candidates.shape))
    t = candidates.shape[0]
    closest_d2 = _as('closest_d2', closest_d2, x.dtype, (m,))
    out = numpy.empty((t, m), dtype=x.dtype)
    bounds = chunk_bounds(m, d, t)
    potentials = PartBuffers(len(bounds) - 1, (t,), numpy.float64)
    function('mn_candidate_d2', x.dtype)(
        *[address(a) for a in (x, candidates, closest_d2, out)],
        potentials.addr, potentials.step, m, d, t, *chunk_arguments(bounds))
    return out, potentials.sum()


class Seeding(object):

    """Greedy K-means++ (DESIGN §1.1 step 2) on the C kernels: the seeding
    state that :func:`mn_chainer.mixture_steps.kmeans_plusplus` drives,
    twin of :class:`mn_chainer.mixture_steps.Seeding`.

    Every row's squared distance to its nearest centre, the index of that
    centre and their cumulative sum (in double) stay in C arrays from one
    round to the next: a round draws its candidates by inverse CDF
    (``mn_seed_draw``), measures them on every thread's rows
    (``mn_candidate_d2``, direct differences) and keeps the best
    (``mn_seed_keep``): three calls, no array operation.

    Args:
        points: ``(m, d)``, float32 or float64, C-contiguous (the seeding
            does not depend on the origin: the points as given).
        n_components (int): ``K <= m``.
        first: Index ``(1,)`` of the first centre.
        first_d2: Optional squared distances ``(m,)`` to it.

    Attributes:
        closest, labels, indices: The state (``(m,)``, ``(m,)``, ``(K,)``).
    """

    def __init__(self, points, n_components, first, first_d2=None):
        m, d = _check_points(points)
        self.points = points
        self.indices = numpy.empty(n_components, dtype=numpy.int64)
        self.indices[0] = int(first[0])
        if first_d2 is None:
            first_d2 = candidate_d2(
                points, points[self.indices[:1]],
                numpy.full(m, numpy.inf, points.dtype))[0][0]
        self.closest = numpy.array(first_d2, dtype=points.dtype)
        if self.closest.shape != (m,):
            raise ValueError('first_d2 must have shape ({},), got {}'
                             .format(m, self.closest.shape))
        self.labels = numpy.zeros(m, dtype=numpy.int64)
        self.count = 1
        self._cum = numpy.empty(m, dtype=numpy.float64)
        self._bounds = None
        self._t = None
        self._keep = function('mn_seed_keep', points.dtype)
        self._keep(None, None, 0, 0, 0, address(self.closest),
                   address(self.labels), address(self._cum), m, 0)

    def _buffers(self, t):
        """The round's buffers for ``t`` candidates, and their addresses."""
        m, d = self.points.shape
        self._t = t
        self._bounds = chunk_bounds(m, d, t)
        self._u = numpy.empty(t, dtype=numpy.float64)
        self._index = numpy.empty(t, dtype=numpy.int64)
        self._cand = numpy.empty((t, d), dtype=self.points.dtype)
        self._out = numpy.empty((t, m), dtype=self.points.dtype)
        self._chunks = chunk_arguments(self._bounds)
        self._potentials = PartBuffers(len(self._bounds) - 1, (t,),
                                       numpy.float64)
        self._addrs = {name: address(getattr(self, name)) for name in (
            'points', 'closest', 'labels', '_cum', '_u', '_index', '_cand',
            '_out')}

    def draw(self, uniforms):
        """The candidates of a round: the indices ``(T,)`` of the points
        drawn with probability proportional to the squared distance to the
        nearest centre, by the inverse of its cumulative sum at
        ``uniforms`` (in ``[0, 1)``, float64; ``mn_seed_draw``)."""
        t = len(uniforms)
        if t != self._t:
            self._buffers(t)
        m, d = self.points.shape
        a = self._addrs
        self._u[:] = uniforms
        function('mn_seed_draw', self.points.dtype)(
            a['points'], a['_cum'], a['_u'], a['_index'], a['_cand'], m, d, t)
        return self._index

    def add_centre(self, uniforms):
        """One round: draws ``len(uniforms)`` candidates (:meth:`draw`) and
        keeps the one that lowers the potential most."""
        self.draw(uniforms)
        m, d = self.points.shape
        t = self._t
        dtype = self.points.dtype
        a = self._addrs
        potentials = self._potentials
        function('mn_candidate_d2', dtype)(
            a['points'], a['_cand'], a['closest'], a['_out'], potentials.addr,
            potentials.step, m, d, t, *self._chunks)
        best = self._keep(a['_out'], potentials.addr, len(self._bounds) - 1,
                          potentials.step, t, a['closest'], a['labels'],
                          a['_cum'], m, self.count)
        self.indices[self.count] = self._index[best]
        self.count += 1

    def result(self):
        """``centers (K, d)``, ``indices (K,)`` and ``labels (m,)`` (as
        :meth:`mn_chainer.mixture_steps.Seeding.result`)."""
        return self.points[self.indices], self.indices, self.labels


def cluster_sums(points, shift, labels, n_components):
    """Sufficient statistics of hard clusters of ``x = points - shift``
    (accumulated in double).

    Returns:
        tuple: ``counts (K,)`` and ``sums (K, 2d)`` (float64): per cluster,
        the sums of ``x`` and of ``x^2``.
    """
    m, d = _check_points(points)
    shift = _as('shift', shift, points.dtype, (d,))
    labels = _as('labels', labels, numpy.int64, (m,))
    if m and (labels.min() < 0 or labels.max() >= n_components):
        raise ValueError('labels must lie in [0, {})'.format(n_components))
    bounds = chunk_bounds(m, d)
    sums = PartBuffers(len(bounds) - 1, (n_components, 2 * d), numpy.float64)
    counts = PartBuffers(len(bounds) - 1, (n_components,), numpy.float64)
    function('mn_cluster_sums', points.dtype)(
        *[address(a) for a in (points, shift, labels)], sums.addr, sums.step,
        counts.addr, counts.step, d, *chunk_arguments(bounds))
    return counts.sum(), sums.sum()


def em_sums(points, shift, mixture):
    """One E-step and the M-step's sums, fused, for ``x = points - shift``.

    The E-step takes direct differences ``prec (x - mu)^2`` (float32) or
    scaled ones ``(x sqrt(prec) - mu sqrt(prec))^2`` (float64, one fused
    multiply-add); the M-step's sums are accumulated in double, in float32
    about the means ``mu_k`` of ``mixture`` (so that they never cancel in a
    tight component), in float64 about the frame's origin
    (``_cpu_kernels_impl.h``).

    Args:
        points: The points ``(m, d)``.
        shift: ``(d,)``, the origin of the mixture's frame.
        mixture (~mn_chainer.mixture_steps.Mixture): The E-step's mixture,
            its means relative to ``shift``.

    Returns:
        tuple: ``nk (K,)``, ``sums (K, 2d)`` (float64): the responsibility
        sums and the responsibility-weighted sums of ``x - c_k`` and
        ``(x - c_k)^2``, and the origins ``c_k`` of the sums: the means
        ``(K, d)`` (float64) for float32 points, None (the origin) for
        float64 ones (as :func:`mn_chainer.mixture_steps.
        gaussians_from_sums` takes them).
    """
    m, d, k, shift, a, b, log_const = _e_step_arguments(
        points, shift, mixture)
    bounds = chunk_bounds(m, d, k)
    sums = PartBuffers(len(bounds) - 1, (k, 2 * d), numpy.float64)
    nk = PartBuffers(len(bounds) - 1, (k,), numpy.float64)
    scratch = _scratch(_threads(bounds), d, k, points.dtype)
    function('mn_em_sums', points.dtype)(
        *[address(v) for v in (points, shift, a, b, log_const)],
        mixture_steps.log_floor(points.dtype), sums.addr, sums.step, nk.addr,
        nk.step, scratch.addr, scratch.step, d, k, *chunk_arguments(bounds))
    centres = None
    if points.dtype != numpy.float64:
        centres = a.astype(numpy.float64)
    return nk.sum(), sums.sum(), centres


def log_resp(points, shift, mixture):
    """E-step in log space for ``x = points - shift`` under ``mixture`` (its
    means relative to ``shift``; see :func:`em_sums`).

    Returns:
        tuple: log responsibilities ``(m, K)`` and log normalizers
        ``log_norm (m,)`` (``log sum_k pi_k p(x_i | k)``).
    """
    m, d, k, shift, a, b, log_const = _e_step_arguments(
        points, shift, mixture)
    bounds = chunk_bounds(m, d, k)
    out = numpy.empty((m, k), dtype=points.dtype)
    log_norm = numpy.empty(m, dtype=points.dtype)
    scratch = _scratch(_threads(bounds), d, k, points.dtype)
    function('mn_log_resp', points.dtype)(
        *[address(v) for v in (points, shift, a, b, log_const)],
        mixture_steps.log_floor(points.dtype), address(out),
        address(log_norm), scratch.addr, scratch.step, d, k,
        *chunk_arguments(bounds))
    return out, log_norm
