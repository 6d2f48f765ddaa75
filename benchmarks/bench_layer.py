"""MN layer forward+backward vs ``L.BatchNormalization``, in one run.

Shapes are DenseNet's final-BN input (N = 64 and 128, C = 196 and 448,
8x8); K = 2..5, EM iter 2, sample_ratio 1.0 and 0.25.  Each row times both
layers on the same input (training mode, forward + backward of
``sum(y * gy)``) and reports the MN/BN time ratio.

    python benchmarks/bench_layer.py              # CPU, all rows
    python benchmarks/bench_layer.py --device 0   # GPU 0 (cuDNN BN)
"""
import argparse
import statistics
import time

import numpy

import chainer
import chainer.links as L

import mn_chainer.links as ML


def _time(link, x, gy, repeats, sync):
    times = []
    for i in range(repeats + 1):
        xv = chainer.Variable(x)
        start = time.perf_counter()
        y = link(xv)
        y.grad = gy
        y.backward()
        sync()
        if i:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
        link.cleargrads()
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', '-d', default='-1',
                        help='Chainer device specifier (-1: CPU)')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--batches', type=int, nargs='+', default=[64, 128])
    parser.add_argument('--channels', type=int, nargs='+', default=[196, 448])
    parser.add_argument('--components', type=int, nargs='+',
                        default=[2, 3, 4, 5])
    parser.add_argument('--sample-ratios', type=float, nargs='+',
                        default=[1.0, 0.25])
    parser.add_argument('--em-iter', type=int, default=2)
    parser.add_argument('--markdown', action='store_true')
    args = parser.parse_args(argv)

    device = chainer.get_device(args.device)
    device.use()
    xp = device.xp
    if xp is numpy:
        def sync():
            pass
    else:
        def sync():
            xp.cuda.Device().synchronize()

    header = ('N', 'C', 'K', 'ratio', 'BN ms', 'MN ms', 'MN/BN')
    rows = []
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
                        sample_ratio=ratio, seed=0)
                    mn.to_device(device)
                    # BN is timed again next to every MN row, so that load
                    # changes on a shared machine hit both alike.
                    t_bn = _time(bn, x, gy, args.repeats, sync)
                    t_mn = _time(mn, x, gy, args.repeats, sync)
                    rows.append((n, c, k, ratio, t_bn * 1e3, t_mn * 1e3,
                                 t_mn / t_bn))
                    print('N={:4d} C={:4d} K={} ratio={:.2f}  BN {:8.2f} ms  '
                          'MN {:8.2f} ms  MN/BN {:.2f}'.format(*rows[-1]),
                          flush=True)
    if args.markdown:
        print()
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '---|' * len(header))
        for r in rows:
            print('| {} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |'
                  .format(*r))
    worst = max(r[-1] for r in rows if r[2] == max(args.components))
    print('\nworst MN/BN at K={}: {:.2f} (device: {})'.format(
        max(args.components), worst, device))


if __name__ == '__main__':
    main()
