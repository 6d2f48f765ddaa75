"""Fused CUDA kernels of the mixture fit (:mod:`mn_chainer.gmm` on a GPU)
and of the Mixture Normalizing Transform's passes.

:class:`mn_chainer.fit_passes.CudaPasses` runs the fit's kernels in a fit on
CuPy arrays, :class:`mn_chainer.functions.transform_passes.CudaPasses` the
transform's.  Every kernel here has a twin (the reference its tests compare
against): the fit's in NumPy (:mod:`mn_chainer.mixture_steps`), the
transform's in C (:mod:`mn_chainer.transform_kernels`, same arguments,
itself tested against NumPy):

================================  =========================================
kernel (this module)              twin
================================  =========================================
:func:`estep_log_resp`            ``mixture_steps.estimate_log_resp``
:func:`kmeanspp_candidate_d2`     ``mixture_steps.candidate_d2``
:func:`kmeans_assign`             ``mixture_steps.hard_assign`` (labels)
:func:`mix_sums`                  ``transform_kernels.mix_sums``
:func:`mix_forward`               ``transform_kernels.mix_forward``
:func:`mix_grad_x`                ``transform_kernels.mix_grad_x``
================================  =========================================

The module imports with NumPy alone: CuPy is imported inside the functions
that launch a kernel, so that :func:`kernel_sources` (the CUDA sources, used
by the NVRTC compile check of the tests) works on a machine without a GPU.

Design (one point per *group* of ``G`` lanes of a warp, ``G`` the smallest
power of two ``>= d`` capped at 32, so that small ``d`` does not leave most
lanes idle):

* The lanes of a group stride over the ``d`` coordinates of their point and
  accumulate, for a *chunk* of up to ``MIXNORM_CHUNK`` components (or
  candidate centres) at once, the squared differences in registers; the
  point is read once per chunk.  Differences are taken directly,
  ``(x - mu) ** 2``, never through ``|x|^2 - 2 x.mu + |mu|^2``, so a squared
  distance is never negative.
* The partial sums are reduced with a butterfly of warp shuffles, after
  which every lane of the group holds the same totals.
* The E-step keeps the running maximum of ``log p(x_i, k)`` over the
  components in registers and stores the values; a second pass over the
  ``K`` outputs of its own lanes sums their exponentials under the
  tiny-value rule of :mod:`mn_chainer.mixture_steps` (a value more than
  ``MIXNORM_LOG_FLOOR`` below the maximum counts as that floor), and a
  third subtracts the normalizer: one pass over the point matrix, nothing
  of size ``(m, K, d)`` and no host synchronisation.

The chunk size is a compile-time constant (generated ``#define``); a module
is compiled for each (dtype, chunk) pair actually used and memoized.  Any
number of components works: more than ``MIXNORM_CHUNK`` are processed chunk
by chunk.

The transform's kernels (``TRANSFORM_SOURCE``): the sums, one warp per
channel and slice of the points (its lanes read consecutive positions of a
sample, sum a chunk of components in registers, then add their sums by
shuffles; the slices' partial sums are added in float64 on the host, in a
fixed order); the output and the input's gradient, one thread per element
of the activations, the components looped inside.  Each reads the
activations once.
"""

import functools

import numpy

from mn_chainer import mixture_steps
from mn_chainer import transform_kernels


# Lanes per block of every point-wise kernel (8 warps).
_BLOCK = 256
# Upper bound of the grid; the kernels stride over the remaining points.
_MAX_BLOCKS = 1 << 16
# Register chunk sizes (components/centres per pass over a point).
CHUNK_SIZES = (4, 8, 16, 32)
# Floating types with a kernel instantiation, by NumPy type character.
_REAL_TYPES = {'f': 'float', 'd': 'double'}
_INF = {
    'f': '__int_as_float(0x7f800000)',
    'd': '__longlong_as_double(0x7ff0000000000000LL)',
}


# The generated header: ``#define``s and the ``mixnorm_real`` typedef.
HEADER_TEMPLATE = r"""// mn_chainer.kernels: {real}, chunk {chunk}
typedef {real} mixnorm_real;
#define MIXNORM_CHUNK {chunk}
#define MIXNORM_INF {inf}
#define MIXNORM_LOG_2PI ((mixnorm_real)1.8378770664093454835606594728112)
#define MIXNORM_LOG_FLOOR ((mixnorm_real){log_floor!r})
#define MIXNORM_FULL_MASK 0xffffffffu
"""


