"""Table VII: whole-network training speed of DenseNet, BN vs MN.

Reproduces the paper's Table VII (§5.1): training iterations per second
(forward, backward and optimizer update of the whole network) of a basic
DenseNet (3 blocks, growth rate 12, CIFAR-100 input 32x32) whose final BN
(after the third dense block) is either batch normalization or Mixture
Normalization with K = 2..5 components (EM iter 2: one K-means and one EM
iteration). Three settings: batch 64 with 5 layers per block (dim 196),
batch 64 and 128 with 12 layers per block (dim 448).

All variants of a setting are measured in one run and interleaved: after the
warm-up, each round times one block of iterations of every variant in turn
(in reverse order every other round, which cancels a linear drift), so a
slowdown of a shared machine hits all of them alike. The reported speed is
``1 / median(time per iteration)`` over the rounds; the MN/BN ratio is the
median over the rounds of ``time(BN) / time(MN)`` within the round, which
is far less sensitive to a load that changes during the run than the ratio
of the two speeds. The paper's rows are printed next to ours with both MN/BN
ratios.

Usage::

    python benchmarks/bench_table7.py                 # CPU, default counts
    python benchmarks/bench_table7.py --quick         # CPU smoke run
    python benchmarks/bench_table7.py --device 0 --iters 50 --warmup 10
"""
import argparse
import json
import statistics
import time

import chainer
import chainer.links as L
import numpy

import mn_chainer.paper
from models import densenet


#: Dense layers per block giving each of the paper's final BN widths.
LAYERS_PER_BLOCK = {196: 5, 448: 12}


def paper_rows():
    """Return the paper's Table VII rows (list of dicts)."""
    return mn_chainer.paper.load_paper_results()['table7_speed']['rows']


def build(dim, n_components, seed=0, relu=True):
    """Return the classifier of one variant (``n_components`` 1 means BN).

    ``relu`` selects MN's per-component ReLU (Eq. 40, the paper's form where
    ReLU follows the norm) over plain MN (Eq. 34) followed by ReLU.
    """
    numpy.random.seed(seed)
    mn_layers = None
    mn_kwargs = None
    if n_components > 1:
        mn_layers = ['final']
        # The final BN is followed by ReLU: the paper's MN applies it per
        # component (Eq. 40), as train_cifar.py does by default.
        mn_kwargs = {'n_components': n_components, 'em_iter': 2,
                     'relu': relu, 'seed': seed}
    return L.Classifier(densenet.DenseNet(
        n_class=100, layers_per_block=LAYERS_PER_BLOCK[dim],
        growth_rate=12, mn_layers=mn_layers, mn_kwargs=mn_kwargs))


def _synchronize(device):
    if device.xp is not numpy:
        device.device.synchronize()


