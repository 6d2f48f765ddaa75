"""Tests of :mod:`mn_chainer.kernels` (the CUDA kernels of the mixture fit
and of the transform's passes).

Three layers, each against an independent float64 NumPy reference written
from the formulas (not :mod:`mn_chainer.gmm`): the fit's here, the
transform's in ``transform_pass_reference.py`` (as for its C twins):

* NVRTC compile check of every CUDA source (needs CuPy and the NVRTC
  library, no GPU);
* the same sources compiled as C++ for the CPU with a small emulation of
  the CUDA built-ins they use (one thread per CUDA thread, warp shuffles
  through a barrier), run on small inputs (needs ``g++``, no GPU);
* the CuPy entry points against the reference on a GPU (skipped without one).

This file imports neither Chainer nor ``tests/conftest.py`` helpers (the
rectified-activation case takes its data and float64 posterior from
``mixture_reference.py`` and :mod:`mn_chainer.gmm`, which need NumPy
alone), so ``python -m pytest tests/test_kernels.py`` (or
``python tests/gpu_harness.py``) also runs on a machine with only NumPy
and CuPy.
"""
import ctypes
import functools
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys

import numpy
import pytest

from mn_chainer import kernels
import transform_pass_reference


try:
    import scipy.special as scipy_special
    import scipy.stats as scipy_stats
except ImportError:  # the GPU machines may lack SciPy
    scipy_special = None
    scipy_stats = None


_DTYPES = (numpy.float32, numpy.float64)
# (m, d, K): K = 1, d < 32 (several points per warp), d = 0, d not a
# multiple of 32, K > 32 (several register chunks), the paper's sizes.
_GPU_SHAPES = [
    (1, 1, 1), (37, 3, 1), (5, 1, 2), (100, 5, 3), (257, 33, 5),
    (1000, 64, 10), (2048, 448, 5), (50, 20, 33), (64, 2, 32), (9, 0, 3),
    (130, 100, 17),
]


# ---------------------------------------------------------------------------
# Independent float64 references (DESIGN §1.1)


def _ref_maha(points, means, precisions):
    """``sum_j prec[k, j] * (x[i, j] - mu[k, j])**2``, shape ``(m, K)``."""
    diff = points[:, None, :] - means[None, :, :]
    return (precisions[None, :, :] * diff * diff).sum(axis=2)


def _ref_logsumexp(a):
    amax = a.max(axis=1)
    shift = numpy.where(numpy.isfinite(amax), amax, 0)
    with numpy.errstate(divide='ignore'):
        return numpy.log(numpy.exp(a - shift[:, None]).sum(axis=1)) + shift


def _ref_estep(points, log_weights, means, precisions):
    """float64 ``(log_resp, log_norm, maha)`` from the E-step formulas."""
    points, log_weights, means, precisions = (
        numpy.asarray(a, numpy.float64)
        for a in (points, log_weights, means, precisions))
    d = points.shape[1]
    maha = _ref_maha(points, means, precisions)
    log_prob = log_weights[None, :] - 0.5 * (
        d * math.log(2 * math.pi) - numpy.log(precisions).sum(axis=1)[None]
        + maha)
    log_norm = _ref_logsumexp(log_prob)
    if scipy_special is not None:
        numpy.testing.assert_allclose(
            log_norm, scipy_special.logsumexp(log_prob, axis=1),
            rtol=1e-12, atol=1e-12)
    return log_prob - log_norm[:, None], log_norm, maha


def _ref_sq_dist(points, centres):
    points, centres = (numpy.asarray(a, numpy.float64)
                       for a in (points, centres))
    diff = points[:, None, :] - centres[None, :, :]
    return (diff * diff).sum(axis=2)  # (m, K)


def _tolerance(dtype, scale):
    """Absolute tolerance: 64 ulp of the magnitude the sums run through."""
    return 64 * numpy.finfo(dtype).eps * (1 + scale)


