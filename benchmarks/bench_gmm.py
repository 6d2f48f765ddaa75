"""``gmm.fit_gmm`` vs scikit-learn doing the same work, in one run (issue 2).

Both sides fit a diagonal Gaussian mixture to the same points with the same
steps: greedy K-means++ seeding (``2 + floor(ln K)`` trials), one Lloyd step
(assign every point to its nearest seed; the clusters' shares, means and
variances initialise the mixture) and one EM iteration.  scikit-learn does
it with its public pieces, in the dtype of the points it is given (its
fitted parameters and posterior keep it; the header prints what they were
in)::

    centers, _ = sklearn.cluster.kmeans_plusplus(X, K)
    labels = sklearn.metrics.pairwise.euclidean_distances(
        X, centers).argmin(axis=1)
    nk, means, var = _estimate_gaussian_parameters(X, one_hot(labels), ...)
    GaussianMixture(K, covariance_type='diag', max_iter=1, tol=0,
                    weights_init=nk / m, means_init=means,
                    precisions_init=1 / var).fit(X)

(the assignment is the one sklearn's K-means++ uses internally; its
``pairwise_distances_argmin`` gives the same labels).  Ours is
``fit_gmm(x, K, kmeans_iters=1, em_iters=1, sample_ratio=1, min_weight=0)``
(no pruning, like scikit-learn) in ``--dtype`` (float32 and float64 by
default).

Two comparisons side by side (issue 19): ours in float32 against
scikit-learn in float64 (what Mixture Normalization runs against the
reference's default), and equal precision: ours float64 against
scikit-learn float64, ours float32 against scikit-learn float32.
scikit-learn runs in float64 and in every dtype of ``--dtype``.

Each row reports the median time over ``--repeats`` fits after one warm-up
(seed ``r`` on both sides; the contenders take turns seed by seed, so load
changes on a shared machine hit them alike; every timed fit starts after
``--settle`` seconds at rest, for OpenBLAS's worker threads spin about
0.1 s after each call and would share a core with the next fit), the
speed-up (scikit-learn time / our time), and the mean log-likelihood per
point of both fits, evaluated in float64 on the same points and averaged
over the fits of seeds ``0 .. max(--repeats, --ll-seeds) - 1`` (ours:
``gmm.log_likelihood``, scikit-learn: ``GaussianMixture.score``).  One
fit's log-likelihood depends mostly on its K-means++ seeds (both sides draw
them alike but from different random streams), hence the average and its
standard error.

The points are rectified activations: a mixture of four Gaussians in ``d``
dimensions through a ReLU, plus a little Gaussian noise (seeded).

Threads: ``--threads N`` limits BLAS and OpenMP (NumPy's and scikit-learn's)
to N threads through threadpoolctl for the whole run, and our C kernels
alike (``MN_CHAINER_CPU_THREADS``); by default the libraries' own defaults
apply (the ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` environment,
else one thread per core; ours: one per core).  The header prints what was
in effect.

    python benchmarks/bench_gmm.py --markdown --dtype both
    python benchmarks/bench_gmm.py --device cupy    # GPU: CUDA-event timing

On the CPU our fit runs the C kernels of :mod:`mn_chainer.cpu_kernels`
where they are built (the header says which); ``MN_CHAINER_CPU_KERNELS=0``
times the NumPy path instead.

With ``--device cupy`` our fit runs on the current GPU and is timed with
CUDA events (scikit-learn stays on the CPU; ``--skip-sklearn`` leaves it
out), and the run ends with the issue's GPU goal: the whole fit as MN does
it (``min_weight=0.01``, posterior of every point returned) for m = 8192,
d = 448, K = 5, under 1 ms.
"""
import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy

from mn_chainer import gmm

try:
    import threadpoolctl  # comes with scikit-learn
except ImportError:  # e.g. a GPU machine with --skip-sklearn
    threadpoolctl = None