def bench_setting(batch, dim, ks, device, warmup, iters, block,
                  relu=True):
    """Time BN and MN (K in ``ks``) at one (batch, dim) setting.

    Returns:
        dict: ``K`` -> list of seconds per iteration, one per round
        (``K = 1`` is BN).

    """
    rng = numpy.random.RandomState(0)
    x = device.send(rng.standard_normal(
        (batch, 3, 32, 32)).astype(numpy.float32))
    t = device.send(rng.randint(0, 100, batch).astype(numpy.int32))
    variants = {}
    for k in [1] + list(ks):
        model = build(dim, k, relu=relu)
        model.to_device(device)
        # The paper's DenseNet optimizer (Nesterov, momentum 0.9, wd 1e-4).
        optimizer = chainer.optimizers.NesterovAG(lr=0.1, momentum=0.9)
        optimizer.setup(model)
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
        variants[k] = (model, optimizer)

    def step(k):
        model, optimizer = variants[k]
        optimizer.update(model, x, t)

    times = {k: [] for k in variants}
    with chainer.using_config('train', True):
        for k in variants:
            for _ in range(warmup):
                step(k)
            _synchronize(device)
        for r in range(iters):
            order = list(variants)
            if r % 2:
                order.reverse()
            for k in order:
                _synchronize(device)
                start = time.perf_counter()
                for _ in range(block):
                    step(k)
                _synchronize(device)
                times[k].append((time.perf_counter() - start) / block)
    for k, (model, _) in variants.items():
        if not numpy.isfinite(float(model.loss.array)):
            print('warning: K={} batch {} dim {}: the loss is not finite; '
                  'its timings may not be representative'.format(
                      k, batch, dim))
    return times


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 or @numpy for the CPU, '
                             '0 or @cupy:0 for the first GPU')
    parser.add_argument('--warmup', type=int, default=2,
                        help='Untimed iterations per variant')
    parser.add_argument('--iters', type=int, default=5,
                        help='Timed rounds (samples) per variant')
    parser.add_argument('--block', type=int, default=1,
                        help='Iterations per timed sample')
    parser.add_argument('--ks', type=str, default='2,3,4,5',
                        help='Comma-separated MN component counts')
    parser.add_argument('--settings', type=str, default='64x196,64x448,'
                        '128x448', help='Comma-separated BATCHxDIM settings')
    parser.add_argument('--plain-mn', action='store_true',
                        help='MN then ReLU (Eq. 34) instead of the '
                        'per-component ReLU of Eq. 40')
    parser.add_argument('--quick', action='store_true',
                        help='Smoke run: 1 warm-up, 2 rounds, K = 5 only, '
                             'batch 64 at dim 196')
    parser.add_argument('--out', type=str, default=None,
                        help='Write the measurements as JSON to this file')
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.iters, args.block = 1, 2, 1
        args.ks, args.settings = '5', '64x196'

    device = chainer.get_device(args.device)
    device.use()
    ks = [int(k) for k in args.ks.split(',') if k.strip()]
    settings = [tuple(int(v) for v in s.split('x'))
                for s in args.settings.split(',')]
    for _, dim in settings:
        if dim not in LAYERS_PER_BLOCK:
            parser.error('dim must be one of {}: {}'.format(
                sorted(LAYERS_PER_BLOCK), dim))
    paper = {(r['batch'], r['dim'], r['K']): r['it_per_s']
             for r in paper_rows()}

    print('Device: {}'.format(device))
    print('chainer {}, numpy {}'.format(chainer.__version__,
                                        numpy.__version__))
    print('MN at final: K = {}, EM iter 2, {}'.format(
        ','.join(map(str, ks)) or '-',
        'plain (Eq. 34) then ReLU' if args.plain_mn
        else 'per-component ReLU (Eq. 40)'))
    print('warm-up {}, rounds {}, block {} (it/s = 1 / median s per '
          'iteration; MN/BN = median of per-round time ratios)'.format(
              args.warmup, args.iters, args.block))
    print()
    header = ('model', 'K', 'batch', 'dim', 'it/s', 'paper it/s',
              'MN/BN', 'paper MN/BN')
    line = '{:<5} {:>2} {:>5} {:>4} {:>8} {:>10} {:>6} {:>11}'
    print(line.format(*header))
    results = []
    for batch, dim in settings:
        times = bench_setting(batch, dim, ks, device, args.warmup,
                              args.iters, args.block,
                              relu=not args.plain_mn)
        speed = {k: 1. / statistics.median(v) for k, v in times.items()}
        for k in sorted(speed):
            ref = paper.get((batch, dim, k))
            ref_bn = paper.get((batch, dim, 1))
            ratio = statistics.median(
                bn / mn for bn, mn in zip(times[1], times[k])) \
                if k > 1 else None
            ref_ratio = ref / ref_bn if k > 1 and ref and ref_bn else None
            print(line.format(
                'BN' if k == 1 else 'MN', k, batch, dim,
                _fmt(speed[k], '.3f'), _fmt(ref, '.2f'),
                _fmt(ratio, '.3f'), _fmt(ref_ratio, '.3f')))
            results.append({
                'model': 'BN' if k == 1 else 'MN', 'K': k, 'batch': batch,
                'dim': dim, 'it_per_s': speed[k],
                'seconds_per_iter': times[k], 'paper_it_per_s': ref,
                'mn_bn_ratio': ratio, 'paper_mn_bn_ratio': ref_ratio})
    print()
    for batch, dim in settings:
        rows = {r['K']: r for r in results
                if (r['batch'], r['dim']) == (batch, dim)}
        if ks and max(ks) > 1 and max(ks) in rows:
            ratio = rows[max(ks)]['mn_bn_ratio']
            print('batch {} dim {}: MN/BN at K = {} is {:.3f} (goal >= 0.95:'
                  ' {})'.format(batch, dim, max(ks), ratio,
                                'met' if ratio >= 0.95 else 'NOT met'))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'device': str(device), 'warmup': args.warmup,
                       'mn_relu': not args.plain_mn,
                       'iters': args.iters, 'block': args.block,
                       'results': results}, f, indent=1)


if __name__ == '__main__':
    main()
