"""A CIFAR CNN training epoch with BN against MN, interleaved step by step.

Times the training steps (forward, backward and optimizer update) of two
CIFAR CNNs built from the paper's presets, by default Table II's ``BN-2``
and ``MN-2`` (the same network, learning rate and weight decay; MN at
``conv3`` with K = 3, EM iter 2 and the per-component ReLU of Eq. 40, as
``train_cifar.py`` trains it), on the same mini-batches of one epoch: each
batch of the shuffled, augmented training set is given to both models, in
turn (in reverse order every other step, which cancels a linear drift of a
shared machine's load), and each update is timed on its own.  Reported:
the median step of each, the median of the per-step MN/BN ratios, and the
MN/BN ratio of the whole epochs (sums of the steps); ``--control`` adds a
second BN model (``BN*``) whose ratio to BN is the noise floor.

The norm layers that differ are then timed alone (``--layer-reps``, on
their real input of the last batch: forward, ReLU and backward, BN and MN
alternated), giving MN's extra time per step, its share that is the
mixture fit, and the *implied* epoch ratio ``(t_BN + extra) / t_BN`` with
``t_BN`` the median BN step: a low-noise estimate of the same quantity.

Usage::

    # one full epoch of CIFAR-10 (196 steps of 256 images per model)
    python benchmarks/bench_epoch.py --data cifar10.npz
    # 20 steps (5,120 training images)
    python benchmarks/bench_epoch.py --data cifar10.npz --train-subset 5120
    # the small CNN of quick CPU studies (batch 128, 64 steps)
    python benchmarks/bench_epoch.py --data cifar10.npz --train-subset 8192 \\
        --widths 32,64,128,128 -b 128
    python benchmarks/bench_epoch.py --data cifar10.npz --device 0
    # the MN transform's loops as array operations (A/B of its kernels)
    python benchmarks/bench_epoch.py --data cifar10.npz --transform array
"""
import argparse
import json
import statistics
import time

import numpy

import mn_chainer  # NOQA: F401 (before Chainer: quiets CuPy's NCCL warning)
import chainer
import chainer.functions as F
import chainer.links as L

import interleave
import mn_chainer.datasets
from mn_chainer.functions import transform_passes
import mn_chainer.links
import mn_chainer.presets
import mn_chainer.train
import models


def _settings(preset, n_class, seed, widths):
    """The run settings of :func:`models.get_model_from_settings`."""
    return {'model': preset.model, 'n_class': n_class, 'widths': widths,
            'mn_layers': list(preset.mn_layers),
            'n_components': preset.n_components, 'em_iter': preset.em_iter,
            'seed': seed}


def build(preset, n_class, seed, device, widths=None):
    """Classifier and optimizer of ``preset`` (weights drawn from ``seed``,
    so the variants start equal; ``widths``: the CIFAR CNN's, None for the
    default)."""
    numpy.random.seed(seed)
    model = L.Classifier(models.get_model_from_settings(
        _settings(preset, n_class, seed, widths)))
    model.to_device(device)
    optimizer = mn_chainer.train.make_optimizer(preset.optimizer, preset.lr)
    optimizer.setup(model)
    if preset.weight_decay > 0:
        optimizer.add_hook(
            chainer.optimizer_hooks.WeightDecay(preset.weight_decay))
    return model, optimizer


def _batch(dataset, indices, device):
    """The examples ``indices`` of ``dataset`` as arrays on ``device``."""
    return chainer.dataset.concat_examples(
        [dataset[i] for i in indices], device)


def time_epoch(variants, dataset, batches, device, sync):
    """Seconds of each variant's update on every batch (a list of example
    indices of ``dataset``), alternating."""
    times = {name: [] for name in variants}
    names = list(variants)
    for step, indices in enumerate(batches):
        x, t = _batch(dataset, indices, device)
        for name in (names if step % 2 == 0 else names[::-1]):
            model, optimizer = variants[name]
            sync()
            start = time.perf_counter()
            optimizer.update(model, x, t)
            sync()
            times[name].append(time.perf_counter() - start)
    return times


class _Inputs(object):
    """Records the last input of a link (a wrapper of its ``forward``)."""

    def __init__(self, link):
        self.link = link
        self.array = None
        self._forward = link.forward
        link.forward = self

    def __call__(self, x, **kwargs):
        self.array = x.array if isinstance(x, chainer.Variable) else x
        return self._forward(x, **kwargs)

    def restore(self):
        del self.link.forward


