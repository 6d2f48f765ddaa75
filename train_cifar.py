#!/usr/bin/env python
"""Train a CIFAR model with batch or mixture normalization (paper section 4).

Examples::

    # Table II, row MN-2 on CIFAR-10 (100 epochs, batch 256)
    python train_cifar.py --preset MN-2 --device 0
    # a quick CPU run on 4,000 images of a local copy of CIFAR-10
    python train_cifar.py --preset BN-2 --data cifar10.npz \\
        --train-subset 4000 --test-subset 2000 -e 3 -b 128

Settings come from ``--preset`` (a row of the paper's tables, see
:mod:`mn_chainer.presets`; ``--list-presets`` prints them) and explicit
flags override it. Without a preset the defaults are Table II's training
setting with the BN-2/MN-2 learning rate and weight decay (RMSprop, lr 0.01,
weight decay 2e-5, lr x0.93 every 2 epochs, batch 256, 100 epochs) and MN,
when asked for with ``--norm mn``, at ``conv3`` with K=3 and EM iter 2.

"RMSprop with 0.9 momentum" (the paper) has no exact Chainer optimizer:
``--optimizer rmsprop`` (default) is ``chainer.optimizers.RMSprop(lr,
alpha=0.9)``, the Chainer-native reading, which reproduces the paper's drop
from lr 0.01 to 0.05 for BN; ``rmsprop_tf`` is the TensorFlow/TF-slim rule
(decay 0.9, momentum 0.9, epsilon 1.0,
:class:`mn_chainer.optimizers.RMSpropTF`);
``nesterov`` is ``chainer.optimizers.NesterovAG(lr, momentum=0.9)``.

The run's directory (``--out``) receives the LogReport ``log`` (one JSON
entry per epoch, with each MN layer's ``mn/<layer>/effective_k``),
``args.json`` (the resolved settings), ``loss.png``, ``accuracy.png`` and a
snapshot ``snapshot_epoch_<n>`` every epoch; ``--resume`` continues from one.
Runs with the same ``--seed`` (and no ``--loaderjob``) are reproducible on
the CPU, resumed ones included: the snapshot also holds the random states
of the data order and augmentation.
"""
import argparse
import json
import os
import random
import sys

import matplotlib
import numpy

import chainer
import chainer.links as L
from chainer import training
from chainer.training import extensions

import mn_chainer.datasets
import mn_chainer.extensions
import mn_chainer.links
import mn_chainer.optimizers
import mn_chainer.presets
import models


#: Settings used where neither a preset nor a flag gives one.
DEFAULTS = dict(
    lr=0.01,
    weight_decay=2e-5,
    optimizer='rmsprop',
    lr_schedule=mn_chainer.presets.LRSchedule('exponential', 0.93, every=2),
    batchsize=256,
    epoch=100,
    n_components=3,
    em_iter=2,
)

#: Layers ``--norm mn`` equips with MN when no preset or flag names them.
DEFAULT_MN_LAYERS = {'cifar_cnn': ('conv3',)}

OPTIMIZERS = ('rmsprop', 'rmsprop_tf', 'nesterov')


def _name_list(text):
    return [s for s in (t.strip() for t in text.split(',')) if s]


def _int_list(text):
    try:
        return tuple(int(s) for s in _name_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            'expected comma-separated integers, got {!r}'.format(text))