# Device helpers shared by the kernels.
DEVICE_FUNCTIONS_SOURCE = r"""
// Sum over the `group` lanes (a power of two <= 32, groups aligned within
// the warp) by a shuffle butterfly: every lane of the group gets the total.
// All 32 lanes of the warp must call it together.
__device__ __forceinline__ mixnorm_real mixnorm_group_sum(
        mixnorm_real v, int group) {
    for (int offset = group >> 1; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(MIXNORM_FULL_MASK, v, offset);
    }
    return v;
}

// The grid-stride walk of a point-wise kernel over the m points, one group
// of `group` lanes (a power of two <= 32, the kernel's last argument) per
// point; blockDim.x is a multiple of 32.  The loop condition is uniform
// over the warp (shuffles need all lanes): groups past the end work on the
// last point (valid() false) and must write nothing.
struct mixnorm_walk {
    const int lane;           // this lane's index in its group
    const int group_in_warp;  // this group's index in its warp
    const long long step;     // groups in the grid
    long long i;              // the point
    __device__ __forceinline__ explicit mixnorm_walk(int group)
        : lane(threadIdx.x & (group - 1)),
          group_in_warp((threadIdx.x & 31) / group),
          step((long long)gridDim.x * (blockDim.x / group)),
          i(((long long)blockIdx.x * blockDim.x + threadIdx.x) / group) {}
    __device__ __forceinline__ bool more(long long m) const {
        return i - group_in_warp < m;
    }
    __device__ __forceinline__ bool valid(long long m) const {
        return i < m;
    }
    // The index of the point this group reads (the last one past the end).
    __device__ __forceinline__ long long row(long long m) const {
        return i < m ? i : m - 1;
    }
};

// Centres in the register chunk that starts `left` centres before the end.
__device__ __forceinline__ int mixnorm_chunk(long long left) {
    return left < MIXNORM_CHUNK ? (int)left : MIXNORM_CHUNK;
}

// acc[c] = sum_j w[c, j] * (x[j] - centres[c, j])^2 for c < n_centres
// (w = 1 unless WEIGHTED), summed over the lanes of the group.  Rows of
// `centres` and `weights` have length d.  n_centres is warp-uniform.
template <bool WEIGHTED>
__device__ __forceinline__ void mixnorm_sq_dist_chunk(
        const mixnorm_real* __restrict__ x,
        const mixnorm_real* __restrict__ centres,
        const mixnorm_real* __restrict__ weights,
        int n_centres, long long d, int lane, int group,
        mixnorm_real (&acc)[MIXNORM_CHUNK]) {
#pragma unroll
    for (int c = 0; c < MIXNORM_CHUNK; ++c) {
        acc[c] = 0;
    }
    for (long long j = lane; j < d; j += group) {
        const mixnorm_real xj = x[j];
#pragma unroll
        for (int c = 0; c < MIXNORM_CHUNK; ++c) {
            if (c < n_centres) {
                const mixnorm_real diff = xj - centres[c * d + j];
                if (WEIGHTED) {
                    acc[c] += weights[c * d + j] * (diff * diff);
                } else {
                    acc[c] += diff * diff;
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < MIXNORM_CHUNK; ++c) {
        if (c < n_centres) {
            acc[c] = mixnorm_group_sum(acc[c], group);
        }
    }
}
"""