def make_activations(m, d, seed, n_sources=4):
    """Rectified activations: ReLU of a Gaussian mixture, plus noise.

    Returns:
        numpy.ndarray: float64 array of shape ``(m, d)``.
    """
    rs = numpy.random.RandomState(seed)
    weights = rs.dirichlet(numpy.full(n_sources, 2.0))
    centres = rs.randn(n_sources, d)
    scales = rs.uniform(0.3, 1.0, size=(n_sources, d))
    labels = rs.choice(n_sources, size=m, p=weights)
    pre = centres[labels] + scales[labels] * rs.randn(m, d)
    return numpy.maximum(pre, 0) + 0.05 * rs.randn(m, d)


# ---------------------------------------------------------------------------
# The two fits


def fit_sklearn(points, n_components, seed, reg_covar, lloyd='assign'):
    """scikit-learn doing our work (module docstring), in the dtype of
    ``points`` (float32 or float64).

    ``lloyd='kmeans'`` runs the Lloyd step as ``KMeans(init=seeds,
    n_init=1, max_iter=1)`` instead, which assigns the points twice (to the
    seeds, then to the updated centres for ``labels_``): more work than
    ours, shown for reference only.
    """
    from sklearn import cluster
    from sklearn import exceptions
    from sklearn import metrics
    from sklearn import mixture
    from sklearn.mixture import _gaussian_mixture

    centers, _ = cluster.kmeans_plusplus(points, n_components,
                                         random_state=seed)
    if lloyd == 'kmeans':
        with warnings.catch_warnings():  # an empty cluster, now and then
            warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
            labels = cluster.KMeans(n_components, init=centers, n_init=1,
                                    max_iter=1).fit(points).labels_
    else:
        # The assignment as in sklearn's own K-means++ (BLAS distances);
        # metrics.pairwise_distances_argmin gives the same labels but its
        # OpenMP reduction is erratic on a loaded 2-core machine.
        labels = metrics.pairwise.euclidean_distances(
            points, centers).argmin(axis=1)
    resp = numpy.zeros((points.shape[0], n_components), points.dtype)
    resp[numpy.arange(points.shape[0]), labels] = 1
    nk, means, variances = _gaussian_mixture._estimate_gaussian_parameters(
        points, resp, reg_covar, 'diag')
    model = mixture.GaussianMixture(
        n_components, covariance_type='diag', max_iter=1, tol=0,
        reg_covar=reg_covar, weights_init=nk / nk.sum(), means_init=means,
        precisions_init=1 / variances, init_params='random_from_data',
        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', exceptions.ConvergenceWarning)
        model.fit(points)
    return model


def fit_ours(points, n_components, rng, reg_covar, min_weight=0.0,
             return_posterior=False, kmeans_iters=1):
    """Our fit; without ``return_posterior`` (and with ``min_weight=0``)
    it ends after the last M-step, the posterior pass being unneeded."""
    return gmm.fit_gmm(points, n_components, kmeans_iters=kmeans_iters,
                       em_iters=1,
                       sample_ratio=1.0, min_weight=min_weight,
                       reg_covar=reg_covar, rng=rng,
                       return_posterior=return_posterior)


# ---------------------------------------------------------------------------
# Timing


class _CPUTimer(object):

    def __call__(self, fn):
        start = time.perf_counter()
        out = fn()
        return (time.perf_counter() - start) * 1e3, out


class _CUDATimer(object):

    def __init__(self, cupy):
        self.cupy = cupy
        self.start = cupy.cuda.Event()
        self.stop = cupy.cuda.Event()

    def __call__(self, fn):
        self.start.record()
        out = fn()
        self.stop.record()
        self.stop.synchronize()
        return self.cupy.cuda.get_elapsed_time(self.start, self.stop), out


class _Side(object):
    """One contender of a row: how to fit, time and score it
    (``log_likelihood=None``: timed only)."""

    def __init__(self, fit, timer, log_likelihood, prepare=None):
        self.fit = fit
        self.timer = timer
        self.log_likelihood = log_likelihood
        self.prepare = prepare if prepare is not None else (lambda s: s)
        self.times = []
        self.lls = []


def _run(sides, repeats, n_seeds, settle=0.0):
    """Time and score every side, interleaved seed by seed.

    Each side first fits seed 0 untimed (warm-up).  Then, for every seed,
    each side in turn fits ``fit(prepare(seed))`` (``prepare`` is untimed,
    e.g. making a random state); seeds ``0 .. repeats-1`` are timed, seeds
    ``0 .. max(repeats, n_seeds) - 1`` are scored.  Interleaving exposes all
    sides alike to load changes on a shared machine.  Every timed fit waits
    ``settle`` seconds first (untimed): OpenBLAS's worker threads keep
    spinning for about 0.1 s after a BLAS call, so that a fit timed right
    after another side's would share a core with them.
    """
    for side in sides:
        side.fit(side.prepare(0))
    for seed in range(max(repeats, n_seeds)):
        for side in sides:
            if seed >= repeats and side.log_likelihood is None:
                continue
            arg = side.prepare(seed)
            if seed < repeats:
                time.sleep(settle)
                ms, result = side.timer(lambda: side.fit(arg))
                side.times.append(ms)
            else:
                result = side.fit(arg)
            if side.log_likelihood is not None:
                side.lls.append(side.log_likelihood(result))
    return [(statistics.median(side.times), side.lls) for side in sides]


def _mean_se(values):
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float('nan')
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def _host(a):
    return a if isinstance(a, numpy.ndarray) else a.get()


# ---------------------------------------------------------------------------
# Devices


def _get_cupy():
    """CuPy with at least one GPU, or exit with a clear message."""
    try:
        import cupy
    except ImportError as e:
        sys.exit('bench_gmm: --device cupy needs CuPy ({})'.format(e))
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        sys.exit('bench_gmm: --device cupy needs a CUDA GPU; none is usable '
                 'here ({}: {})'.format(type(e).__name__, e))
    if n_devices == 0:
        sys.exit('bench_gmm: --device cupy needs a CUDA GPU; none found')
    return cupy


def _describe_threads():
    parts = []
    pools = threadpoolctl.threadpool_info() if threadpoolctl else []
    for info in pools:
        parts.append('{}={} threads'.format(
            info.get('internal_api', info.get('user_api')),
            info.get('num_threads')))
    env = ', '.join('{}={}'.format(k, os.environ[k]) for k in (
        'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')
        if k in os.environ) or 'no thread variables set'
    return '{} ({})'.format('; '.join(parts) or 'no thread pools', env)


def _gpu_goal(cupy, args):
    """Whole MN fit for m = 8192, d = 448, K = 5 on the GPU."""
    m, d, k = 8192, 448, 5
    x = cupy.asarray(make_activations(m, d, args.seed).astype(numpy.float32))
    timer = _CUDATimer(cupy)
    times = []
    for r in range(-3, max(args.repeats, 20)):  # 3 warm-ups (compilation)
        rng = cupy.random.RandomState(max(r, 0))
        ms, _ = timer(lambda: fit_ours(x, k, rng, args.reg_covar,
                                       min_weight=0.01,
                                       return_posterior=True))
        if r >= 0:
            times.append(ms)
    median = statistics.median(times)
    print('\nGPU goal ({}): whole fit_gmm (kmeans_iters=1, em_iters=1, '
          'min_weight=0.01, posterior returned), m={} d={} K={} float32: '
          'median {:.3f} ms, min {:.3f} ms over {} fits (CUDA events) -> '
          '{} (goal < 1 ms)'.format(
              cupy.cuda.runtime.getDeviceProperties(
                  cupy.cuda.Device().id)['name'].decode(),
              m, d, k, median, min(times), len(times),
              'met' if median < 1 else 'NOT met'))


# ---------------------------------------------------------------------------


def _markdown(rows, header):
    cells = [header] + [[str(c) for c in row] for row in rows]
    lines = ['| ' + ' | '.join(row) + ' |' for row in cells]
    lines.insert(1, '|' + '|'.join('---:' for _ in header) + '|')
    return '\n'.join(lines)


def _text_row(row, header):
    return '  '.join(str(c).rjust(max(len(h), 6))
                     for c, h in zip(row, header))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=('numpy', 'cupy'),
                        default='numpy',
                        help='where our fit runs (scikit-learn: CPU)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed fits per row, after one warm-up')
    parser.add_argument('--dtype', choices=('float32', 'float64', 'both'),
                        default='both',
                        help='our precision (scikit-learn runs in float64 '
                             'and in these)')
    parser.add_argument('--points', type=int, nargs='+',
                        default=[4096, 8192], help='m')
    parser.add_argument('--dims', type=int, nargs='+', default=[196, 448],
                        help='d')
    parser.add_argument('--components', type=int, nargs='+',
                        default=[2, 3, 4, 5], help='K')
    parser.add_argument('--ll-seeds', type=int, default=20,
                        help='seeds whose fits are scored (the timed ones '
                             'and more, untimed): the log-likelihood of one '
                             'fit depends mostly on its K-means++ seeds')
    parser.add_argument('--reg-covar', type=float, default=1e-6)
    parser.add_argument('--seed', type=int, default=0, help='data seed')
    parser.add_argument('--threads', type=int, default=None,
                        help='BLAS/OpenMP threads and those of our C '
                             'kernels (default: library defaults)')
    parser.add_argument('--settle', type=float, default=0.2,
                        help='seconds to wait (untimed) before every timed '
                             'fit, so that BLAS threads spinning after the '
                             'previous fit (OpenBLAS: ~0.1 s) have stopped')
    parser.add_argument('--sklearn-lloyd', choices=('assign', 'kmeans'),
                        default='assign',
                        help="scikit-learn's Lloyd step: 'assign' = same "
                             "work as ours (default); 'kmeans' = "
                             'KMeans(max_iter=1), one more assignment')
    parser.add_argument('--skip-sklearn', action='store_true',
                        help='time only our fit (with --device cupy)')
    parser.add_argument('--markdown', action='store_true',
                        help='print a Markdown table')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error('--repeats must be >= 1')
    if not args.settle >= 0:
        parser.error('--settle must be >= 0')
    if args.skip_sklearn and args.device != 'cupy':
        parser.error('--skip-sklearn is for --device cupy')

    kmeans_iters = 2 if args.sklearn_lloyd == 'kmeans' else 1
    cupy = _get_cupy() if args.device == 'cupy' else None
    xp = cupy if cupy is not None else numpy
    timer = _CUDATimer(cupy) if cupy is not None else _CPUTimer()
    dtypes = (['float32', 'float64'] if args.dtype == 'both'
              else [args.dtype])
    sk_dtypes = [] if args.skip_sklearn else sorted(set(dtypes)
                                                    | {'float64'})

    if args.skip_sklearn:
        reference = 'no scikit-learn'
    else:
        # Imported before the thread limits: threadpoolctl limits only the
        # pools already loaded (scikit-learn brings SciPy's BLAS and OpenMP).
        import sklearn
        import sklearn.cluster  # NOQA: F401
        import sklearn.mixture  # NOQA: F401
        reference = 'scikit-learn {} in {} on CPU (Lloyd: {})'.format(
            sklearn.__version__, '/'.join(sk_dtypes), args.sklearn_lloyd)
    limits = None
    if args.threads:
        if threadpoolctl is None:
            parser.error('--threads needs threadpoolctl')
        limits = threadpoolctl.threadpool_limits(limits=args.threads)
        os.environ['MN_CHAINER_CPU_THREADS'] = str(args.threads)
    print('bench_gmm: ours on {} ({}), {}; python {}, numpy {}, {} CPU '
          'cores'.format(args.device, '/'.join(dtypes), reference,
                         platform.python_version(), numpy.__version__,
                         os.cpu_count()))
    print('threads: {}'.format(_describe_threads()))
    if cupy is None:
        from mn_chainer import cpu_kernels
        print('our CPU passes: {}'.format(
            'C kernels (mn_chainer.cpu_kernels, {} threads)'.format(
                cpu_kernels.n_threads()) if cpu_kernels.available() else
            'NumPy (C kernels not built or MN_CHAINER_CPU_KERNELS=0)'))
    for t in sk_dtypes:
        print('scikit-learn given {} points ran in {}'.format(
            t, _sklearn_precision(t, args.reg_covar)))
    print('time: median of {} fits after a warm-up, each after {:g} s at '
          'rest; kmeans_iters={} em_iters=1 sample_ratio=1 min_weight=0 '
          'reg_covar={:g}'.format(args.repeats, args.settle, kmeans_iters,
                                  args.reg_covar))
    print('LL: mean log-likelihood per point (float64, same points), '
          'averaged over the fits of seeds 0..{}{}\n'.format(
              max(args.repeats, args.ll_seeds) - 1,
              '' if args.skip_sklearn else
              '; ΔLL: ours - sklearn float64 with its standard error'))

    comparisons = _comparisons(dtypes, sk_dtypes)
    header = ['m', 'd', 'K']
    header += ['ours {} ms'.format(t) for t in dtypes]
    header += ['+posterior ms']
    header += ['sklearn {} ms'.format(t) for t in sk_dtypes]
    header += [name for name, _, _ in comparisons]
    if sk_dtypes:
        header += ['speed-up +posterior']
    header += ['LL ours {}'.format(t) for t in dtypes]
    header += ['LL sklearn {}'.format(t) for t in sk_dtypes]
    if sk_dtypes:
        header += ['ΔLL {} ± SE'.format(t) for t in dtypes]
    rows = []
    speedups = {name: [] for name, _, _ in comparisons}
    speedups['+posterior'] = []
    deltas = {t: [] for t in dtypes}
    if not args.markdown:
        print(_text_row(header, header), flush=True)
    for m in args.points:
        for d in args.dims:
            points64 = make_activations(m, d, args.seed)

            def ours_ll(mixture):
                return gmm.log_likelihood(points64, gmm.Mixture(
                    *(_host(a).astype(numpy.float64) for a in mixture)))

            def sklearn_ll(model):
                return float(model.score(points64))

            for k in args.components:
                sides = {}
                for t in dtypes:
                    sides[('ours', t)] = _Side(
                        functools.partial(fit_ours,
                                          xp.asarray(points64.astype(t)), k,
                                          reg_covar=args.reg_covar,
                                          kmeans_iters=kmeans_iters),
                        timer, ours_ll, prepare=xp.random.RandomState)
                # The same fit returning the posterior of every point (one
                # more E-step pass, as Mixture Normalization uses it).
                sides['+posterior'] = _Side(
                    functools.partial(fit_ours, xp.asarray(points64.astype(
                        dtypes[0])), k, reg_covar=args.reg_covar,
                        kmeans_iters=kmeans_iters, return_posterior=True),
                    timer, None, prepare=xp.random.RandomState)
                for t in sk_dtypes:
                    sides[('sklearn', t)] = _Side(
                        functools.partial(
                            fit_sklearn, points64.astype(t), k,
                            reg_covar=args.reg_covar,
                            lloyd=args.sklearn_lloyd),
                        _CPUTimer(), sklearn_ll)
                results = dict(zip(sides, _run(list(sides.values()),
                                               args.repeats, args.ll_seeds,
                                               args.settle)))
                ms = {key: r[0] for key, r in results.items()}
                row = [m, d, k]
                row += ['{:.2f}'.format(ms['ours', t]) for t in dtypes]
                row += ['{:.2f}'.format(ms['+posterior'])]
                row += ['{:.2f}'.format(ms['sklearn', t]) for t in sk_dtypes]
                for name, ours_t, sk_t in comparisons:
                    speedups[name].append(ms['sklearn', sk_t]
                                          / ms['ours', ours_t])
                    row.append('{:.1f}x'.format(speedups[name][-1]))
                if sk_dtypes:
                    speedups['+posterior'].append(ms['sklearn', 'float64']
                                                  / ms['+posterior'])
                    row.append('{:.1f}x'.format(speedups['+posterior'][-1]))
                row += ['{:.3f}'.format(statistics.mean(results['ours', t][1]))
                        for t in dtypes]
                row += ['{:.3f}'.format(statistics.mean(
                    results['sklearn', t][1])) for t in sk_dtypes]
                for t in dtypes if sk_dtypes else ():
                    (m_o, se_o), (m_s, se_s) = map(_mean_se, (
                        results['ours', t][1],
                        results['sklearn', 'float64'][1]))
                    deltas[t].append((m_o - m_s, math.hypot(se_o, se_s)))
                    row.append('{:+.2f} ± {:.2f}'.format(*deltas[t][-1]))
                rows.append(row)
                if not args.markdown:
                    print(_text_row(row, header), flush=True)
    if args.markdown:
        print(_markdown(rows, header))

    if sk_dtypes:
        print()
        for name, ours_t, sk_t in comparisons:
            _print_speedups('ours {} vs sklearn {}'.format(ours_t, sk_t),
                            speedups[name], _GOALS.get((ours_t, sk_t), ''))
        _print_speedups('ours {} +posterior vs sklearn float64'.format(
            dtypes[0]), speedups['+posterior'], '')
        for t in dtypes:
            mean_delta = statistics.mean(dl for dl, _ in deltas[t])
            se_delta = (math.sqrt(sum(se ** 2 for _, se in deltas[t]))
                        / len(deltas[t]))
            print('log-likelihood ours {} - sklearn float64, mean over rows: '
                  '{:+.3f} ± {:.3f} (1 SE) per point; {}'.format(
                      t, mean_delta, se_delta,
                      'equal or better (within 2 SE)'
                      if mean_delta >= -2 * se_delta else 'WORSE'))
    if cupy is not None:
        _gpu_goal(cupy, args)
    if limits is not None:
        limits.restore_original_limits()