def _positive(convert):
    def parse(text):
        value = convert(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(
                'must be positive, got {}'.format(text))
        return value
    return parse


def _non_negative_float(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(
            'must be >= 0, got {}'.format(text))
    return value


def get_parser():
    parser = argparse.ArgumentParser(
        description='Mixture Normalization: CIFAR training (paper sec. 4)',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--batchsize', '-b', type=_positive(int),
                        help='mini-batch size (default: preset, else 256)')
    parser.add_argument('--epoch', '-e', type=_positive(int),
                        help='training epochs (default: preset, else 100)')
    parser.add_argument('--learnrate', '-l', type=_positive(float),
                        help='initial learning rate (default: preset, '
                        'else 0.01)')
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Chainer device specifier: -1 or @numpy (CPU), '
                        '0 or @cupy:0 (GPU 0), ...')
    parser.add_argument('--out', '-o', default='result',
                        help='directory to write the results to')
    parser.add_argument('--resume', '-r', default=None,
                        help='snapshot to resume training from')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of NumPy/CuPy, Python random, the data '
                        'subsets and every MN layer')
    parser.add_argument('--model', choices=sorted(models.MODELS),
                        help='architecture (default: preset, else '
                        'cifar_cnn)')
    parser.add_argument('--widths', type=_int_list,
                        help='cifar_cnn channel widths, e.g. 64,128,256,256')
    parser.add_argument('--dataset', choices=sorted(
        mn_chainer.datasets.N_CLASSES), default='cifar10')
    parser.add_argument('--data', default=None,
                        help='.npz with uint8 NHWC x_train/y_train/x_test/'
                        'y_test (default: Chainer\'s download)')
    parser.add_argument('--train-subset', type=_positive(int),
                        help='train on a seeded random subset of this size')
    parser.add_argument('--test-subset', type=_positive(int),
                        help='evaluate on a seeded random subset of this '
                        'size')
    parser.add_argument('--preset',
                        help='paper table row, <table>:<row> or <row> in '
                        'the model\'s default table (e.g. MN-2)')
    parser.add_argument('--list-presets', action='store_true',
                        help='print the presets of --dataset and exit')
    parser.add_argument('--norm', choices=('bn', 'mn'),
                        help='normalization of --mn-layers (default: '
                        'preset, else bn; mn when --mn-layers is given)')
    parser.add_argument('--mn-layers', type=_name_list,
                        help='comma-separated layers to equip with MN')
    parser.add_argument('--n_components', type=_positive(int),
                        help='mixture components K (default: preset, else 3)')
    parser.add_argument('--em_iter', type=_positive(int),
                        help='the paper\'s EM iter. (K-means + EM; default: '
                        'preset, else 2)')
    parser.add_argument('--plain-mn', action='store_true',
                        help='MN then ReLU (Eq. 34) instead of the '
                        'per-component ReLU of Eq. 40')
    parser.add_argument('--weight-decay', type=_non_negative_float,
                        help='weight decay (default: preset, else 2e-5)')
    parser.add_argument('--optimizer', choices=OPTIMIZERS,
                        help='rmsprop: chainer RMSprop(alpha=0.9); '
                        'rmsprop_tf: TF-slim RMSProp (decay 0.9, momentum '
                        '0.9, eps 1); nesterov: NesterovAG(momentum=0.9) '
                        '(default: preset, else rmsprop)')
    parser.add_argument('--loaderjob', '-j', type=_positive(int),
                        help='worker processes of a MultiprocessIterator')
    parser.add_argument('--no-progress', action='store_true',
                        help='do not show the progress bar')
    parser.add_argument('--communicator', default=None,
                        help='ChainerMN communicator (e.g. naive, '
                        'pure_nccl): data-parallel training under mpiexec, '
                        'MN fitted over the global batch')
    return parser