# The fused E-step (diagonal Gaussian log-densities + log-sum-exp).
ESTEP_SOURCE = r"""
// out[k] = log_weights[k] - (d log(2 pi) - sum_j log(precisions[k, j])) / 2.
// Grid: one block of 32 threads (one warp) per component.
extern "C" __global__ void mixnorm_estep_const(
        const mixnorm_real* __restrict__ log_weights,
        const mixnorm_real* __restrict__ precisions,
        long long n_components, long long d,
        mixnorm_real* __restrict__ out) {
    const long long k = blockIdx.x;
    if (k >= n_components) {
        return;
    }
    mixnorm_real log_det = 0;
    for (long long j = threadIdx.x; j < d; j += 32) {
        log_det += log(precisions[k * d + j]);
    }
    log_det = mixnorm_group_sum(log_det, 32);
    if (threadIdx.x == 0) {
        const mixnorm_real half = 0.5;
        out[k] = log_weights[k]
            - half * ((mixnorm_real)d * MIXNORM_LOG_2PI - log_det);
    }
}

// log_resp[i, k] = log p(x_i, k) - log_norm[i],
// log p(x_i, k) = log_const[k] - sum_j prec[k, j] (x_ij - mu_kj)^2 / 2,
// log_norm[i] = logsumexp_k log p(x_i, k) under the tiny-value rule
// (mn_chainer/mixture_steps.py): terms more than MIXNORM_LOG_FLOOR below
// the maximum count as that floor; -inf for a row of -inf, NaN stays NaN.
// One group of `group` lanes per point (a power of two <= 32, the last
// argument of every point-wise kernel); blockDim.x is a multiple of 32.
// A component with log_const = -inf gets log_resp = -inf.
extern "C" __global__ void mixnorm_estep_log_resp(
        const mixnorm_real* __restrict__ points,
        const mixnorm_real* __restrict__ means,
        const mixnorm_real* __restrict__ precisions,
        const mixnorm_real* __restrict__ log_const,
        long long m, long long d, long long n_components,
        mixnorm_real* __restrict__ log_resp,
        mixnorm_real* __restrict__ log_norm, int group) {
    const mixnorm_real neg_inf = -MIXNORM_INF;
    for (mixnorm_walk w(group); w.more(m); w.i += w.step) {
        const long long i = w.i;
        const int lane = w.lane;
        const bool valid = w.valid(m);
        const mixnorm_real* x = points + w.row(m) * d;
        mixnorm_real* out = log_resp + i * n_components;
        mixnorm_real run_max = neg_inf;
        for (long long k0 = 0; k0 < n_components; k0 += MIXNORM_CHUNK) {
            const int n_chunk = mixnorm_chunk(n_components - k0);
            mixnorm_real acc[MIXNORM_CHUNK];
            mixnorm_sq_dist_chunk<true>(
                x, means + k0 * d, precisions + k0 * d, n_chunk, d, lane,
                group, acc);
#pragma unroll
            for (int c = 0; c < MIXNORM_CHUNK; ++c) {
                if (c < n_chunk) {
                    const long long k = k0 + c;
                    const mixnorm_real lp =
                        log_const[k] - (mixnorm_real)0.5 * acc[c];
                    // The maximum; a NaN stays (no comparison is true).
                    run_max = (lp > run_max || lp != lp) ? lp : run_max;
                    if (valid && lane == (int)(k & (group - 1))) {
                        out[k] = lp;
                    }
                }
            }
        }
        // Each lane rereads only what it wrote itself; the group sums.
        mixnorm_real part = 0;
        if (valid) {
            for (long long k = lane; k < n_components; k += group) {
                const mixnorm_real v = out[k] - run_max;
                part += exp(v < MIXNORM_LOG_FLOOR ? MIXNORM_LOG_FLOOR : v);
            }
        }
        const mixnorm_real total = mixnorm_group_sum(part, group);
        if (valid) {
            const mixnorm_real lse =
                run_max == neg_inf ? neg_inf : run_max + log(total);
            for (long long k = lane; k < n_components; k += group) {
                out[k] -= lse;
            }
            if (lane == 0) {
                log_norm[i] = lse;
            }
        }
    }
}
"""


# The greedy k-means++ step: potential of every candidate centre.
CANDIDATE_D2_SOURCE = r"""
// out[t, i] = min(closest_d2[i], sum_j (points[i, j] - candidates[t, j])^2).
extern "C" __global__ void mixnorm_candidate_d2(
        const mixnorm_real* __restrict__ points,
        const mixnorm_real* __restrict__ candidates,
        const mixnorm_real* __restrict__ closest_d2,
        long long m, long long d, long long n_candidates,
        mixnorm_real* __restrict__ out, int group) {
    for (mixnorm_walk w(group); w.more(m); w.i += w.step) {
        const bool valid = w.valid(m);
        const mixnorm_real* x = points + w.row(m) * d;
        const mixnorm_real closest = closest_d2[w.row(m)];
        for (long long t0 = 0; t0 < n_candidates; t0 += MIXNORM_CHUNK) {
            const int n_chunk = mixnorm_chunk(n_candidates - t0);
            mixnorm_real acc[MIXNORM_CHUNK];
            mixnorm_sq_dist_chunk<false>(
                x, candidates + t0 * d, NULL, n_chunk, d, w.lane, group, acc);
#pragma unroll
            for (int c = 0; c < MIXNORM_CHUNK; ++c) {
                if (c < n_chunk && valid && w.lane == (c & (group - 1))) {
                    out[(t0 + c) * m + w.i] = acc[c] < closest ? acc[c]
                                                               : closest;
                }
            }
        }
    }
}
"""


# Lloyd assignment: nearest centre and its squared distance.
KMEANS_ASSIGN_SOURCE = r"""
// labels[i] = argmin_k sum_j (points[i, j] - centres[k, j])^2 (the first
// on ties), min_d2[i] = that minimum.
extern "C" __global__ void mixnorm_kmeans_assign(
        const mixnorm_real* __restrict__ points,
        const mixnorm_real* __restrict__ centres,
        long long m, long long d, long long n_centres,
        long long* __restrict__ labels,
        mixnorm_real* __restrict__ min_d2, int group) {
    for (mixnorm_walk w(group); w.more(m); w.i += w.step) {
        const bool valid = w.valid(m);
        const mixnorm_real* x = points + w.row(m) * d;
        mixnorm_real best = MIXNORM_INF;
        long long best_k = 0;
        for (long long k0 = 0; k0 < n_centres; k0 += MIXNORM_CHUNK) {
            const int n_chunk = mixnorm_chunk(n_centres - k0);
            mixnorm_real acc[MIXNORM_CHUNK];
            mixnorm_sq_dist_chunk<false>(
                x, centres + k0 * d, NULL, n_chunk, d, w.lane, group, acc);
#pragma unroll
            for (int c = 0; c < MIXNORM_CHUNK; ++c) {
                if (c < n_chunk && acc[c] < best) {
                    best = acc[c];
                    best_k = k0 + c;
                }
            }
        }
        if (valid && w.lane == 0) {
            labels[w.i] = best_k;
            min_d2[w.i] = best;
        }
    }
}
"""


