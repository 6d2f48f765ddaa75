"""MN layer forward+backward vs ``L.BatchNormalization``, in one run.

Shapes are DenseNet's final-BN input (N = 64 and 128, C = 196 and 448,
8x8); K = 2..5, EM iter 2, sample_ratio 1.0 and 0.25; both forms of the
layer: the plain transform (Eq. 34, ``relu=False``: MN against BN) and the
per-component ReLU (Eq. 40, ``relu=True``, as the paper's models and
``train_cifar.py`` use it: MN followed by the block's ReLU against BN
followed by ReLU).  Each row times both layers on the same input
(training mode, forward + backward of ``sum(y * gy)``, the fit included),
alternating BN and MN call by call so that a load change of a shared
machine hits both alike: the times are medians over the calls and MN/BN
is the median of the per-round ratios.

Each row also reports the peak memory of one forward + backward beyond the
input and ``gy`` (NumPy: :mod:`tracemalloc`, which sees NumPy's buffers;
CuPy: the high-water of the memory pool's ``total_bytes`` from an empty
pool), measured in a separate untimed call.

    python benchmarks/bench_layer.py              # CPU, all rows
    python benchmarks/bench_layer.py --relu on    # Eq. 40 rows only
    python benchmarks/bench_layer.py --device 0   # GPU 0 (cuDNN BN)
    python benchmarks/bench_layer.py --transform array   # MN's loops as
        # array operations (the fused kernels' reference), for an A/B
"""
import argparse
import functools
import statistics
import tracemalloc

import numpy

import mn_chainer  # NOQA: F401 (before Chainer: quiets CuPy's NCCL warning)
import chainer
import chainer.functions as F
import chainer.links as L

import interleave
from mn_chainer import cpu_kernels
from mn_chainer.functions import batch_blocks
from mn_chainer.functions import transform_passes
import mn_chainer.links as ML


def _call(link, x, gy, relu):
    """Forward (then ReLU for the Eq. 40 rows) and backward of one call."""
    xv = chainer.Variable(x)
    y = link(xv)
    if relu:
        y = F.relu(y)
    y.grad = gy
    y.backward()
    link.cleargrads()


def _peak_bytes(link, x, gy, relu, xp, sync):
    """Peak memory of one forward + backward beyond what is held before."""
    if xp is numpy:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            _call(link, x, gy, relu)
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    pool = xp.get_default_memory_pool()
    sync()
    pool.free_all_blocks()
    before = pool.total_bytes()
    _call(link, x, gy, relu)
    sync()
    return pool.total_bytes() - before


