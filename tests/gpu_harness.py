"""Run the kernel tests and time the kernels on a GPU machine.

Usage (from anywhere; needs only NumPy, CuPy and pytest, no Chainer)::

    python tests/gpu_harness.py [--no-bench] [extra pytest arguments]

It runs the tests of the fit that need no Chainer (``tests/test_kernels.py``,
``tests/test_gmm.py``, ``tests/test_fit_numerics.py``: the kernels, and the
fit on CuPy against float64 references) without ``tests/conftest.py`` (so
nothing else of the project has to be installed; scikit-learn is optional),
then, when a GPU is present, prints
the device time of every kernel for the paper-sized case (m = 8192 points,
d = 448 channels, K = 5 components) next to the same computation written
with plain CuPy array operations.
"""
import math
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The test files that need neither Chainer nor ``tests/conftest.py``.
TEST_FILES = ('test_kernels.py', 'test_gmm.py', 'test_fit_numerics.py')


def run_tests(extra):
    command = [sys.executable, '-m', 'pytest', '-q', '--noconftest',
               '-p', 'no:cacheprovider',
               '-W', 'ignore::pytest.PytestUnknownMarkWarning', '-rs']
    command += [os.path.join(ROOT, 'tests', name) for name in TEST_FILES]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    return subprocess.call(command + list(extra), cwd=ROOT, env=env)


def _estep_array_ops(cupy, points, log_weights, means, precisions):
    # The un-fused computation (the expansion of the NumPy twin).
    d = points.shape[1]
    maha = (points * points) @ precisions.T
    maha -= 2 * (points @ (means * precisions).T)
    maha += (means * means * precisions).sum(axis=1)[None, :]
    log_prob = log_weights[None, :] - 0.5 * (
        d * math.log(2 * math.pi) - cupy.log(precisions).sum(axis=1)[None]
        + maha)
    amax = log_prob.max(axis=1, keepdims=True)
    log_norm = cupy.log(cupy.exp(log_prob - amax).sum(axis=1)) + amax[:, 0]
    return log_prob - log_norm[:, None], log_norm


def bench(m=8192, d=448, k=5, n_trials=3):
    import numpy
    try:
        import cupy
        from cupyx import profiler
        if cupy.cuda.runtime.getDeviceCount() == 0:
            raise RuntimeError('no device')
    except Exception as e:  # no CuPy or no GPU
        print('benchmark skipped: {}'.format(e))
        return
    sys.path.insert(0, ROOT)
    from mn_chainer import kernels

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print('device: {}, CuPy {}, NumPy {}'.format(
        props['name'].decode(), cupy.__version__, numpy.__version__))
    print('m={} d={} K={} T={} (device time, mean of 200 runs)'.format(
        m, d, k, n_trials))
    for dtype in (numpy.float32, numpy.float64):
        rng = cupy.random.RandomState(0)
        points = rng.standard_normal((m, d)).astype(dtype)
        means = rng.standard_normal((k, d)).astype(dtype)
        precisions = cupy.exp(rng.standard_normal((k, d))).astype(dtype)
        log_weights = cupy.log(cupy.full((k,), 1.0 / k, dtype))
        candidates = points[:n_trials].copy()
        closest = cupy.full((m,), numpy.inf, dtype)
        cases = [
            ('estep_log_resp', kernels.estep_log_resp,
             (points, log_weights, means, precisions)),
            ('  (array ops)', lambda *a: _estep_array_ops(cupy, *a),
             (points, log_weights, means, precisions)),
            ('kmeanspp_candidate_d2', kernels.kmeanspp_candidate_d2,
             (points, candidates, closest)),
            ('kmeans_assign', kernels.kmeans_assign, (points, means)),
        ]
        for name, func, args in cases:
            result = profiler.benchmark(func, args, n_repeat=200,
                                        n_warmup=10)
            gpu = float(numpy.mean(result.gpu_times)) * 1e6
            cpu = float(numpy.mean(result.cpu_times)) * 1e6
            print('  {:8s} {:24s} gpu {:8.1f} us   host {:8.1f} us'.format(
                numpy.dtype(dtype).name, name, gpu, cpu))


def main(argv):
    do_bench = '--no-bench' not in argv
    extra = [a for a in argv if a != '--no-bench']
    status = run_tests(extra)
    if do_bench:
        bench()
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