# The fused passes of the Mixture Normalizing Transform.
TRANSFORM_SOURCE = r"""
// The passes of mn_chainer.functions.transform_passes on CuPy, twins of the
// C kernels of mn_chainer/_transform_kernels_impl.h (same arguments, same
// definitions): activations x and values v, g (N, C, P), coefficients w, a
// (N, K, P), per-channel values (C), per-component values (K, C), all
// C-contiguous; every pass works on x - shift.  The rectification of Eq. 40
// enters the gradient as a mask: component k is on where
// sign[c] (x - shift[c]) > thresholds[k, c] (masked 0: no mask).  Where the
// C kernels take NULL these take a flag, and the array (any valid one) is
// not read: CuPy passes None to a kernel as a pointer that is not NULL.

// The responsibility-weighted sums of one pass, in partial sums: for slice
// s of the m = N P points and channel c,
//   out[s, 0, k, c] = sum over the slice of w m v,
//   out[s, 1, k, c] = sum over the slice of w m v (x - shift),
// v = values where has_values, else x - shift.  One warp per (c, s),
// warp index c + C s (blockDim.x a multiple of 32, at least C * slices
// warps); its lanes stride over the points of the slice (consecutive
// positions of a sample: coalesced reads for P >= 32) and sum in registers
// for a chunk of components, then the warp adds its lanes' sums.
extern "C" __global__ void mixnorm_mix_sums(
        const mixnorm_real* __restrict__ x,
        const mixnorm_real* __restrict__ values,
        const mixnorm_real* __restrict__ w,
        const mixnorm_real* __restrict__ shift,
        const mixnorm_real* __restrict__ sign,
        const mixnorm_real* __restrict__ thresholds, int has_values,
        int masked, long long n, long long channels, long long size,
        long long n_components, long long slices,
        mixnorm_real* __restrict__ out) {
    const long long warp =
        ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= channels * slices) {
        return;  // the whole warp
    }
    const long long c = warp % channels, s = warp / channels;
    const long long m = n * size;
    const long long q0 = m * s / slices, q1 = m * (s + 1) / slices;
    const mixnorm_real origin = shift[c];
    const mixnorm_real sign_c = masked ? sign[c] : (mixnorm_real)0;
    for (long long k0 = 0; k0 < n_components; k0 += MIXNORM_CHUNK) {
        const int n_chunk = mixnorm_chunk(n_components - k0);
        mixnorm_real sum_v[MIXNORM_CHUNK], sum_vx[MIXNORM_CHUNK];
        mixnorm_real threshold[MIXNORM_CHUNK];
#pragma unroll
        for (int j = 0; j < MIXNORM_CHUNK; ++j) {
            sum_v[j] = 0;
            sum_vx[j] = 0;
            threshold[j] = (masked && j < n_chunk)
                ? thresholds[(k0 + j) * channels + c] : (mixnorm_real)0;
        }
        for (long long q = q0 + lane; q < q1; q += 32) {
            const long long i = q / size, p = q - i * size;
            const long long e = (i * channels + c) * size + p;
            const mixnorm_real xc = x[e] - origin;
            const mixnorm_real v = has_values ? values[e] : xc;
            const mixnorm_real vx = v * xc;
            const mixnorm_real* wq = w + (i * n_components + k0) * size + p;
#pragma unroll
            for (int j = 0; j < MIXNORM_CHUNK; ++j) {
                if (j < n_chunk) {
                    const mixnorm_real wj =
                        (masked && !(sign_c * xc > threshold[j]))
                        ? (mixnorm_real)0 : wq[j * size];
                    sum_v[j] += wj * v;
                    sum_vx[j] += wj * vx;
                }
            }
        }
#pragma unroll
        for (int j = 0; j < MIXNORM_CHUNK; ++j) {
            if (j < n_chunk) {
                const mixnorm_real total_v = mixnorm_group_sum(sum_v[j], 32);
                const mixnorm_real total_vx =
                    mixnorm_group_sum(sum_vx[j], 32);
                if (lane == 0) {
                    const long long kc = (k0 + j) * channels + c;
                    out[(2 * s) * n_components * channels + kc] = total_v;
                    out[(2 * s + 1) * n_components * channels + kc] =
                        total_vx;
                }
            }
        }
    }
}

// The grid-stride walk of an element-wise kernel over the elements e of
// activations (N, C, P): at element e, its channel c and the index `point`
// of its point's coefficient of component 0 in (N, K, P) (component k:
// point + k P).
struct mixnorm_elements {
    const long long channels, size, components, total, step;
    long long e, c, point;
    __device__ __forceinline__ mixnorm_elements(
            long long n, long long channels_, long long size_,
            long long components_)
        : channels(channels_), size(size_), components(components_),
          total(n * channels_ * size_),
          step((long long)gridDim.x * blockDim.x),
          e((long long)blockIdx.x * blockDim.x + threadIdx.x) {
        locate();
    }
    __device__ __forceinline__ bool more() const { return e < total; }
    __device__ __forceinline__ void next() {
        e += step;
        locate();
    }
    __device__ __forceinline__ void locate() {
        const long long line = e / size, i = line / channels;
        c = line - i * channels;
        point = i * components * size + (e - line * size);
    }
};

// The output (Eqs. 34 + 37, or 40 with relu != 0):
//   y = sum_k a_k f(scale[k, c] (x - shift[c]) + offset[k, c]),
// f the identity or max(., 0).  Grid-stride over the elements of x.
extern "C" __global__ void mixnorm_mix_forward(
        const mixnorm_real* __restrict__ x,
        const mixnorm_real* __restrict__ a,
        const mixnorm_real* __restrict__ shift,
        const mixnorm_real* __restrict__ scale,
        const mixnorm_real* __restrict__ offset, int relu,
        long long n, long long channels, long long size,
        long long n_components, mixnorm_real* __restrict__ y) {
    for (mixnorm_elements at(n, channels, size, n_components); at.more();
         at.next()) {
        const mixnorm_real xc = x[at.e] - shift[at.c];
        mixnorm_real acc = 0;
        for (long long k = 0; k < n_components; ++k) {
            const long long kc = k * channels + at.c;
            const mixnorm_real z = scale[kc] * xc + offset[kc];
            acc += a[at.point + k * size]
                * ((relu && z < 0) ? (mixnorm_real)0 : z);
        }
        y[at.e] = acc;
    }
}

// The gradient of the input (DESIGN 1.3, its terms expanded in x):
//   gx = sum_k a_k (m_k u[k, c] g + w1[k, c] + w2[k, c] (x - shift[c])),
// m_k the mask of component k (1 without one).  Grid-stride over the
// elements of x.
extern "C" __global__ void mixnorm_mix_grad_x(
        const mixnorm_real* __restrict__ x,
        const mixnorm_real* __restrict__ a,
        const mixnorm_real* __restrict__ g,
        const mixnorm_real* __restrict__ shift,
        const mixnorm_real* __restrict__ sign,
        const mixnorm_real* __restrict__ thresholds, int masked,
        const mixnorm_real* __restrict__ u,
        const mixnorm_real* __restrict__ w1,
        const mixnorm_real* __restrict__ w2,
        long long n, long long channels, long long size,
        long long n_components, mixnorm_real* __restrict__ gx) {
    for (mixnorm_elements at(n, channels, size, n_components); at.more();
         at.next()) {
        const mixnorm_real xc = x[at.e] - shift[at.c];
        const mixnorm_real signed_x =
            masked ? sign[at.c] * xc : (mixnorm_real)0;
        const mixnorm_real ge = g[at.e];
        mixnorm_real acc = 0;
        for (long long k = 0; k < n_components; ++k) {
            const long long kc = k * channels + at.c;
            const mixnorm_real uk =
                (masked && !(signed_x > thresholds[kc])) ? (mixnorm_real)0
                                                         : u[kc];
            acc += a[at.point + k * size]
                * (uk * ge + (w1[kc] + w2[kc] * xc));
        }
        gx[at.e] = acc;
    }
}
"""