def resolve_settings(args, parser=None):
    """Merges ``--preset``, explicit flags and :data:`DEFAULTS`.

    Returns:
        dict: The settings a run uses (written to ``args.json``).

    Raises:
        ValueError: For an unknown preset or inconsistent flags.

    """
    preset = None
    if args.preset is not None:
        preset = mn_chainer.presets.get_preset(
            args.preset, args.dataset, args.model)
    model = args.model or (preset.model if preset else 'cifar_cnn')

    def pick(flag, name):
        if flag is not None:
            return flag
        if preset is not None and getattr(preset, name) is not None:
            return getattr(preset, name)
        return DEFAULTS[name]

    if args.norm == 'bn' and args.mn_layers:
        raise ValueError('--norm bn contradicts --mn-layers {}'.format(
            ','.join(args.mn_layers)))
    norm = args.norm
    if norm is None:
        if args.mn_layers:
            norm = 'mn'
        else:
            norm = preset.norm if preset is not None else 'bn'
    mn_layers = []
    if norm == 'mn':
        if args.mn_layers:
            mn_layers = list(args.mn_layers)
        elif preset is not None and preset.mn_layers:
            mn_layers = list(preset.mn_layers)
        elif model in DEFAULT_MN_LAYERS:
            mn_layers = list(DEFAULT_MN_LAYERS[model])
        else:
            raise ValueError(
                '--norm mn for model {} needs --mn-layers'.format(model))
    if args.widths is not None and model != 'cifar_cnn':
        raise ValueError('--widths applies to cifar_cnn only, not {}'.format(
            model))
    if args.widths is not None and len(args.widths) != 4:
        raise ValueError('--widths needs 4 integers, got {}'.format(
            args.widths))
    schedule = preset.lr_schedule if preset else DEFAULTS['lr_schedule']
    settings = dict(
        model=model,
        dataset=args.dataset,
        data=args.data,
        preset=preset.id if preset else None,
        table=preset.table if preset else None,
        row=preset.row if preset else None,
        norm=norm,
        mn_layers=mn_layers,
        n_components=pick(args.n_components, 'n_components') if mn_layers
        else None,
        em_iter=pick(args.em_iter, 'em_iter') if mn_layers else None,
        mn_relu=(not args.plain_mn) if mn_layers else None,
        lr=pick(args.learnrate, 'lr'),
        weight_decay=pick(args.weight_decay, 'weight_decay'),
        optimizer=pick(args.optimizer, 'optimizer'),
        lr_schedule=schedule.as_dict(),
        batchsize=pick(args.batchsize, 'batchsize'),
        epoch=pick(args.epoch, 'epoch'),
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        seed=args.seed,
        widths=list(args.widths) if args.widths is not None else None,
        device=args.device,
        loaderjob=args.loaderjob,
        out=args.out,
        resume=args.resume,
    )
    return settings


def make_optimizer(name, lr):
    """Returns the optimizer ``name`` (see :data:`OPTIMIZERS`)."""
    if name == 'rmsprop':
        return chainer.optimizers.RMSprop(lr=lr, alpha=0.9)
    if name == 'rmsprop_tf':
        return mn_chainer.optimizers.RMSpropTF(lr=lr)
    if name == 'nesterov':
        return chainer.optimizers.NesterovAG(lr=lr, momentum=0.9)
    raise ValueError('unknown optimizer {!r}; valid: {}'.format(
        name, ', '.join(OPTIMIZERS)))


def lr_schedule_extension(schedule, n_epochs):
    """Returns ``(extension, trigger)`` applying an :class:`LRSchedule`."""
    if isinstance(schedule, dict):
        schedule = mn_chainer.presets.LRSchedule(
            schedule['kind'], schedule['rate'], schedule['every'],
            tuple(schedule['at']))
    shift = extensions.ExponentialShift('lr', schedule.rate)
    if schedule.kind == 'exponential':
        return shift, (schedule.every, 'epoch')
    return shift, training.triggers.ManualScheduleTrigger(
        schedule.shift_epochs(n_epochs), 'epoch')