#: The speed goals of the issues, by (ours, scikit-learn) precision.
_GOALS = {
    ('float32', 'float64'): ' (issue 14 goal: geometric mean >= 5x; '
                            'issue 19: >= 8x)',
    ('float64', 'float64'): ' (equal precision; issue 19 goal: >= 5x on '
                            'every row)',
    ('float32', 'float32'): ' (equal precision; issue 19 goal: >= 5x on '
                            'every row)',
}


def _comparisons(dtypes, sk_dtypes):
    """``(column name, ours dtype, scikit-learn dtype)`` of the speed-up
    columns: ours float32 against scikit-learn float64, then each of our
    dtypes against scikit-learn in the same."""
    out = []
    if 'float32' in dtypes and 'float64' in sk_dtypes:
        out.append(('f32 vs sk f64', 'float32', 'float64'))
    for t in dtypes:
        if t in sk_dtypes:
            short = 'f' + t[len('float'):]
            out.append(('{0} vs sk {0}'.format(short), t, t))
    return out


def _print_speedups(name, values, goal):
    print('speed-up {}: min {:.1f}x, geometric mean {:.1f}x, max {:.1f}x{}'
          .format(name, min(values),
                  math.exp(statistics.mean(map(math.log, values))),
                  max(values), goal))


def _sklearn_precision(dtype, reg_covar):
    """What scikit-learn's fit ran in, read from a small fit in ``dtype``:
    the dtypes of its fitted means, covariances and posterior."""
    points = make_activations(256, 8, 0).astype(dtype)
    model = fit_sklearn(points, 2, 0, reg_covar)
    found = sorted({str(a.dtype) for a in (
        model.means_, model.covariances_, model.predict_proba(points))})
    return '/'.join(found) + ' (its fitted means, covariances and posterior)'


if __name__ == '__main__':
    main()