# Kernel (global function) names, each defined in every module source.
KERNEL_NAMES = (
    'mixnorm_estep_const',
    'mixnorm_estep_log_resp',
    'mixnorm_candidate_d2',
    'mixnorm_kmeans_assign',
    'mixnorm_mix_sums',
    'mixnorm_mix_forward',
    'mixnorm_mix_grad_x',
)


def module_source(dtype, chunk):
    """Full CUDA source of the kernel module for a dtype and chunk size.

    Args:
        dtype: ``numpy.float32`` or ``numpy.float64`` (anything
            :class:`numpy.dtype` accepts).
        chunk (int): Components per register chunk, one of
            :data:`CHUNK_SIZES`.

    Returns:
        str: Self-contained CUDA C++ (no ``#include``), defining every
        kernel of :data:`KERNEL_NAMES` with ``extern "C"`` linkage.
    """
    char = numpy.dtype(dtype).char
    if char not in _REAL_TYPES:
        raise ValueError('unsupported dtype {} (float32 or float64)'.format(
            numpy.dtype(dtype)))
    if chunk not in CHUNK_SIZES:
        raise ValueError('chunk must be one of {}, got {}'.format(
            CHUNK_SIZES, chunk))
    header = HEADER_TEMPLATE.format(
        real=_REAL_TYPES[char], chunk=chunk, inf=_INF[char],
        log_floor=mixture_steps.log_floor(char))
    return ''.join((header, DEVICE_FUNCTIONS_SOURCE, ESTEP_SOURCE,
                    CANDIDATE_D2_SOURCE, KMEANS_ASSIGN_SOURCE,
                    TRANSFORM_SOURCE))