def _make_inputs(rng, m, d, k, dtype, neg_inf=True):
    points = rng.standard_normal((m, d)).astype(dtype)
    means = rng.standard_normal((k, d)).astype(dtype)
    precisions = numpy.exp(rng.standard_normal((k, d))).astype(dtype)
    log_weights = numpy.log(rng.dirichlet(numpy.ones(k))).astype(dtype)
    if neg_inf and k >= 2:
        # First (no finite term yet in a running log-sum-exp) and middle.
        log_weights[[0, k // 2] if k >= 3 else [0]] = -numpy.inf
    return points, log_weights, means, precisions


def _check_estep(log_resp, log_norm, points, log_weights, means, precisions):
    ref_resp, ref_norm, maha = _ref_estep(points, log_weights, means,
                                          precisions)
    dtype = points.dtype
    assert log_resp.dtype == dtype and log_norm.dtype == dtype
    assert log_resp.shape == ref_resp.shape
    assert log_norm.shape == ref_norm.shape
    assert not numpy.isnan(log_resp).any()
    assert not numpy.isnan(log_norm).any()
    numpy.testing.assert_array_equal(numpy.isneginf(log_resp),
                                     numpy.isneginf(ref_resp))
    scale = (maha.max(initial=0) + 2 * points.shape[1]
             + numpy.abs(numpy.log(precisions.astype(numpy.float64)))
             .sum(axis=1).max(initial=0))
    tol = _tolerance(dtype, scale)
    finite = numpy.isfinite(ref_resp)
    numpy.testing.assert_allclose(log_resp[finite], ref_resp[finite],
                                  rtol=0, atol=tol)
    numpy.testing.assert_allclose(log_norm, ref_norm, rtol=0, atol=tol)
    if points.shape[0]:
        # Responsibilities of a point sum to one.
        numpy.testing.assert_allclose(
            numpy.exp(log_resp.astype(numpy.float64)).sum(axis=1), 1,
            rtol=0, atol=max(tol, 1e-6))


def _check_candidate_d2(out, points, candidates, closest_d2):
    d2 = _ref_sq_dist(points, candidates).T  # (T, m)
    ref = numpy.minimum(d2, closest_d2.astype(numpy.float64)[None, :])
    assert out.dtype == points.dtype and out.shape == ref.shape
    assert (out >= 0).all()
    numpy.testing.assert_allclose(
        out, ref, rtol=0,
        atol=_tolerance(points.dtype, d2.max(initial=0)))


def _check_assign(labels, min_d2, points, centres):
    d2 = _ref_sq_dist(points, centres)
    assert labels.dtype == numpy.int64 and labels.shape == (len(points),)
    assert min_d2.dtype == points.dtype and min_d2.shape == (len(points),)
    tol = _tolerance(points.dtype, d2.max(initial=0))
    numpy.testing.assert_allclose(min_d2, d2.min(axis=1), rtol=0, atol=tol)
    # Labels must agree wherever the nearest centre is not a near tie, and
    # on exact ties (d = 0) be the first index, as numpy.argmin.
    order = numpy.sort(d2, axis=1)
    if centres.shape[0] > 1:
        gap = order[:, 1] - order[:, 0]
        clear = (gap > 2 * tol) | (gap == 0)
    else:
        clear = numpy.ones(len(points), bool)
    assert clear.mean() > 0.5
    numpy.testing.assert_array_equal(labels[clear], d2.argmin(axis=1)[clear])
    assert ((labels >= 0) & (labels < centres.shape[0])).all()


@pytest.mark.skipif(scipy_stats is None, reason='SciPy is not installed')
def test_reference_log_prob_is_diagonal_gaussian():
    # The reference itself, against scipy.stats: log pi_k + sum_j log N(..).
    rng = numpy.random.default_rng(0)
    points, log_weights, means, precisions = _make_inputs(
        rng, 20, 4, 3, numpy.float64, neg_inf=False)
    log_resp, log_norm, _ = _ref_estep(points, log_weights, means,
                                       precisions)
    log_prob = numpy.stack([
        log_weights[k] + scipy_stats.norm.logpdf(
            points, means[k], 1 / numpy.sqrt(precisions[k])).sum(axis=1)
        for k in range(3)], axis=1)
    numpy.testing.assert_allclose(log_resp + log_norm[:, None], log_prob,
                                  rtol=1e-12)


# ---------------------------------------------------------------------------
# Sources and import hygiene (no CuPy needed)


def test_kernel_sources_cover_every_kernel():
    sources = kernels.kernel_sources()
    assert sources
    assert {'mixnorm_estep_log_resp', 'mixnorm_candidate_d2'} <= set(
        kernels.KERNEL_NAMES)
    for dtype, real in (('float32', 'float'), ('float64', 'double')):
        names = [n for n in sources if dtype in n]
        assert len(names) == len(kernels.CHUNK_SIZES)
        for name in names:
            assert 'typedef {} mixnorm_real;'.format(real) in sources[name]
    for source in sources.values():
        assert '#include' not in source
        defined = re.findall(r'extern "C" __global__ void (\w+)\(', source)
        assert sorted(defined) == sorted(kernels.KERNEL_NAMES)


def test_module_source_rejects_bad_arguments():
    with pytest.raises(ValueError, match='float16'):
        kernels.module_source(numpy.float16, 8)
    with pytest.raises(ValueError, match='chunk'):
        kernels.module_source(numpy.float32, 5)


def test_chunk_and_group_sizes():
    assert [kernels._chunk_size(n) for n in (1, 4, 5, 32, 33)] == [
        4, 4, 8, 32, 32]
    assert [kernels._group_size(d) for d in (0, 1, 2, 3, 17, 32, 448)] == [
        1, 1, 2, 4, 32, 32, 32]


def test_imports_without_cupy_or_chainer():
    # Block CuPy and Chainer in a fresh interpreter: the module and its
    # sources must still load, and it must not import them itself; so must
    # the fit (mn_chainer.gmm and the modules it imports), which then fits
    # NumPy points.
    code = '\n'.join([
        'import sys',
        'for name in ("cupy", "cupy_backends", "cupyx", "chainer"):',
        '    sys.modules[name] = None',
        'import numpy',
        'from mn_chainer import gmm',
        'from mn_chainer import kernels',
        'assert kernels.kernel_sources()',
        'points = numpy.random.RandomState(0).randn(50, 3)',
        'assert gmm.fit_gmm(points, 2, rng=0).n_components == 2',
        'try:',
        '    kernels.estep_log_resp(None, None, None, None)',
        'except ImportError:',
        '    pass',
        'else:',
        '    raise AssertionError("no ImportError without CuPy")',
    ])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [root] + [p for p in [env.get('PYTHONPATH')] if p])
    result = subprocess.run([sys.executable, '-c', code], cwd=root, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# NVRTC compile check (CuPy + NVRTC library, no GPU)


def _preload_nvrtc():
    """Load ``libnvrtc`` from the ``nvidia-cuda-nvrtc-cu12`` wheel if any.

    CuPy looks the library up by its soname; the wheel's ``lib`` folder is
    not on the loader path, so load it globally first (no LD_LIBRARY_PATH
    needed).  Without the wheel the system library (a CUDA toolkit) is used.
    """
    try:
        spec = importlib.util.find_spec('nvidia.cuda_nvrtc')
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        lib = os.path.join(location, 'lib')
        if not os.path.isdir(lib):
            continue
        for name in sorted(os.listdir(lib)):
            if re.match(r'libnvrtc\.so\.\d+$', name):
                ctypes.CDLL(os.path.join(lib, name), mode=ctypes.RTLD_GLOBAL)
                return


@pytest.fixture(scope='module')
def nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as e:
        pytest.skip('CuPy is not installed ({}); CI installs cupy-cuda12x '
                    'and nvidia-cuda-nvrtc-cu12 for this check'.format(e))
    _preload_nvrtc()
    try:
        nvrtc.getVersion()
    except Exception as e:  # CuPy raises RuntimeError when it cannot load it
        pytest.fail('CuPy is installed but the NVRTC library does not load '
                    '({}); install nvidia-cuda-nvrtc-cu12'.format(e))
    return nvrtc


def _compile(nvrtc, source, name, options):
    """Compile with NVRTC; returns ``(ptx or b'', log)``, fails on error."""
    program = nvrtc.createProgram(source, name + '.cu', [], [])
    try:
        try:
            nvrtc.compileProgram(program, options)
        except Exception as e:
            pytest.fail('NVRTC failed to compile {} with {}: {}\n{}'.format(
                name, options, e, nvrtc.getProgramLog(program)))
        log = nvrtc.getProgramLog(program)
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    if isinstance(log, bytes):
        log = log.decode('utf-8', 'replace')
    if isinstance(ptx, str):
        ptx = ptx.encode()
    return ptx, log.replace('\x00', '')


# The options cupy.RawModule adds on CUDA 12 (besides -I and the arch).
_CUPY_OPTIONS = ['-ftz=true', '--device-as-default-execution-space']


@pytest.mark.parametrize('name', sorted(kernels.kernel_sources()))
def test_nvrtc_compiles(nvrtc, name):
    source = kernels.kernel_sources()[name]
    # PTX for Ampere: every kernel is there, float32 stays float32.
    ptx, _ = _compile(nvrtc, source, name,
                      ['--gpu-architecture=compute_80'] + _CUPY_OPTIONS)
    for kernel in kernels.KERNEL_NAMES:
        assert re.search(rb'\.entry\s+' + kernel.encode() + rb'\s*\(', ptx), (
            kernel)
    if 'float32' in name:
        # No accidental promotion to double (a double literal or call).
        assert b'.f64' not in ptx
    # Hopper, through NVRTC's built-in ptxas (compute_90 front end + SASS):
    # the register chunks must not spill to local memory.
    _, log = _compile(nvrtc, source, name,
                      ['--gpu-architecture=sm_90', '--ptxas-options=-v']
                      + _CUPY_OPTIONS)
    spills = re.findall(r'(\d+) bytes spill stores', log)
    assert spills and all(int(s) == 0 for s in spills), log


# ---------------------------------------------------------------------------
# CPU emulation of the CUDA sources (g++, no GPU)

_EMULATION_PRELUDE = r"""
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
using std::exp;
using std::log;
struct emu_dim3 { unsigned x, y, z; };
thread_local emu_dim3 threadIdx, blockIdx;
emu_dim3 blockDim, gridDim;
// Set when the lanes of a warp do not all reach a shuffle within 5 s (on a
// GPU: a hang or undefined behaviour); every later wait then returns.
static std::atomic<int> emu_diverged(0);
struct emu_warp {
    std::mutex mutex;
    std::condition_variable cv;
    int arrived = 0;
    long generation = 0;
    unsigned char slot[32][8];
    void sync() {
        std::unique_lock<std::mutex> lock(mutex);
        const long gen = generation;
        if (++arrived == 32) {
            arrived = 0;
            ++generation;
            cv.notify_all();
            return;
        }
        if (!cv.wait_for(lock, std::chrono::seconds(5),
                         [&] { return generation != gen || emu_diverged; })) {
            emu_diverged = 1;
            cv.notify_all();
        }
    }
};
thread_local emu_warp* emu_this_warp;
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __int_as_float(int i) {
    float f; std::memcpy(&f, &i, 4); return f; }
static inline double __longlong_as_double(long long i) {
    double f; std::memcpy(&f, &i, 8); return f; }
template <class T> T __shfl_xor_sync(unsigned, T v, int offset) {
    const int lane = threadIdx.x & 31;
    std::memcpy(emu_this_warp->slot[lane], &v, sizeof(T));
    emu_this_warp->sync();
    T r;
    std::memcpy(&r, emu_this_warp->slot[lane ^ offset], sizeof(T));
    emu_this_warp->sync();
    return r;
}
// Blocks run one after another, the threads of a block concurrently.
static void emu_launch(unsigned grid, unsigned block,
                       const std::function<void()>& body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::vector<std::unique_ptr<emu_warp>> warps;
        for (unsigned w = 0; w < block / 32; ++w) {
            warps.emplace_back(new emu_warp);
        }
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&, b, t]() {
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                emu_this_warp = warps[t / 32].get();
                body();
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
    }
}
extern "C" int emu_check_and_reset() {
    return emu_diverged.exchange(0);
}
"""

_EMULATION_LAUNCHERS = r"""
extern "C" {
void emu_estep(const mixnorm_real* points, const mixnorm_real* log_weights,
               const mixnorm_real* means, const mixnorm_real* precisions,
               long long m, long long d, long long k, int group,
               unsigned grid, unsigned block, mixnorm_real* log_resp,
               mixnorm_real* log_norm) {
    std::vector<mixnorm_real> log_const(k);
    emu_launch(k, 32, [&]() {
        mixnorm_estep_const(log_weights, precisions, k, d, log_const.data());
    });
    emu_launch(grid, block, [&]() {
        mixnorm_estep_log_resp(points, means, precisions, log_const.data(),
                               m, d, k, log_resp, log_norm, group);
    });
}
void emu_candidate_d2(const mixnorm_real* points,
                      const mixnorm_real* candidates,
                      const mixnorm_real* closest_d2, long long m,
                      long long d, long long t, int group, unsigned grid,
                      unsigned block, mixnorm_real* out) {
    emu_launch(grid, block, [&]() {
        mixnorm_candidate_d2(points, candidates, closest_d2, m, d, t, out,
                             group);
    });
}
void emu_kmeans_assign(const mixnorm_real* points,
                       const mixnorm_real* centres, long long m, long long d,
                       long long k, int group, unsigned grid, unsigned block,
                       long long* labels, mixnorm_real* min_d2) {
    emu_launch(grid, block, [&]() {
        mixnorm_kmeans_assign(points, centres, m, d, k, labels, min_d2,
                              group);
    });
}
// The transform's kernels: their arrays, flags and output, then the shape
// (n, c, p, k) and the launch.
void emu_mix_sums(const mixnorm_real* x, const mixnorm_real* values,
                  const mixnorm_real* w, const mixnorm_real* shift,
                  const mixnorm_real* sign, const mixnorm_real* thresholds,
                  int has_values, int masked, long long slices,
                  mixnorm_real* out, long long n, long long c, long long p,
                  long long k, unsigned grid, unsigned block) {
    emu_launch(grid, block, [&]() {
        mixnorm_mix_sums(x, values, w, shift, sign, thresholds, has_values,
                         masked, n, c, p, k, slices, out);
    });
}
void emu_mix_forward(const mixnorm_real* x, const mixnorm_real* a,
                     const mixnorm_real* shift, const mixnorm_real* scale,
                     const mixnorm_real* offset, int relu, mixnorm_real* y,
                     long long n, long long c, long long p, long long k,
                     unsigned grid, unsigned block) {
    emu_launch(grid, block, [&]() {
        mixnorm_mix_forward(x, a, shift, scale, offset, relu, n, c, p, k, y);
    });
}
void emu_mix_grad_x(const mixnorm_real* x, const mixnorm_real* a,
                    const mixnorm_real* g, const mixnorm_real* shift,
                    const mixnorm_real* sign, const mixnorm_real* thresholds,
                    const mixnorm_real* u, const mixnorm_real* w1,
                    const mixnorm_real* w2, int masked, mixnorm_real* gx,
                    long long n, long long c, long long p, long long k,
                    unsigned grid, unsigned block) {
    emu_launch(grid, block, [&]() {
        mixnorm_mix_grad_x(x, a, g, shift, sign, thresholds, masked, u, w1,
                           w2, n, c, p, k, gx);
    });
}
}
"""

# Emulated block size (a multiple of 32 but not the launcher's 256, so the
# kernels are checked for any block size) and grid caps (None: one group
# per point; 2: the grid-stride loop runs several rounds).
_EMU_BLOCK = 64


class _Emulated(object):

    """The kernels of one (dtype, chunk) source, compiled for the CPU."""

    def __init__(self, path, dtype):
        self.lib = ctypes.CDLL(path)
        self.dtype = numpy.dtype(dtype)

    def _check(self):
        if self.lib.emu_check_and_reset():
            pytest.fail('the lanes of a warp did not all reach a shuffle')

    @staticmethod
    def _ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)

    @staticmethod
    def _grid(m, d, max_grid):
        group = kernels._group_size(d)
        grid = -(-m // (_EMU_BLOCK // group))
        if max_grid is not None:
            grid = min(grid, max_grid)
        return (ctypes.c_int(group), ctypes.c_uint(grid),
                ctypes.c_uint(_EMU_BLOCK))

    def estep(self, points, log_weights, means, precisions, max_grid):
        (m, d), k = points.shape, means.shape[0]
        log_resp = numpy.full((m, k), numpy.nan, self.dtype)
        log_norm = numpy.full((m,), numpy.nan, self.dtype)
        ll = ctypes.c_longlong
        self.lib.emu_estep(
            *[self._ptr(a) for a in (points, log_weights, means, precisions)],
            ll(m), ll(d), ll(k), *self._grid(m, d, max_grid),
            self._ptr(log_resp), self._ptr(log_norm))
        self._check()
        return log_resp, log_norm

    def candidate_d2(self, points, candidates, closest_d2, max_grid):
        (m, d), t = points.shape, candidates.shape[0]
        out = numpy.full((t, m), numpy.nan, self.dtype)
        ll = ctypes.c_longlong
        self.lib.emu_candidate_d2(
            *[self._ptr(a) for a in (points, candidates, closest_d2)],
            ll(m), ll(d), ll(t), *self._grid(m, d, max_grid), self._ptr(out))
        self._check()
        return out

    def kmeans_assign(self, points, centres, max_grid):
        (m, d), k = points.shape, centres.shape[0]
        labels = numpy.full((m,), -1, numpy.int64)
        min_d2 = numpy.full((m,), numpy.nan, self.dtype)
        ll = ctypes.c_longlong
        self.lib.emu_kmeans_assign(
            self._ptr(points), self._ptr(centres), ll(m), ll(d), ll(k),
            *self._grid(m, d, max_grid), self._ptr(labels),
            self._ptr(min_d2))
        self._check()
        return labels, min_d2

    def _transform(self, name, arrays, flags, out, shape, grid):
        """Launch ``emu_<name>`` on ``arrays`` (pointers), ``flags``
        (ints, or int64 for numpy.int64), ``out`` (returned), the shape
        ``(n, c, p, k)`` and ``grid`` blocks of :data:`_EMU_BLOCK`."""
        flags = [ctypes.c_longlong(f) if isinstance(f, numpy.int64)
                 else ctypes.c_int(f) for f in flags]
        getattr(self.lib, 'emu_' + name)(
            *[self._ptr(a) for a in arrays], *flags, self._ptr(out),
            *[ctypes.c_longlong(v) for v in shape], ctypes.c_uint(grid),
            ctypes.c_uint(_EMU_BLOCK))
        self._check()
        return out

    def mix_sums(self, case, values, masked, slices):
        """``mixnorm_mix_sums`` in ``slices`` slices, their partial sums
        added in float64 (as :func:`mn_chainer.kernels.mix_sums`); arrays
        a flag turns off are NaN (never read)."""
        (n, c, p), k = case.x.shape, case.w.shape[1]
        poison = numpy.full(case.x.shape, numpy.nan, self.dtype)
        out = numpy.full((slices, 2, k, c), numpy.nan, self.dtype)
        grid = -(-c * slices * 32 // _EMU_BLOCK)
        self._transform('mix_sums', (
            case.x, poison if values is None else values, case.w, case.shift,
            case.sign if masked else poison,
            case.thresholds if masked else poison), (
                int(values is not None), int(masked), numpy.int64(slices)),
            out, (n, c, p, k), grid)
        return out.sum(axis=0, dtype=numpy.float64)

    def _elementwise_grid(self, x, max_grid):
        grid = -(-x.size // _EMU_BLOCK)
        return grid if max_grid is None else min(grid, max_grid)

    def mix_forward(self, case, relu, max_grid):
        (n, c, p), k = case.x.shape, case.w.shape[1]
        return self._transform(
            'mix_forward', (case.x, case.w, case.shift, case.scale,
                            case.offset), (int(relu),),
            numpy.full(case.x.shape, numpy.nan, self.dtype), (n, c, p, k),
            self._elementwise_grid(case.x, max_grid))

    def mix_grad_x(self, case, masked, max_grid):
        (n, c, p), k = case.x.shape, case.w.shape[1]
        poison = numpy.full(case.x.shape, numpy.nan, self.dtype)
        return self._transform(
            'mix_grad_x', (case.x, case.w, case.values, case.shift,
                           case.sign if masked else poison,
                           case.thresholds if masked else poison, case.u,
                           case.w1, case.w2), (int(masked),),
            numpy.full(case.x.shape, numpy.nan, self.dtype), (n, c, p, k),
            self._elementwise_grid(case.x, max_grid))


@pytest.fixture(scope='module')
def emulated(tmp_path_factory):
    """``emulated(dtype, chunk)`` -> :class:`_Emulated` (built once)."""
    compiler = shutil.which('g++')
    if compiler is None:
        pytest.skip('g++ is not installed (CPU emulation of the kernels)')
    folder = tmp_path_factory.mktemp('mixnorm_emulation')
    built = {}

    def get(dtype, chunk):
        key = (numpy.dtype(dtype).char, chunk)
        if key not in built:
            stem = os.path.join(folder, 'mixnorm_{}{}'.format(*key))
            with open(stem + '.cpp', 'w') as f:
                f.write(_EMULATION_PRELUDE)
                f.write(kernels.module_source(dtype, chunk))
                f.write(_EMULATION_LAUNCHERS)
            result = subprocess.run(
                [compiler, '-std=c++11', '-O1', '-pthread', '-shared',
                 '-fPIC', '-Wall', '-Wno-unknown-pragmas', '-o',
                 stem + '.so', stem + '.cpp'],
                capture_output=True, text=True, timeout=120)
            if result.returncode:
                pytest.fail('the kernels do not compile as C++:\n'
                            + result.stderr)
            built[key] = _Emulated(stem + '.so', dtype)
        return built[key]

    return get


# (m, d, K, chunk, max_grid): groups of 1, 2, 4 and 32 lanes, d = 0,
# one and several chunks (K > chunk, up to 9 chunks), a -inf weight,
# grid-stride rounds.  One chunk size keeps this to two C++ builds.
_EMU_CASES = [
    (1, 1, 1, 4, None),
    (37, 3, 2, 4, 2),
    (16, 2, 4, 4, None),
    (70, 33, 5, 4, 2),
    (9, 0, 3, 4, None),
    (20, 40, 9, 4, 3),
    (12, 5, 33, 4, 2),
]


@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('m, d, k, chunk, max_grid', _EMU_CASES)
def test_emulated_kernels(emulated, dtype, m, d, k, chunk, max_grid):
    rng = numpy.random.default_rng(m * 1000 + d * 10 + k)
    inputs = _make_inputs(rng, m, d, k, dtype)
    lib = emulated(dtype, chunk)
    log_resp, log_norm = lib.estep(*inputs, max_grid=max_grid)
    _check_estep(log_resp, log_norm, *inputs)

    points, _, centres, _ = inputs
    labels, min_d2 = lib.kmeans_assign(points, centres, max_grid=max_grid)
    _check_assign(labels, min_d2, points, centres)

    n_candidates = min(k, chunk + 1)
    candidates = rng.standard_normal((n_candidates, d)).astype(dtype)
    closest_d2 = (rng.random(m) * 2 * d).astype(dtype)
    out = lib.candidate_d2(points, candidates, closest_d2, max_grid=max_grid)
    _check_candidate_d2(out, points, candidates, closest_d2)


def _dead_channel_case():
    """Issue 14 item 2: rectified activations (exact zeros) and the mixture
    a float64 fit gives them, with the variance 1e-6 (precision 1e6) in
    channels where a component's points are all zero, centred as the fit
    centres them; the float64 posterior of that float32 mixture.  The
    expanded quadratic of a float32 E-step is up to 1 away from it here.
    """
    from mn_chainer import gmm  # NumPy only
    import mixture_reference
    x64 = mixture_reference.rectified_modes(m=256, d=64, scale=10.0, seed=1)
    points = x64.astype(numpy.float32)
    mixture = gmm.Mixture(*(a.astype(numpy.float32) for a in gmm.fit_gmm(
        x64, 3, rng=0, min_weight=0)))
    assert (mixture.variances < 1.1e-6).any()
    shift = points.mean(axis=0)
    with numpy.errstate(divide='ignore'):
        log_weights = numpy.log(mixture.weights)
    inputs = (points - shift, log_weights, mixture.means - shift,
              (1 / mixture.variances.astype(numpy.float64)).astype(
                  numpy.float32))
    return inputs, mixture_reference.posterior(x64, mixture)


def test_emulated_estep_dead_channels(emulated):
    """The CUDA E-step (direct differences) in float32 is within 1e-4 of
    the float64 posterior on rectified activations with dead channels."""
    inputs, expected = _dead_channel_case()
    log_resp, _ = emulated(numpy.float32, 4).estep(*inputs, max_grid=None)
    numpy.testing.assert_allclose(numpy.exp(log_resp), expected, atol=1e-4)


# (shape, K, slices of the sums, grid cap of the element-wise kernels):
# one point, P = 1 (uncoalesced lanes), C = 1, P = 9 (a warp over several
# samples), lines longer than a warp; K over two register chunks of 4;
# uneven slices; grid-stride rounds.
_EMU_TRANSFORM_CASES = [
    ((1, 1, 1), 1, 1, None),
    ((5, 3, 1), 2, 2, None),
    ((3, 1, 70), 6, 3, 2),
    ((4, 6, 9), 3, 1, 1),
    ((2, 3, 130), 5, 7, 3),
]


@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('shape, k, slices, max_grid', _EMU_TRANSFORM_CASES)
def test_emulated_transform_kernels(emulated, dtype, shape, k, slices,
                                    max_grid):
    """The transform's kernels against the float64 definitions of their
    passes (``transform_pass_reference.py``, as their C twins are
    tested), within 64 roundoffs of the magnitude of their terms; the
    arrays a flag turns off are NaN."""
    lib = emulated(dtype, 4)
    case = transform_pass_reference.case(shape, k, dtype, seed=k)
    big = transform_pass_reference.absolute(case)
    check = functools.partial(transform_pass_reference.assert_pass_close,
                              dtype=dtype)
    mask = (case.sign, case.thresholds)
    for values, masked in ((None, False), (case.values, False),
                           (case.values, True)):
        check(lib.mix_sums(case, values, masked, slices),
              transform_pass_reference.mix_sums(
                  case.x, case.w, case.shift, values,
                  *(mask if masked else (None, None))),
              transform_pass_reference.mix_sums(
                  big.x, big.w, big.shift,
                  None if values is None else big.values),
              name='sums (values {}, mask {})'.format(values is not None,
                                                      masked))
    for relu in (False, True):
        check(lib.mix_forward(case, relu, max_grid),
              transform_pass_reference.mix_forward(
                  case.x, case.w, case.shift, case.scale, case.offset, relu),
              transform_pass_reference.mix_forward(
                  big.x, big.w, big.shift, big.scale, big.offset, False),
              name='forward (relu {})'.format(relu))
    for masked in (False, True):
        check(lib.mix_grad_x(case, masked, max_grid),
              transform_pass_reference.mix_grad_x(
                  case.x, case.w, case.values, case.shift, case.u, case.w1,
                  case.w2, *(mask if masked else (None, None))),
              transform_pass_reference.mix_grad_x(
                  big.x, big.w, big.values, big.shift, big.u, big.w1,
                  big.w2),
              name='grad_x (mask {})'.format(masked))


# ---------------------------------------------------------------------------
# CuPy entry points


@pytest.fixture(scope='module')
def cupy_module():
    try:
        import cupy
    except ImportError:
        pytest.skip('CuPy is not installed')
    return cupy


def test_entry_points_reject_numpy_arrays(cupy_module):
    points = numpy.zeros((4, 2), numpy.float32)
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.estep_log_resp(points, numpy.zeros(1), points[:1], points[:1])
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.kmeanspp_candidate_d2(points, points[:1], points[:, 0])
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.kmeans_assign(points, points[:1])


def test_transform_entry_points_reject_numpy_arrays(cupy_module):
    case = transform_pass_reference.case((2, 3, 4), 2, numpy.float32)
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.mix_sums(case.x, case.w, case.shift)
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.mix_forward(case.x, case.w, case.shift, case.scale,
                            case.offset, True)
    with pytest.raises(TypeError, match='cupy.ndarray'):
        kernels.mix_grad_x(case.x, case.w, case.values, case.shift, case.u,
                           case.w1, case.w2)


@pytest.fixture(scope='module')
def cupy(cupy_module):
    """CuPy with at least one usable GPU, else skip."""
    try:
        count = cupy_module.cuda.runtime.getDeviceCount()
    except Exception as e:
        pytest.skip('no usable CUDA device ({})'.format(e))
    if count == 0:
        pytest.skip('no CUDA device')
    return cupy_module


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('m, d, k', _GPU_SHAPES)
def test_estep_log_resp_gpu(cupy, dtype, m, d, k):
    rng = numpy.random.default_rng(7 * m + d + k)
    inputs = _make_inputs(rng, m, d, k, dtype)
    log_resp, log_norm = kernels.estep_log_resp(
        *[cupy.asarray(a) for a in inputs])
    assert isinstance(log_resp, cupy.ndarray)
    _check_estep(cupy.asnumpy(log_resp), cupy.asnumpy(log_norm), *inputs)


@pytest.mark.gpu
def test_estep_dead_channels_gpu(cupy):
    inputs, expected = _dead_channel_case()
    log_resp, _ = kernels.estep_log_resp(*[cupy.asarray(a) for a in inputs])
    numpy.testing.assert_allclose(numpy.exp(cupy.asnumpy(log_resp)),
                                  expected, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('m, d, k', _GPU_SHAPES)
def test_kmeanspp_candidate_d2_gpu(cupy, dtype, m, d, k):
    rng = numpy.random.default_rng(11 * m + d + k)
    points = rng.standard_normal((m, d)).astype(dtype)
    candidates = rng.standard_normal((k, d)).astype(dtype)
    closest_d2 = (rng.random(m) * 2 * d).astype(dtype)
    closest_d2[::3] = numpy.inf  # before the first centre
    out = kernels.kmeanspp_candidate_d2(
        cupy.asarray(points), cupy.asarray(candidates),
        cupy.asarray(closest_d2))
    _check_candidate_d2(cupy.asnumpy(out), points, candidates, closest_d2)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('m, d, k', _GPU_SHAPES)
def test_kmeans_assign_gpu(cupy, dtype, m, d, k):
    rng = numpy.random.default_rng(13 * m + d + k)
    points = rng.standard_normal((m, d)).astype(dtype)
    centres = rng.standard_normal((k, d)).astype(dtype)
    labels, min_d2 = kernels.kmeans_assign(cupy.asarray(points),
                                           cupy.asarray(centres))
    _check_assign(cupy.asnumpy(labels), cupy.asnumpy(min_d2), points,
                  centres)


@pytest.mark.gpu
def test_float32_distances_never_negative_gpu(cupy):
    # Far from the origin and close together: the expansion |x|^2 - 2x.c +
    # |c|^2 cancels catastrophically in float32; direct differences do not.
    rng = numpy.random.default_rng(3)
    centre = numpy.full((1, 64), 1e3, numpy.float32)
    points = centre + 1e-3 * rng.standard_normal((256, 64)).astype(
        numpy.float32)
    out = cupy.asnumpy(kernels.kmeanspp_candidate_d2(
        cupy.asarray(points), cupy.asarray(centre),
        cupy.full((256,), numpy.inf, numpy.float32)))
    _check_candidate_d2(out, points, centre, numpy.full(256, numpy.inf))
    _, min_d2 = kernels.kmeans_assign(cupy.asarray(points),
                                      cupy.asarray(centre))
    numpy.testing.assert_allclose(cupy.asnumpy(min_d2), out[0], rtol=1e-6)


@pytest.mark.gpu
def test_non_contiguous_and_mixed_dtype_inputs_gpu(cupy):
    rng = numpy.random.default_rng(5)
    points, log_weights, means, precisions = _make_inputs(
        rng, 300, 24, 4, numpy.float32)
    log_resp, log_norm = kernels.estep_log_resp(
        cupy.asfortranarray(cupy.asarray(points)),
        cupy.asarray(log_weights, numpy.float64),  # cast to float32
        cupy.asarray(means.T).T, cupy.asarray(precisions))
    assert log_resp.dtype == numpy.float32
    _check_estep(cupy.asnumpy(log_resp), cupy.asnumpy(log_norm), points,
                 log_weights, means, precisions)


@pytest.mark.gpu
def test_empty_and_bad_inputs_gpu(cupy):
    points = cupy.zeros((0, 3), numpy.float32)
    params = cupy.zeros((2, 3), numpy.float32)
    log_resp, log_norm = kernels.estep_log_resp(
        points, cupy.zeros(2, numpy.float32), params, params + 1)
    assert log_resp.shape == (0, 2) and log_norm.shape == (0,)
    assert kernels.kmeanspp_candidate_d2(
        points, params, cupy.zeros(0, numpy.float32)).shape == (2, 0)
    labels, _ = kernels.kmeans_assign(points, params)
    assert labels.shape == (0,)
    ok = cupy.zeros((5, 3), numpy.float32)
    with pytest.raises(ValueError, match='2-D'):
        kernels.kmeans_assign(ok[0], params)
    with pytest.raises(TypeError, match='float32 or float64'):
        kernels.kmeans_assign(ok.astype(numpy.float16), params)
    with pytest.raises(ValueError, match='precisions'):
        kernels.estep_log_resp(ok, cupy.zeros(2, numpy.float32), params,
                               params[:1])
    with pytest.raises(ValueError, match='K >= 1'):
        kernels.estep_log_resp(ok, cupy.zeros(0, numpy.float32),
                               params[:0], params[:0])
    with pytest.raises(ValueError, match='closest_d2'):
        kernels.kmeanspp_candidate_d2(ok, params, cupy.zeros(4))


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', _DTYPES)
@pytest.mark.parametrize('k', [1, 2, 6, 33])
@pytest.mark.parametrize('shape', transform_pass_reference.SHAPES + [
    (64, 448, 64), (7, 3, 1100), (0, 3, 4), (2, 3, 0)])
def test_transform_kernels_gpu(cupy, dtype, shape, k):
    """The transform's kernels on a GPU against the float64 definitions of
    their passes, with and without values and masks (no NULL arrays: see
    ``TRANSFORM_SOURCE``), K over several register chunks, 1100 points a
    line (several slices), empty batches."""
    case = transform_pass_reference.case(shape, k, dtype, seed=k)
    big = transform_pass_reference.absolute(case)
    on_gpu = case._replace(**{name: cupy.asarray(getattr(case, name))
                              for name in case._fields})
    mask = (case.sign, case.thresholds)
    gpu_mask = (on_gpu.sign, on_gpu.thresholds)

    def check(actual, expected, magnitude, name):
        assert isinstance(actual, cupy.ndarray)
        transform_pass_reference.assert_pass_close(
            cupy.asnumpy(actual), expected, magnitude, dtype, name)

    for values, masked in ((None, False), (on_gpu.values, False),
                           (on_gpu.values, True)):
        sums = kernels.mix_sums(on_gpu.x, on_gpu.w, on_gpu.shift, values,
                                gpu_mask if masked else None)
        assert sums.dtype == numpy.float64
        check(sums, transform_pass_reference.mix_sums(
            case.x, case.w, case.shift,
            None if values is None else case.values,
            *(mask if masked else (None, None))),
            transform_pass_reference.mix_sums(
                big.x, big.w, big.shift,
                None if values is None else big.values), 'sums')
    for relu in (False, True):
        check(kernels.mix_forward(on_gpu.x, on_gpu.w, on_gpu.shift,
                                  on_gpu.scale, on_gpu.offset, relu),
              transform_pass_reference.mix_forward(
                  case.x, case.w, case.shift, case.scale, case.offset, relu),
              transform_pass_reference.mix_forward(
                  big.x, big.w, big.shift, big.scale, big.offset, False),
              'forward')
    for masked in (False, True):
        check(kernels.mix_grad_x(on_gpu.x, on_gpu.w, on_gpu.values,
                                 on_gpu.shift, on_gpu.u, on_gpu.w1,
                                 on_gpu.w2, gpu_mask if masked else None),
              transform_pass_reference.mix_grad_x(
                  case.x, case.w, case.values, case.shift, case.u, case.w1,
                  case.w2, *(mask if masked else (None, None))),
              transform_pass_reference.mix_grad_x(
                  big.x, big.w, big.values, big.shift, big.u, big.w1,
                  big.w2), 'grad_x')


@pytest.mark.gpu
def test_no_host_synchronisation_gpu(cupy):
    cupyx = pytest.importorskip('cupyx')
    allow_synchronize = getattr(cupyx, 'allow_synchronize', None)
    if allow_synchronize is None:
        pytest.skip('this CuPy has no cupyx.allow_synchronize')
    rng = numpy.random.default_rng(9)
    inputs = [cupy.asarray(a) for a in _make_inputs(
        rng, 512, 40, 5, numpy.float32)]
    closest = cupy.full((512,), numpy.inf, numpy.float32)

    case = transform_pass_reference.case((16, 40, 9), 5, numpy.float32)
    case = case._replace(**{name: cupy.asarray(getattr(case, name))
                            for name in case._fields})

    def run():
        kernels.estep_log_resp(*inputs)
        kernels.kmeanspp_candidate_d2(inputs[0], inputs[2][:3], closest)
        kernels.kmeans_assign(inputs[0], inputs[2])
        kernels.mix_sums(case.x, case.w, case.shift, case.values,
                         (case.sign, case.thresholds))
        kernels.mix_forward(case.x, case.w, case.shift, case.scale,
                            case.offset, True)
        kernels.mix_grad_x(case.x, case.w, case.values, case.shift, case.u,
                           case.w1, case.w2, (case.sign, case.thresholds))

    run()  # compiles and loads the modules
    cupy.cuda.Stream.null.synchronize()
    with allow_synchronize(False):
        run()
    cupy.cuda.Stream.null.synchronize()
