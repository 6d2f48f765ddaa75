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
of the two speeds; ``best`` is the ratio of the fastest iterations (as
:mod:`timeit` advises: other processes only ever add time). ``--control``
adds a second BN model (row ``BN*``) whose ratio to BN is the noise floor.
The paper's rows are printed next to ours with both MN/BN ratios.

On a shared CPU the whole-network ratio is only good to a few percent, so
the normalization layer alone is also timed (``--layer-reps``, forward and
backward of ``final`` followed by ReLU on the real input of that layer):
its extra time over BN gives the *implied* whole-network ratio
``t_BN / (t_BN + extra)``, a low-noise estimate of the same quantity.

Usage (times on 2 CPU cores)::

    # all rows, K = 2..5 (about 50 minutes)
    python benchmarks/bench_table7.py
    # BN vs K = 5 at batch 64, dim 196 (about 1 minute)
    python benchmarks/bench_table7.py --quick
    # a low-noise check of one setting (about 6 minutes)
    python benchmarks/bench_table7.py --settings 64x196 --iters 10 --control
    # GPU: 10 warm-up iterations, 20 rounds of 10 iterations
    python benchmarks/bench_table7.py --device 0
"""
import argparse
import json
import statistics

import mn_chainer  # NOQA: F401 (before Chainer: quiets CuPy's NCCL warning)
import chainer
import chainer.functions as F
import chainer.links as L
import numpy

import interleave
import mn_chainer.links
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


def bench_setting(batch, dim, ks, device, warmup, iters, block,
                  relu=True, control=False):
    """Time BN and MN (K in ``ks``) at one (batch, dim) setting.

    With ``control``, a second BN model (key ``0``) is timed last in each
    forward round, at the place of the largest K: its ratio to the first BN
    is the noise floor of the MN/BN ratios.

    Returns:
        dict: ``K`` -> list of seconds per iteration, one per round
        (``K = 1`` is BN, ``K = 0`` the control BN), in timing order.

    """
    rng = numpy.random.RandomState(0)
    x = device.send(rng.standard_normal(
        (batch, 3, 32, 32)).astype(numpy.float32))
    t = device.send(rng.randint(0, 100, batch).astype(numpy.int32))
    variants = {}
    for k in [1] + list(ks) + ([0] if control else []):
        model = build(dim, max(k, 1), relu=relu)
        model.to_device(device)
        # The paper's DenseNet optimizer (Nesterov, momentum 0.9, wd 1e-4).
        optimizer = chainer.optimizers.NesterovAG(lr=0.1, momentum=0.9)
        optimizer.setup(model)
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
        variants[k] = (model, optimizer)

    def steps(k):
        model, optimizer = variants[k]

        def run():
            for _ in range(block):
                optimizer.update(model, x, t)
        return run

    with chainer.using_config('train', True):
        sync = interleave.synchronizer(device)
        seconds = interleave.interleaved(
            [steps(k) for k in variants], iters, sync,
            warmup=-(-warmup // block))
    times = {k: [s / block for s in ts]
             for k, ts in zip(variants, seconds)}
    for k, (model, _) in variants.items():
        if not numpy.isfinite(float(model.loss.array)):
            print('warning: K={} batch {} dim {}: the loss is not finite; '
                  'its timings may not be representative'.format(
                      k, batch, dim))
    return times


def bench_layer(batch, dim, ks, device, reps, relu=True):
    """Time ``final`` alone (forward, ReLU, backward), BN vs MN.

    The input is the real input of ``final`` (the features of a BN DenseNet
    on the benchmark batch); variants are interleaved as in
    :func:`bench_setting`.

    Returns:
        dict: ``K`` -> list of seconds per call (``K = 1`` is BN).

    """
    rng = numpy.random.RandomState(0)
    x = device.send(rng.standard_normal(
        (batch, 3, 32, 32)).astype(numpy.float32))
    model = build(dim, 1)
    model.to_device(device)
    with chainer.using_config('train', True), \
            chainer.using_config('enable_backprop', False):
        h = model.predictor.features(x).array
    gy = device.xp.ones_like(h)
    links = {1: L.BatchNormalization(dim)}
    for k in ks:
        links[k] = mn_chainer.links.MixtureNormalization(
            dim, n_components=k, em_iter=2, relu=relu, seed=0)
    for link in links.values():
        link.to_device(device)

    def call(link):
        def run():
            y = F.relu(link(chainer.Variable(h)))
            y.grad = gy
            y.backward()
        return run

    with chainer.using_config('train', True):
        seconds = interleave.interleaved(
            [call(link) for link in links.values()], reps,
            interleave.synchronizer(device))
    return dict(zip(links, seconds))


def _fmt(value, spec):
    return '-' if value is None else format(value, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 or @numpy for the CPU, '
                             '0 or @cupy:0 for the first GPU')
    parser.add_argument('--warmup', type=int, default=None,
                        help='Untimed iterations per variant, in whole '
                        'blocks (default: 1 on the CPU, 10 on a GPU)')
    parser.add_argument('--iters', type=int, default=None,
                        help='Timed rounds (samples) per variant (default: '
                        '4 on the CPU, 20 on a GPU)')
    parser.add_argument('--block', type=int, default=None,
                        help='Iterations per timed sample (default: 1 on '
                        'the CPU, 10 on a GPU)')
    parser.add_argument('--ks', type=str, default='2,3,4,5',
                        help='Comma-separated MN component counts')
    parser.add_argument('--settings', type=str, default='64x196,64x448,'
                        '128x448', help='Comma-separated BATCHxDIM settings')
    parser.add_argument('--control', action='store_true',
                        help='Also time a second BN model (row BN*): its '
                        'ratio to BN shows the measurement noise')
    parser.add_argument('--layer-reps', type=int, default=20,
                        help='Timed calls of the final norm layer alone per '
                        'variant (0: skip the layer timing)')
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
    on_cpu = device.xp is numpy
    for name, cpu, gpu in (('warmup', 1, 10), ('iters', 4, 20),
                           ('block', 1, 10)):
        if getattr(args, name) is None:
            setattr(args, name, cpu if on_cpu else gpu)
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
              'MN/BN', 'best', 'paper MN/BN')
    line = '{:<5} {:>2} {:>5} {:>4} {:>8} {:>10} {:>6} {:>6} {:>11}'
    print(line.format(*header))
    results = []
    layer_results = []
    for batch, dim in settings:
        times = bench_setting(batch, dim, ks, device, args.warmup,
                              args.iters, args.block,
                              relu=not args.plain_mn, control=args.control)
        if args.layer_reps > 0 and ks:
            layer_times = bench_layer(batch, dim, ks, device,
                                      args.layer_reps,
                                      relu=not args.plain_mn)
            t_bn = statistics.median(times[1])
            l_bn = statistics.median(layer_times[1])
            for k in ks:
                l_mn = statistics.median(layer_times[k])
                layer_results.append({
                    'K': k, 'batch': batch, 'dim': dim,
                    'bn_layer_s': l_bn, 'mn_layer_s': l_mn,
                    'extra_s': l_mn - l_bn,
                    'implied_mn_bn_ratio': t_bn / (t_bn + l_mn - l_bn)})
        speed = {k: 1. / statistics.median(v) for k, v in times.items()}
        for k in speed:
            name = {0: 'BN*', 1: 'BN'}.get(k, 'MN')
            ref = paper.get((batch, dim, k))
            ref_bn = paper.get((batch, dim, 1))
            ratio = statistics.median(
                bn / mn for bn, mn in zip(times[1], times[k])) \
                if k != 1 else None
            best = min(times[1]) / min(times[k]) if k != 1 else None
            ref_ratio = ref / ref_bn if k > 1 and ref and ref_bn else None
            print(line.format(
                name, max(k, 1), batch, dim,
                _fmt(speed[k], '.3f'), _fmt(ref, '.2f'),
                _fmt(ratio, '.3f'), _fmt(best, '.3f'),
                _fmt(ref_ratio, '.3f')))
            results.append({
                'model': name, 'K': max(k, 1), 'batch': batch,
                'dim': dim, 'it_per_s': speed[k],
                'seconds_per_iter': times[k], 'paper_it_per_s': ref,
                'mn_bn_ratio': ratio, 'mn_bn_ratio_best': best,
                'paper_mn_bn_ratio': ref_ratio})
    print()
    if layer_results:
        print('final norm layer alone (forward, ReLU, backward; median of '
              '{} calls)'.format(args.layer_reps))
        lline = '{:>2} {:>5} {:>4} {:>9} {:>9} {:>9} {:>14}'
        print(lline.format('K', 'batch', 'dim', 'BN ms', 'MN ms',
                           'extra ms', 'implied MN/BN'))
        for r in layer_results:
            print(lline.format(
                r['K'], r['batch'], r['dim'],
                _fmt(1e3 * r['bn_layer_s'], '.1f'),
                _fmt(1e3 * r['mn_layer_s'], '.1f'),
                _fmt(1e3 * r['extra_s'], '.1f'),
                _fmt(r['implied_mn_bn_ratio'], '.3f')))
        print()
    for batch, dim in settings:
        rows = {r['K']: r for r in results if r['model'] != 'BN*'
                and (r['batch'], r['dim']) == (batch, dim)}
        if ks and max(ks) > 1 and max(ks) in rows:
            row = rows[max(ks)]
            implied = [r['implied_mn_bn_ratio'] for r in layer_results
                       if (r['batch'], r['dim'], r['K'])
                       == (batch, dim, max(ks))]
            print('batch {} dim {}: MN/BN at K = {}: {:.3f} (median of '
                  'rounds), {:.3f} (best){}; goal >= 0.98'.format(
                      batch, dim, max(ks), row['mn_bn_ratio'],
                      row['mn_bn_ratio_best'],
                      ', {:.3f} (implied by the layer)'.format(implied[0])
                      if implied else ''))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'device': str(device), 'warmup': args.warmup,
                       'mn_relu': not args.plain_mn,
                       'iters': args.iters, 'block': args.block,
                       'layer_reps': args.layer_reps, 'results': results,
                       'layer_results': layer_results}, f, indent=1)


if __name__ == '__main__':
    main()