def kernel_sources():
    """Every CUDA source this module can compile, by instantiation name.

    Returns:
        dict: ``'mixnorm_<dtype>_chunk<n>'`` -> full source, for float32 and
        float64 and every chunk size in :data:`CHUNK_SIZES`.
    """
    sources = {}
    for char in sorted(_REAL_TYPES):
        for chunk in CHUNK_SIZES:
            name = 'mixnorm_{}_chunk{}'.format(numpy.dtype(char).name, chunk)
            sources[name] = module_source(char, chunk)
    return sources


def _chunk_size(n):
    """Smallest register chunk holding ``n`` centres (capped at the max)."""
    for chunk in CHUNK_SIZES:
        if n <= chunk:
            return chunk
    return CHUNK_SIZES[-1]


def _group_size(d):
    """Lanes per point: the smallest power of two >= d, at most 32."""
    group = 1
    while group < min(d, 32):
        group *= 2
    return group


# Memoized per device (the device id is part of the key), as
# ``cupy.memoize(for_each_device=True)``, which cannot decorate at import
# time without importing CuPy.
@functools.lru_cache(maxsize=None)
def _module(char, chunk, device_id):
    import cupy
    return cupy.RawModule(code=module_source(char, chunk))


@functools.lru_cache(maxsize=None)
def _function(name, char, chunk, device_id):
    return _module(char, chunk, device_id).get_function(name)


def _get_kernel(name, dtype, n_centres):
    """Memoized ``mixnorm_*`` kernel for the current device."""
    import cupy
    return _function(name, dtype.char, _chunk_size(n_centres),
                     cupy.cuda.Device().id)


def _check_points(points):
    import cupy
    if not isinstance(points, cupy.ndarray):
        raise TypeError('points must be a cupy.ndarray, got {}'.format(
            type(points)))
    if points.ndim != 2:
        raise ValueError('points must be 2-D (m, d), got shape {}'.format(
            points.shape))
    if points.dtype.char not in _REAL_TYPES:
        raise TypeError('points must be float32 or float64, got {}'.format(
            points.dtype))
    return cupy.ascontiguousarray(points)


def _as_param(name, a, dtype, shape):
    """``a`` as a C-contiguous array of ``dtype`` with the given shape."""
    import cupy
    if not isinstance(a, cupy.ndarray):
        raise TypeError('{} must be a cupy.ndarray, got {}'.format(
            name, type(a)))
    if a.shape != shape:
        raise ValueError('{} must have shape {}, got {}'.format(
            name, shape, a.shape))
    return cupy.ascontiguousarray(a.astype(dtype, copy=False))