class RandomStates(training.Extension):

    """Keeps random number generators in the trainer's snapshots.

    Chainer's snapshots hold the model, optimizer, iterator positions and
    extension states, but not the generators of the shuffling order and of
    the data augmentation (Python's :mod:`random`, used by ChainerCV's
    transforms). This extension does nothing when called; its
    :meth:`serialize` saves and restores the states of Python's
    :mod:`random`, NumPy's global generator and the given generators, so a
    resumed run continues the same random streams as an uninterrupted one.

    Args:
        generators (dict): Name -> :class:`numpy.random.RandomState`.

    """

    trigger = 1, 'epoch'
    priority = training.PRIORITY_READER

    def __init__(self, generators=None):
        self._generators = dict(generators or {})

    def __call__(self, trainer):
        pass

    @staticmethod
    def _serialize_numpy(serializer, name, state):
        kind, keys, pos, has_gauss, cached = state
        keys = serializer(name + '/keys', keys.copy())
        pos = serializer(name + '/pos', numpy.asarray(pos))
        has_gauss = serializer(name + '/has_gauss', numpy.asarray(has_gauss))
        cached = serializer(name + '/cached_gaussian', numpy.asarray(cached))
        return (kind, numpy.asarray(keys, dtype=numpy.uint32), int(pos),
                int(has_gauss), float(cached))

    def serialize(self, serializer):
        version, internal, gauss_next = random.getstate()
        internal = serializer(
            'python/state', numpy.asarray(internal, dtype=numpy.uint64))
        gauss = serializer('python/gauss_next', numpy.asarray(
            numpy.nan if gauss_next is None else gauss_next))
        gauss = float(gauss)
        random.setstate((version, tuple(int(v) for v in internal),
                         None if numpy.isnan(gauss) else gauss))
        numpy.random.set_state(self._serialize_numpy(
            serializer, 'numpy', numpy.random.get_state()))
        for name, rng in sorted(self._generators.items()):
            rng.set_state(self._serialize_numpy(
                serializer, name, rng.get_state()))


def _write_json(path, obj):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)


def _seed_everything(seed, device):
    random.seed(seed)
    numpy.random.seed(seed)
    if device.xp is not numpy:
        device.xp.random.seed(seed)