def _run(args):
    """The rows of ``args`` (parsed), printed."""
    device = chainer.get_device(args.device)
    device.use()
    xp = device.xp
    sync = interleave.synchronizer(device)
    forms = {'off': [False], 'on': [True], 'both': [False, True]}[args.relu]

    print('Device: {}, chainer {}, numpy {}'.format(
        device, chainer.__version__, numpy.__version__))
    print('EM iter {}; {} timed calls per layer and row, alternated, {} '
          'time; peak memory: {}'.format(
              args.em_iter, args.repeats, args.clock,
              'not measured' if args.no_memory else
              'tracemalloc' if xp is numpy else 'CuPy memory pool'))
    passes = transform_passes.select_passes(xp)
    if xp is not numpy:
        print('MN transform: {}'.format(passes.__name__))
    elif passes is transform_passes.ArrayPasses:
        print('MN transform: ArrayPasses, {} thread(s), BLAS on one thread '
              'in its loops: {}'.format(
                  batch_blocks.n_threads(),
                  'yes' if batch_blocks.limits_blas() else
                  'no (threadpoolctl is not installed)'))
    else:
        print('MN transform: {}, {} thread(s)'.format(
            passes.__name__, cpu_kernels.n_threads()))
    header = ('form', 'N', 'C', 'K', 'ratio', 'BN ms', 'MN ms', 'MN/BN',
              'BN MiB', 'MN MiB', 'mem MN/BN')
    rows = []
    for relu in forms:
        form = 'Eq. 40' if relu else 'Eq. 34'
        for n in args.batches:
            for c in args.channels:
                rs = numpy.random.RandomState(0)
                # Rectified-looking activations with a few modes.
                x = numpy.maximum(rs.randn(n, c, 8, 8), -0.5) + \
                    rs.randint(0, 3, size=(n, 1, 8, 8))
                x = device.send(x.astype(numpy.float32))
                gy = device.send(rs.randn(n, c, 8, 8).astype(numpy.float32))
                bn = L.BatchNormalization(c)
                bn.to_device(device)
                for k in args.components:
                    for ratio in args.sample_ratios:
                        mn = ML.MixtureNormalization(
                            c, n_components=k, em_iter=args.em_iter,
                            sample_ratio=ratio, relu=relu, seed=0)
                        mn.to_device(device)
                        with chainer.using_config('train', True):
                            t_bn, t_mn = interleave.interleaved(
                                [functools.partial(_call, link, x, gy, relu)
                                 for link in (bn, mn)], args.repeats, sync,
                                clock=interleave.CLOCKS[args.clock])
                            if args.no_memory:
                                m_bn = m_mn = float('nan')
                            else:
                                m_bn, m_mn = (
                                    _peak_bytes(link, x, gy, relu, xp, sync)
                                    / 2. ** 20 for link in (bn, mn))
                        rows.append((
                            form, n, c, k, ratio,
                            statistics.median(t_bn) * 1e3,
                            statistics.median(t_mn) * 1e3,
                            interleave.median_ratio(t_mn, t_bn),
                            m_bn, m_mn, m_mn / m_bn))
                        print('{} N={:4d} C={:4d} K={} ratio={:.2f}  BN '
                              '{:8.2f} ms  MN {:8.2f} ms  MN/BN {:.2f}  '
                              'memory BN {:6.1f} MiB  MN {:6.1f} MiB  '
                              'MN/BN {:.2f}'.format(*rows[-1]), flush=True)
    if args.markdown:
        print()
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for r in rows:
            print('| {} | {} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} '
                  '| {:.1f} | {:.1f} | {:.2f} |'.format(*r))
    k_max = max(args.components)
    print()
    for relu in forms:
        form = 'Eq. 40' if relu else 'Eq. 34'
        at_k = [r for r in rows if r[0] == form and r[3] == k_max]
        print('{}: worst MN/BN at K={}: time {:.2f}, memory {:.2f} '
              '(device: {})'.format(form, k_max, max(r[7] for r in at_k),
                                    max(r[10] for r in at_k), device))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', '-d', default='-1',
                        help='Chainer device specifier (-1: CPU)')
    parser.add_argument('--repeats', type=int, default=10,
                        help='Timed calls of each layer per row')
    parser.add_argument('--batches', type=int, nargs='+', default=[64, 128])
    parser.add_argument('--channels', type=int, nargs='+', default=[196, 448])
    parser.add_argument('--components', type=int, nargs='+',
                        default=[2, 3, 4, 5])
    parser.add_argument('--sample-ratios', type=float, nargs='+',
                        default=[1.0, 0.25])
    parser.add_argument('--relu', choices=('off', 'on', 'both'),
                        default='both',
                        help='Rows of the plain transform (off: Eq. 34), of '
                        'the per-component ReLU (on: Eq. 40, then ReLU, '
                        'against BN then ReLU), or both')
    parser.add_argument('--em-iter', type=int, default=2)
    interleave.add_transform_argument(parser)
    parser.add_argument('--clock', choices=sorted(interleave.CLOCKS),
                        default='wall',
                        help='Time with the wall clock, or with the CPU '
                        'time of the process (all threads: steadier on a '
                        'shared machine)')
    parser.add_argument('--no-memory', action='store_true',
                        help='Skip the peak-memory measurement')
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')

    with transform_passes.using_kernels(args.transform == 'fused'):
        _run(args)


if __name__ == '__main__':
    main()