class _PointwiseCall(object):

    """The checks, allocations and launch of a point-wise kernel.

    Every point-wise kernel takes ``(points, rows, *inputs, m, d, n,
    *outputs, group)``: the points ``(m, d)``, the ``n`` rows of length
    ``d`` it measures them against (means, candidates or centres), further
    inputs and the outputs.  Used inside ``with call.device:``.

    Args:
        points: The points (checked: a 2-D float32/float64 CuPy array).
        rows_name (str): What the rows are (for error messages).
        rows: ``(n, d)``; ``n >= 1`` unless ``allow_empty``.
        symbol (str): The name of ``n`` in error messages.
        allow_empty (bool): Whether ``n = 0`` is valid.
    """

    def __init__(self, points, rows_name, rows, symbol, allow_empty=False):
        self.points = _check_points(points)
        self.m, self.d = self.points.shape
        self.dtype = self.points.dtype
        if rows.ndim != 2 or (rows.shape[0] == 0 and not allow_empty):
            raise ValueError('{} must have shape ({}, d){}, got {}'.format(
                rows_name, symbol,
                '' if allow_empty else ' with {} >= 1'.format(symbol),
                rows.shape))
        self.n = rows.shape[0]
        self.device = self.points.device
        with self.device:
            self.rows = _as_param(rows_name, rows, self.dtype,
                                  (self.n, self.d))

    def param(self, name, a, shape):
        """Another input, checked for ``shape`` and cast to the dtype."""
        return _as_param(name, a, self.dtype, shape)

    def launch(self, name, inputs, outputs):
        """Run kernel ``name`` (nothing where ``m`` or ``n`` is 0); returns
        ``outputs``."""
        if self.m and self.n:
            group = _group_size(self.d)
            blocks = min(-(-self.m // (_BLOCK // group)), _MAX_BLOCKS)
            _get_kernel(name, self.dtype, self.n)(
                (blocks,), (_BLOCK,),
                (self.points, self.rows) + tuple(inputs)
                + (numpy.int64(self.m), numpy.int64(self.d),
                   numpy.int64(self.n)) + tuple(outputs)
                + (numpy.int32(group),))
        return outputs


def estep_log_resp(points, log_weights, means, precisions):
    """Fused E-step: log responsibilities and log normalizers (CUDA).

    For a diagonal Gaussian mixture,
    ``log p(x_i, k) = log_weights[k] - (d log(2 pi) - sum_j log prec_kj
    + sum_j prec_kj (x_ij - mu_kj)^2) / 2``,
    ``log_norm[i] = logsumexp_k log p(x_i, k)`` and
    ``log_resp[i, k] = log p(x_i, k) - log_norm[i]`` (paper §3.2, the
    E-step in log space).  A component with ``log_weights[k] = -inf`` gets
    ``log_resp = -inf`` as long as one component is finite.  Two launches
    (the ``K`` per-component constants, then one fused pass over the
    points), no host synchronisation.

    Args:
        points: ``cupy.ndarray`` of shape ``(m, d)``, float32 or float64.
        log_weights: ``(K,)`` log mixing weights.
        means: ``(K, d)`` component means.
        precisions: ``(K, d)`` inverse variances (positive).

    Returns:
        tuple: ``log_resp`` of shape ``(m, K)`` and ``log_norm`` of shape
        ``(m,)``, in the dtype of ``points``, on its device.

    .. seealso:: NumPy twin :func:`mn_chainer.mixture_steps.
        estimate_log_resp`.
    """
    import cupy
    call = _PointwiseCall(points, 'means', means, 'K')
    k, d = call.n, call.d
    with call.device:
        log_weights = call.param('log_weights', log_weights, (k,))
        precisions = call.param('precisions', precisions, (k, d))
        log_const = cupy.empty((k,), call.dtype)
        if call.m:
            _get_kernel('mixnorm_estep_const', call.dtype, k)(
                (k,), (32,), (log_weights, precisions, numpy.int64(k),
                              numpy.int64(d), log_const))
        return call.launch(
            'mixnorm_estep_log_resp', (precisions, log_const),
            (cupy.empty((call.m, k), call.dtype),
             cupy.empty((call.m,), call.dtype)))


def kmeanspp_candidate_d2(points, candidates, closest_d2):
    """Greedy k-means++ step: potentials after adding each candidate (CUDA).

    ``out[t, i] = min(closest_d2[i], sum_j (points[i, j] -
    candidates[t, j]) ** 2)``: the squared distance of every point to its
    nearest centre if candidate ``t`` is added (DESIGN §1.1 step 2; the
    candidate lowering ``out[t].sum()`` most is kept).  Direct differences,
    never negative; one launch, no host synchronisation.

    Args:
        points: ``cupy.ndarray`` of shape ``(m, d)``, float32 or float64.
        candidates: ``(T, d)`` candidate centres.
        closest_d2: ``(m,)`` squared distance of every point to its nearest
            chosen centre so far (``inf`` before the first).

    Returns:
        ``cupy.ndarray`` of shape ``(T, m)`` in the dtype of ``points``.

    .. seealso:: NumPy twin :func:`mn_chainer.mixture_steps.candidate_d2`.
    """
    import cupy
    call = _PointwiseCall(points, 'candidates', candidates, 'T',
                          allow_empty=True)
    with call.device:
        closest_d2 = call.param('closest_d2', closest_d2, (call.m,))
        return call.launch(
            'mixnorm_candidate_d2', (closest_d2,),
            (cupy.empty((call.n, call.m), call.dtype),))[0]


def kmeans_assign(points, centres):
    """Lloyd assignment step: nearest centre of every point (CUDA).

    ``labels[i] = argmin_k sum_j (points[i, j] - centres[k, j]) ** 2`` (the
    first index on ties, as :func:`numpy.argmin`) and ``min_d2[i]`` that
    minimum.  Direct differences, never negative; one launch, no host
    synchronisation.

    Args:
        points: ``cupy.ndarray`` of shape ``(m, d)``, float32 or float64.
        centres: ``(K, d)`` centres, ``K >= 1``.

    Returns:
        tuple: ``labels`` (int64, shape ``(m,)``) and ``min_d2`` (shape
        ``(m,)``, dtype of ``points``).

    .. seealso:: NumPy twin :func:`mn_chainer.mixture_steps.hard_assign`.
    """
    import cupy
    call = _PointwiseCall(points, 'centres', centres, 'K')
    with call.device:
        return call.launch(
            'mixnorm_kmeans_assign', (),
            (cupy.empty((call.m,), numpy.int64),
             cupy.empty((call.m,), call.dtype)))


# ---------------------------------------------------------------------------
# The transform's passes (mn_chainer.functions.transform_passes.CudaPasses)

#: Points a lane of :func:`mix_sums` sums in registers at most: a slice of
#: the points has ``32 * POINTS_PER_LANE`` of them (one warp per slice and
#: channel), its partial sums in the activations' dtype are added in
#: float64, as the C kernels flush their partial sums.
POINTS_PER_LANE = 16


class _TransformCall(transform_kernels.PassShapes):

    """The checks, conversions and launches of a transform kernel.

    Args:
        x: Activations ``(N, C, P)``, a float32 or float64 CuPy array.
        coefficients: ``(N, K, P)`` (``K`` is taken from it).
    """

    def __init__(self, x, coefficients):
        import cupy
        super(_TransformCall, self).__init__(x, coefficients, cupy.ndarray)
        self.device = x.device
        with self.device:
            self.x = cupy.ascontiguousarray(x)
        self.dtype = x.dtype

    def array(self, name, a, shape):
        """``a`` checked for the shape ``'x'``, ``'point'``, ``'channel'``
        or ``'component'``, as a C-contiguous array of the dtype of x."""
        with self.device:
            return _as_param(name, a, self.dtype, self.of[shape])

    def mask(self, mask):
        """A mask's kernel arguments ``(sign, thresholds, masked)``, checked
        (without a mask ``x`` twice, not read, and 0)."""
        if mask is None:
            return self.x, self.x, numpy.int32(0)
        return (self.array('sign', mask[0], 'channel'),
                self.array('thresholds', mask[1], 'component'),
                numpy.int32(1))

    def launch(self, name, blocks, leading, trailing):
        """Run ``name`` on ``blocks`` blocks of :data:`_BLOCK` threads with
        the arguments ``leading``, ``N, C, P, K`` and ``trailing`` (nothing
        for no block)."""
        if blocks:
            with self.device:
                _get_kernel(name, self.dtype, max(self.k, 1))(
                    (blocks,), (_BLOCK,), tuple(leading) + tuple(
                        numpy.int64(v) for v in (self.n, self.channels,
                                                 self.size, self.k))
                    + tuple(trailing))

    def elementwise(self, name, leading):
        """Run the grid-stride kernel ``name``; returns its output (the
        shape and dtype of ``x``)."""
        import cupy
        with self.device:
            out = cupy.empty(self.x.shape, self.dtype)
        self.launch(name, min(-(-out.size // _BLOCK), _MAX_BLOCKS), leading,
                    (out,))
        return out


def mix_sums(x, w, shift, values=None, mask=None):
    """The responsibility-weighted sums of one pass over the batch (CUDA):
    ``sum w m v`` and ``sum w m v (x - shift)`` per component and channel,
    one warp per channel and slice of :data:`POINTS_PER_LANE` points per
    lane, the slices' partial sums added in float64 (one launch, no host
    synchronisation).

    Arguments and result (a CuPy array) as its C twin,
    :func:`mn_chainer.transform_kernels.mix_sums`.
    """
    import cupy
    call = _TransformCall(x, w)
    points = call.n * call.size
    slices = max(1, -(-points // (32 * POINTS_PER_LANE)))
    sign, thresholds, masked = call.mask(mask)
    has_values = values is not None
    values = call.array('values', values, 'x') if has_values else call.x
    with call.device:
        out = cupy.zeros((slices, 2, call.k, call.channels), call.dtype)
    warps = call.channels * slices if points else 0
    call.launch('mixnorm_mix_sums', -(-warps * 32 // _BLOCK), (
        call.x, values, call.array('w', w, 'point'),
        call.array('shift', shift, 'channel'), sign, thresholds,
        numpy.int32(has_values), masked), (numpy.int64(slices), out))
    return out.sum(axis=0, dtype=numpy.float64)


def mix_forward(x, a, shift, scale, offset, relu):
    """The output of the transform (Eqs. 34 + 37; Eq. 40 with ``relu``):
    ``y_ncp = sum_k a_nkp f(scale_kc (x_ncp - shift_c) + offset_kc)``, ``f``
    the identity or ``max(., 0)`` (CUDA, one launch).

    Arguments and result as its C twin,
    :func:`mn_chainer.transform_kernels.mix_forward`.
    """
    call = _TransformCall(x, a)
    return call.elementwise('mixnorm_mix_forward', (
        call.x, call.array('a', a, 'point'),
        call.array('shift', shift, 'channel'),
        call.array('scale', scale, 'component'),
        call.array('offset', offset, 'component'),
        numpy.int32(bool(relu))))


def mix_grad_x(x, a, g, shift, u, w1, w2, mask=None):
    """The gradient of the transform's input, its terms expanded in ``x``
    (DESIGN §1.3): ``gx_ncp = sum_k a_nkp (m_nkcp u_kc g_ncp + w1_kc +
    w2_kc (x_ncp - shift_c))`` (CUDA, one launch).

    Arguments and result as its C twin,
    :func:`mn_chainer.transform_kernels.mix_grad_x`.
    """
    call = _TransformCall(x, a)
    return call.elementwise('mixnorm_mix_grad_x', (
        call.x, call.array('a', a, 'point'), call.array('g', g, 'x'),
        call.array('shift', shift, 'channel')) + call.mask(mask) + (
        call.array('u', u, 'component'), call.array('w1', w1, 'component'),
        call.array('w2', w2, 'component')))