def main(argv=None):
    """Runs the training; returns the LogReport log (list of dicts)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for name in mn_chainer.presets.list_presets(args.dataset,
                                                    args.model):
            print(name)
        return []
    try:
        settings = resolve_settings(args)
    except ValueError as e:
        parser.error(str(e))

    matplotlib.use('Agg')
    comm = None
    if args.communicator is not None:
        import chainermn
        comm = chainermn.create_communicator(args.communicator)
        if args.device not in ('-1', '@numpy'):
            # One GPU per worker of a node.
            args.device = '@cupy:{}'.format(comm.intra_rank)
    is_main = comm is None or comm.rank == 0
    device = chainer.get_device(args.device)
    device.use()
    _seed_everything(args.seed, device)

    train, test, info = mn_chainer.datasets.get_cifar(
        settings['dataset'], args.data, args.train_subset, args.test_subset,
        seed=args.seed)
    if comm is not None:
        # Each worker trains on its share; rank 0 evaluates the whole test
        # set (MN's inference needs no communication).
        train = chainermn.scatter_dataset(train, comm, shuffle=True,
                                          seed=args.seed)
        settings['communicator'] = args.communicator
        settings['n_workers'] = comm.size
    settings.update(n_train=info['n_train'], n_test=info['n_test'],
                    n_class=info['n_class'], pixel_mean=info['mean'],
                    pixel_std=info['std'])

    model_kwargs = {}
    if args.widths is not None:
        model_kwargs['widths'] = args.widths
    mn_kwargs = None
    if settings['mn_layers']:
        mn_kwargs = dict(n_components=settings['n_components'],
                         em_iter=settings['em_iter'],
                         relu=settings['mn_relu'], seed=args.seed)
        if comm is not None:
            mn_kwargs['comm'] = comm
    predictor = models.get_model(
        settings['model'], n_class=info['n_class'],
        mn_layers=settings['mn_layers'] or None, mn_kwargs=mn_kwargs,
        **model_kwargs)
    settings['mn_norms'] = [name for name, _ in
                            mn_chainer.links.iter_mixture_normalizations(
                                predictor)]
    model = L.Classifier(predictor)
    model.to_device(device)

    optimizer = make_optimizer(settings['optimizer'], settings['lr'])
    if comm is not None:
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    optimizer.setup(model)
    if settings['weight_decay'] > 0:
        optimizer.add_hook(
            chainer.optimizer_hooks.WeightDecay(settings['weight_decay']))

    batchsize = settings['batchsize']
    order_rng = numpy.random.RandomState(args.seed)
    order_sampler = chainer.iterators.ShuffleOrderSampler(order_rng)
    if args.loaderjob:
        train_iter = chainer.iterators.MultiprocessIterator(
            train, batchsize, n_processes=args.loaderjob,
            order_sampler=order_sampler)
        test_iter = chainer.iterators.MultiprocessIterator(
            test, batchsize, repeat=False, shuffle=False,
            n_processes=args.loaderjob)
    else:
        train_iter = chainer.iterators.SerialIterator(
            train, batchsize, order_sampler=order_sampler)
        test_iter = chainer.iterators.SerialIterator(
            test, batchsize, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(
        train_iter, optimizer, device=device)
    trainer = training.Trainer(
        updater, (settings['epoch'], 'epoch'), out=args.out)

    shift, shift_trigger = lr_schedule_extension(
        settings['lr_schedule'], settings['epoch'])
    trainer.extend(shift, trigger=shift_trigger)
    trainer.extend(RandomStates({'order': order_rng}), name='random_states')
    if is_main:
        # With ChainerMN, evaluation, reports and snapshots run on rank 0.
        _extend_reporting(trainer, test_iter, model, predictor, device,
                          settings, args.no_progress)

    if args.resume is not None:
        chainer.serializers.load_npz(args.resume, trainer)

    settings['argv'] = list(sys.argv[1:] if argv is None else argv)
    if is_main:
        os.makedirs(args.out, exist_ok=True)
        _write_json(os.path.join(args.out, 'args.json'), settings)
        _print_header(device, settings, batchsize, comm)
    trainer.run()
    if not is_main:
        return []
    return list(trainer.get_extension('LogReport').log)


def _extend_reporting(trainer, test_iter, model, predictor, device, settings,
                      no_progress):
    """Evaluator, snapshots, logs, plots and the progress bar."""
    trainer.extend(extensions.Evaluator(test_iter, model, device=device))
    trainer.extend(extensions.observe_lr(), trigger=(1, 'epoch'))
    if settings['mn_norms']:
        trainer.extend(mn_chainer.extensions.MixtureMonitor(predictor))
    trainer.extend(extensions.LogReport())
    mn_keys = ['mn/{}/effective_k'.format(n) for n in settings['mn_norms']]
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'validation/main/loss',
         'main/accuracy', 'validation/main/accuracy', 'lr'] + mn_keys +
        ['elapsed_time']))
    if extensions.PlotReport.available():
        trainer.extend(extensions.PlotReport(
            ['main/loss', 'validation/main/loss'], 'epoch',
            file_name='loss.png'))
        trainer.extend(extensions.PlotReport(
            ['main/accuracy', 'validation/main/accuracy'], 'epoch',
            file_name='accuracy.png'))
    if not no_progress:
        trainer.extend(extensions.ProgressBar())
    # Last, so that the snapshot holds every other extension's state after
    # its run in that epoch. Chainer's writer saves to a temporary file in
    # `out` and renames it: an interrupted run never leaves a torn snapshot.
    trainer.extend(extensions.snapshot(
        filename='snapshot_epoch_{.updater.epoch}'), trigger=(1, 'epoch'))


def _print_header(device, settings, batchsize, comm):
    print('# device: {}{}'.format(
        device, '' if comm is None else ' x {} workers ({})'.format(
            comm.size, settings['communicator'])))
    print('# model: {} ({}), dataset: {} ({} train / {} test images)'.format(
        settings['model'], settings['preset'] or 'no preset',
        settings['dataset'], settings['n_train'], settings['n_test']))
    print('# norm: {}{}'.format(settings['norm'], ' at {} (K={}, EM iter {})'
                                .format(','.join(settings['mn_layers']),
                                        settings['n_components'],
                                        settings['em_iter'])
                                if settings['mn_layers'] else ''))
    print('# optimizer: {}, lr {}, weight decay {}, batch {}{}, {} epochs'
          .format(settings['optimizer'], settings['lr'],
                  settings['weight_decay'], batchsize,
                  '' if comm is None else ' per worker',
                  settings['epoch']))
    print('')


if __name__ == '__main__':
    main()