class _Timed(object):
    """Accumulates the time spent in a method of an object."""

    def __init__(self, obj, name, sync):
        self.obj, self.name, self.sync = obj, name, sync
        self.method = getattr(obj, name)
        self.seconds = 0.
        setattr(obj, name, self)

    def __call__(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        out = self.method(*args, **kwargs)
        self.sync()
        self.seconds += time.perf_counter() - start
        return out

    def restore(self):
        delattr(self.obj, self.name)


def time_layers(bn_model, mn_model, x, t, reps, sync):
    """BN and MN norm layers alone on their real input of batch ``x``.

    Returns:
        list: One dict per MN layer: ``name``, ``bn`` and ``mn`` (lists of
        seconds per call: forward, ReLU, backward), ``fit`` (mean seconds
        of MN's mixture fit per call).
    """
    bn_links = dict(bn_model.predictor.namedlinks())
    mn_layers = list(mn_chainer.links.iter_mixture_normalizations(
        mn_model.predictor))
    recorders = [_Inputs(link) for _, link in mn_layers]
    with chainer.using_config('train', True), \
            chainer.using_config('enable_backprop', False):
        mn_model(x, t)
    for recorder in recorders:
        recorder.restore()
    mn_paths = {id(link): path for path, link
                in mn_model.predictor.namedlinks()}
    results = []
    for (name, mn_link), recorder in zip(mn_layers, recorders):
        bn_link = bn_links[mn_paths[id(mn_link)]]
        h = recorder.array
        gy = mn_model.xp.ones_like(h)

        def call(link):
            def run():
                y = F.relu(link(chainer.Variable(h)))
                y.grad = gy
                y.backward()
                link.cleargrads()
            return run

        fit = _Timed(mn_link, '_fit', sync)
        with chainer.using_config('train', True):
            t_bn, t_mn = interleave.interleaved(
                [call(bn_link), call(mn_link)], reps, sync)
        fit.restore()
        results.append({'name': name, 'bn': t_bn, 'mn': t_mn,
                        'fit': fit.seconds / (reps + 1)})
    return results


def _widths(text):
    try:
        widths = [int(w) for w in text.split(',')]
    except ValueError:
        widths = []
    if len(widths) != 4 or min(widths) < 1:
        raise argparse.ArgumentTypeError(
            'expected 4 positive integers separated by commas, got '
            '{!r}'.format(text))
    return widths


def _run(args, presets, batchsize):
    """The epoch of ``args`` (parsed) and the layers, printed."""
    device = chainer.get_device(args.device)
    device.use()
    sync = interleave.synchronizer(device)
    mn_chainer.datasets.seed_augmentation(args.seed)
    train, _, info = mn_chainer.datasets.get_cifar(
        args.dataset, args.data, args.train_subset, seed=args.seed)
    variants = {name: build(preset, info['n_class'], args.seed, device,
                            args.widths)
                for name, preset in (('BN', presets[0]), ('MN', presets[1]))
                + ((('BN*', presets[0]),) if args.control else ())}
    order = numpy.random.RandomState(args.seed).permutation(len(train))
    batches = [order[s:s + batchsize]
               for s in range(0, len(train), batchsize)]

    print('Device: {}, chainer {}, numpy {}'.format(
        device, chainer.__version__, numpy.__version__))
    mn = presets[1]
    print('{} vs {} ({}, widths {}, {}): MN at {} with K = {}, EM iter {}, '
          'per-component ReLU (Eq. 40)'.format(
              presets[0].id, mn.id, mn.model,
              'default' if args.widths is None
              else ','.join(map(str, args.widths)), args.dataset,
              ', '.join(mn.mn_layers), mn.n_components, mn.em_iter))
    print('{} training images, batch {}: {} steps per model, {} warm-up; '
          'steps alternated'.format(info['n_train'], batchsize,
                                    len(batches), args.warmup))
    print('MN transform: {}'.format(
        transform_passes.select_passes(device.xp).__name__))
    with chainer.using_config('train', True):
        time_epoch(variants, train, batches[:1] * args.warmup, device,
                   sync)
        times = time_epoch(variants, train, batches, device, sync)

    bn = times['BN']
    print()
    print('{:<4} {:>14} {:>12} {:>16} {:>10} {:>8}'.format(
        'model', 'median step ms', 'epoch s', 'MN/BN per step', 'epoch',
        'best'))
    results = {}
    for name, ts in times.items():
        ratio = None if name == 'BN' else interleave.median_ratio(ts, bn)
        epoch_ratio = None if name == 'BN' else sum(ts) / sum(bn)
        best = None if name == 'BN' else min(ts) / min(bn)
        results[name] = {'seconds_per_step': ts,
                         'median_step_s': statistics.median(ts),
                         'epoch_s': sum(ts), 'step_ratio': ratio,
                         'epoch_ratio': epoch_ratio, 'best_ratio': best}
        print('{:<5} {:>14.1f} {:>12.2f} {:>16} {:>10} {:>8}'.format(
            name, 1e3 * statistics.median(ts), sum(ts),
            '-' if ratio is None else '{:.3f}'.format(ratio),
            '-' if epoch_ratio is None else '{:.3f}'.format(epoch_ratio),
            '-' if best is None else '{:.3f}'.format(best)))

    layers = []
    if args.layer_reps > 0:
        last = batches[-1]
        x, t = _batch(train, last, device)
        layers = time_layers(variants['BN'][0], variants['MN'][0], x, t,
                             args.layer_reps, sync)
        t_bn = statistics.median(bn)
        extra_total = 0.
        print()
        print('norm layers alone (forward, ReLU, backward; median of {} '
              'calls, batch of {})'.format(args.layer_reps, len(last)))
        print('{:<8} {:>8} {:>8} {:>9} {:>8} {:>13}'.format(
            'layer', 'BN ms', 'MN ms', 'extra ms', 'fit ms',
            'of BN step'))
        for layer in layers:
            l_bn = statistics.median(layer['bn'])
            l_mn = statistics.median(layer['mn'])
            extra_total += l_mn - l_bn
            layer.update(bn_median_s=l_bn, mn_median_s=l_mn,
                         extra_s=l_mn - l_bn)
            print('{:<8} {:>8.1f} {:>8.1f} {:>9.1f} {:>8.1f} {:>12.1f}%'
                  .format(layer['name'], 1e3 * l_bn, 1e3 * l_mn,
                          1e3 * (l_mn - l_bn), 1e3 * layer['fit'],
                          100 * (l_mn - l_bn) / t_bn))
        implied = (t_bn + extra_total) / t_bn
        print('implied epoch MN/BN: {:.3f}'.format(implied))
        results['implied_epoch_ratio'] = implied
    print()
    print('MN/BN of the epoch: {:.3f} (sum of steps), {:.3f} (median of '
          'per-step ratios){}; goal <= 1.03'.format(
              results['MN']['epoch_ratio'], results['MN']['step_ratio'],
              ', {:.3f} (implied by the layers)'.format(
                  results['implied_epoch_ratio']) if layers else ''))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'device': str(device),
                       'presets': [p.id for p in presets],
                       'widths': args.widths, 'batchsize': batchsize,
                       'n_train': info['n_train'], 'steps': len(batches),
                       'transform': transform_passes.select_passes(
                           device.xp).__name__,
                       'results': results, 'layers': layers}, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default=None,
                        help='CIFAR .npz file (default: Chainer download)')
    parser.add_argument('--dataset', default='cifar10',
                        choices=('cifar10', 'cifar100'))
    parser.add_argument('--bn', default='BN-2',
                        help='Preset of the BN model (default BN-2)')
    parser.add_argument('--mn', default='MN-2',
                        help='Preset of the MN model (default MN-2)')
    parser.add_argument('--train-subset', type=int, default=None,
                        help='Seeded random subset of the training set '
                        '(an epoch of fewer steps)')
    parser.add_argument('--batchsize', '-b', type=int, default=None,
                        help="Mini-batch size (default: the presets')")
    parser.add_argument('--widths', type=_widths, default=None,
                        help='CIFAR CNN channel widths, e.g. 32,64,128,128 '
                        '(default: the model\'s, 64,128,256,256)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='Untimed steps of each model first')
    parser.add_argument('--layer-reps', type=int, default=10,
                        help='Timed calls of the norm layers alone (0: '
                        'skip)')
    parser.add_argument('--control', action='store_true',
                        help='Also time a second BN model (BN*)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', '-d', default='-1',
                        help='Chainer device specifier (-1: CPU)')
    interleave.add_transform_argument(parser)
    parser.add_argument('--out', default=None,
                        help='Write the measurements as JSON to this file')
    args = parser.parse_args(argv)

    presets = [mn_chainer.presets.get_preset(name, args.dataset)
               for name in (args.bn, args.mn)]
    if presets[0].model != presets[1].model:
        parser.error('--bn {} and --mn {} train different models'.format(
            args.bn, args.mn))
    if presets[0].mn_layers or not presets[1].mn_layers:
        parser.error('--bn must be a BN preset and --mn an MN preset')
    batchsize = args.batchsize or presets[1].batchsize
    with transform_passes.using_kernels(args.transform == 'fused'):
        _run(args, presets, batchsize)


if __name__ == '__main__':
    main()
