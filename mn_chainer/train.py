"""Training of the CIFAR models with batch or mixture normalization.

The implementation of ``train_cifar.py`` (paper section 4); the script is a
thin wrapper, and :func:`main` can be called in-process (the demo does)::

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
:class:`mn_chainer.optimizers.RMSpropTF`); ``nesterov`` is
``chainer.optimizers.NesterovAG(lr, momentum=0.9)``.

The run directory (``--out``) belongs to this one run (see
:mod:`mn_chainer.rundir`): the LogReport ``log`` (one JSON entry per epoch,
with each MN layer's ``mn/<layer>/effective_k``), ``args.json`` (the
settings in effect, written once the run can start), ``loss.png``,
``accuracy.png``, a snapshot ``snapshot_epoch_<n>`` every epoch and, with
``--dump-mixtures``, the mixtures of the chosen MN layers in
``mixtures.npz`` (paper Fig. 8; ``mn-plot mixture`` draws it).

``--resume`` continues a run from a snapshot (or from the latest snapshot of
a run directory). The snapshot holds the run's settings: flags left out
take their values from it, ``--epoch``, ``--device``, ``--loaderjob``,
``--data`` (the same images elsewhere) and the dump flags may change and are
recorded in ``args.json`` under ``resumes``, and any other flag that
contradicts the snapshot is refused. Runs with the same ``--seed`` (and no
``--loaderjob``) are reproducible on the CPU, resumed ones included, also
under ``mpiexec`` with ``--communicator`` (each worker's augmentation is
seeded from the seed and its rank, and the snapshot holds every worker's
random streams).

``--finetune-batches N`` (issue 16) ends the run with population
statistics: after the training, every BN and MN layer is fine-tuned over
``N`` batches of the training split
(:func:`mn_chainer.evaluate.finetune_population`: seeded order, the
training's augmentation; with ChainerMN every worker runs ``N`` batches of
its share, each worker's BN statistics are its own and MN's population
mixture is fitted over all of them), and the test split is classified once
more in test mode with them: BN's population mean and variance, MN's
population mixture (Eqs. 38-39 with one entry). The result is an entry of
``finetuned.json`` (:func:`mn_chainer.logs.load_finetuned`; written
atomically, the ``log`` is left as it is), with the test accuracy over the
images (Chainer's ``Evaluator`` in the ``log`` averages over batches: the
two differ where the batch size does not divide the test split). The
snapshots keep the trained state (BN's running averages, MN's queue).

The fine-tuning batches depend on the seed, the worker, the batch size and
``N`` only, so the entry is a function of the final snapshot: a run that
was trained without the flag, or stopped while fine-tuning, is fine-tuned
by resuming it (``--resume RUN --finetune-batches N``: nothing is left to
train, it fine-tunes and records what the uninterrupted run would have
recorded; ``mn-study run`` does this for such runs). A resume may change
``N`` (recorded under ``resumes``); left out, it is the snapshot's, as
every flag (a resume that only fine-tuned wrote no snapshot: give the flag
again). A resumed run that trains further fine-tunes again at its new end
and adds an entry (each names its epoch; the same state fine-tuned again
with the same setting replaces its entry).
For a single-process run, ``mn-evaluate RUN --inference population
--finetune-batches N`` gives the entry's accuracy and loss again.
"""
import argparse
import functools
import os
import sys

import matplotlib
import numpy

import chainer
import chainer.links as L
from chainer import training
from chainer.training import extensions

from mn_chainer import cli
import mn_chainer.datasets
from mn_chainer import evaluate
import mn_chainer.extensions
import mn_chainer.links
from mn_chainer import logs
import mn_chainer.optimizers
import mn_chainer.presets
from mn_chainer import rundir
from mn_chainer import runs
import models


#: Program name of the messages.
PROG = 'train_cifar.py'

#: Settings used where neither a preset, a flag nor a resumed snapshot
#: gives one.
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

#: Settings key -> the flag that sets it, for the checks of a resume.
FLAGS = {
    'model': '--model', 'widths': '--widths', 'dataset': '--dataset',
    'preset': '--preset', 'norm': '--norm', 'mn_layers': '--mn-layers',
    'n_components': '--n-components', 'em_iter': '--em-iter',
    'mn_relu': '--plain-mn', 'lr': '--learnrate',
    'weight_decay': '--weight-decay', 'optimizer': '--optimizer',
    'batchsize': '--batchsize', 'train_subset': '--train-subset',
    'test_subset': '--test-subset', 'seed': '--seed',
    'n_workers': 'the number of workers (mpiexec -n)',
    'epoch': '--epoch', 'device': '--device', 'loaderjob': '--loaderjob',
    'data': '--data', 'communicator': '--communicator',
    'dump_mixtures': '--dump-mixtures', 'dump_every': '--dump-every',
    'finetune_batches': '--finetune-batches',
}

#: Settings a resumed run may change: they are applied and recorded. Every
#: other setting of :data:`FLAGS` is the snapshot's, and a flag that
#: contradicts it is refused.
RESUME_MAY_CHANGE = ('epoch', 'device', 'loaderjob', 'data', 'communicator',
                     'dump_mixtures', 'dump_every', 'finetune_batches')

#: argparse destination -> settings key of the flags a resume takes from
#: its snapshot when they are left out (``--plain-mn`` is the negation of
#: ``mn_relu``; the communicator is created before the snapshot is read).
_RECORDED = runs.flag_destinations(
    FLAGS, exclude=('mn_relu', 'communicator', 'n_workers'))


def _int_list(text):
    try:
        return tuple(int(s) for s in cli.name_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            'expected comma-separated integers, got {!r}'.format(text))


def _layer_list(text):
    """``'conv2,conv3'`` -> names; a text without names stays one name
    (the model rejects it and lists the valid names)."""
    return cli.name_list(text) or [text]


def get_parser():
    """The command line of ``train_cifar.py``."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=cli.HelpFormatter,
        description='Mixture Normalization: CIFAR training (paper section '
        '4). Flags left out take their values from --preset, else from '
        'Table II\'s BN-2/MN-2 setting; on --resume, from the snapshot.')
    group = parser.add_argument_group('training')
    group.add_argument('--batchsize', '-b', type=cli.positive(int),
                       help='mini-batch size (per worker with '
                       '--communicator; default: preset, else 256)')
    group.add_argument('--epoch', '-e', type=cli.positive(int),
                       help='training epochs (default: preset, else 100)')
    group.add_argument('--learnrate', '-l', type=cli.positive(float),
                       help='initial learning rate (default: preset, else '
                       '0.01)')
    cli.add_option(group, '--weight-decay', aliases=('--weight_decay',),
                   type=cli.non_negative(float),
                   help='weight decay (default: preset, else 2e-5)')
    group.add_argument('--optimizer', choices=OPTIMIZERS,
                       help='rmsprop: chainer RMSprop(alpha=0.9); '
                       'rmsprop_tf: TF-slim RMSProp (decay 0.9, momentum '
                       '0.9, eps 1); nesterov: NesterovAG(momentum=0.9) '
                       '(default: preset, else rmsprop)')
    group.add_argument('--seed', type=int,
                       help='seed of NumPy/CuPy, the augmentation, the data '
                       'subsets and every MN layer (default: 0)')
    group.add_argument('--finetune-batches', type=cli.non_negative(int),
                       metavar='N',
                       help='after training, fine-tune every BN and MN '
                       'layer over N training batches (population '
                       'statistics) and evaluate the test split again, '
                       'recorded in <out>/finetuned.json (default: 0, off)')

    group = parser.add_argument_group('model')
    group.add_argument('--preset',
                       help='paper table row, <table>:<row> or <row> in '
                       'the model\'s default table (e.g. MN-2)')
    group.add_argument('--list-presets', action='store_true',
                       help='print the presets of --dataset and exit')
    group.add_argument('--model', choices=sorted(models.MODELS),
                       help='architecture (default: preset, else '
                       'cifar_cnn)')
    group.add_argument('--widths', type=_int_list,
                       help='cifar_cnn channel widths, e.g. 64,128,256,256')

    group = parser.add_argument_group('mixture normalization')
    group.add_argument('--norm', choices=('bn', 'mn'),
                       help='normalization of --mn-layers (default: '
                       'preset, else bn; mn when --mn-layers is given)')
    group.add_argument('--mn-layers', type=_layer_list, metavar='LAYERS',
                       help='comma-separated layers to equip with MN '
                       '(default: preset, else conv3)')
    group.add_argument('--plain-mn', action='store_true', default=None,
                       help='MN then ReLU (Eq. 34) instead of the '
                       'per-component ReLU of Eq. 40')
    runs.add_mixture_options(group, 'preset, else ')
    group.add_argument('--dump-every', type=cli.positive(int), metavar='N',
                       help='epochs between two dumps of --dump-mixtures '
                       '(default: 1)')

    group = parser.add_argument_group('data')
    group.add_argument('--dataset',
                       choices=sorted(mn_chainer.datasets.N_CLASSES),
                       help='dataset (default: cifar10)')
    group.add_argument('--data', metavar='PATH.npz',
                       help='.npz with uint8 NHWC x_train/y_train/x_test/'
                       'y_test (default: Chainer\'s download)')
    group.add_argument('--train-subset', type=cli.positive(int),
                       metavar='N',
                       help='train on a seeded random subset of this size')
    group.add_argument('--test-subset', type=cli.positive(int), metavar='N',
                       help='evaluate on a seeded random subset of this '
                       'size')
    group.add_argument('--loaderjob', '-j', type=cli.positive(int),
                       help='worker processes of a MultiprocessIterator '
                       '(their augmentation is not reproducible)')

    group = runs.add_run_options(parser, 'result')
    group.add_argument('--no-progress', action='store_true',
                       help='do not show the progress bar')
    return parser


def resolve_settings(args, parser=None):
    """Merges ``--preset``, explicit flags and :data:`DEFAULTS`.

    Args:
        args (argparse.Namespace): Parsed :func:`get_parser` arguments.
        parser: Unused (kept for callers that pass it).

    Returns:
        dict: The settings a run uses (written to ``args.json``).

    Raises:
        mn_chainer.cli.UsageError: For an unknown preset or inconsistent
            flags (a ``ValueError``).

    """
    dataset = args.dataset or 'cifar10'
    preset = None
    try:
        if args.preset is not None:
            preset = mn_chainer.presets.get_preset(
                args.preset, dataset, args.model)
    except ValueError as e:
        raise cli.UsageError('--preset {}: {}'.format(args.preset, e))
    model = args.model or (preset.model if preset else 'cifar_cnn')

    def pick(flag, name):
        if flag is not None:
            return flag
        if preset is not None and getattr(preset, name) is not None:
            return getattr(preset, name)
        return DEFAULTS[name]

    if args.norm == 'bn' and args.mn_layers:
        raise cli.UsageError('--norm bn contradicts --mn-layers {}'.format(
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
            raise cli.UsageError(
                '--norm mn for model {} needs --mn-layers'.format(model))
    if args.widths is not None and model != 'cifar_cnn':
        raise cli.UsageError(
            '--widths applies to cifar_cnn only, not {}'.format(model))
    if args.widths is not None and len(args.widths) != 4:
        raise cli.UsageError('--widths needs 4 integers, got {}'.format(
            ','.join(str(w) for w in args.widths)))
    if args.dump_mixtures and not mn_layers:
        raise cli.UsageError('--dump-mixtures {} needs Mixture Normalization '
                             'layers (--norm mn or --mn-layers)'.format(
                                 ','.join(args.dump_mixtures)))
    schedule = preset.lr_schedule if preset else DEFAULTS['lr_schedule']
    settings = dict(
        model=model,
        dataset=dataset,
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
        seed=0 if args.seed is None else args.seed,
        widths=list(args.widths) if args.widths is not None else None,
        device='-1' if args.device is None else args.device,
        loaderjob=args.loaderjob,
        communicator=args.communicator,
        dump_mixtures=list(args.dump_mixtures or []),
        dump_every=(args.dump_every or 1) if args.dump_mixtures else None,
        finetune_batches=args.finetune_batches or 0,
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


# ---------------------------------------------------------------------------
# The run


def _model_kwargs(settings):
    kwargs = {}
    if settings['widths'] is not None:
        kwargs['widths'] = tuple(settings['widths'])
    return kwargs


def _seed_everything(seed, device, rank):
    mn_chainer.datasets.seed_augmentation(seed, rank)
    numpy.random.seed(seed)
    if device.xp is not numpy:
        device.xp.random.seed(seed)


def main(argv=None):
    """Runs the training; returns the LogReport log (list of dicts).

    Errors are raised (see :mod:`mn_chainer.cli` for the command line's
    one-line reports): :class:`~mn_chainer.cli.UsageError` for flags that
    cannot work, :class:`~mn_chainer.cli.CommandError` (or the data
    loader's ``ValueError``/``FileNotFoundError`` naming the file) for data
    and environment errors.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    if args.list_presets:
        for name in mn_chainer.presets.list_presets(
                args.dataset or 'cifar10', args.model):
            print(name)
        return []

    settings, recorded, changes, comm = runs.prepare(
        args, PROG, _RECORDED, FLAGS, RESUME_MAY_CHANGE, _resolve, 'result')
    if settings['finetune_batches'] and not rundir.moves_aside(
            settings['out'], args.overwrite, settings['resume']):
        # A record that cannot take the new entry stops the run now, not
        # after its training.
        cli.on_main_worker(comm, lambda: _finetuned(settings['out']))
    rank = 0 if comm is None else comm.rank
    device = cli.worker_device(settings['device'], comm)
    n_class = mn_chainer.datasets.N_CLASSES[settings['dataset']]
    if settings['mn_layers']:
        cli.check_norm_layers(models.get_model(
            settings['model'], n_class=n_class, **_model_kwargs(settings)),
            settings['mn_layers'])
    _seed_everything(settings['seed'], device, rank)

    try:
        train, test, info = mn_chainer.datasets.get_cifar(
            settings['dataset'], settings['data'], settings['train_subset'],
            settings['test_subset'], seed=settings['seed'])
    except mn_chainer.datasets.SubsetSizeError as e:
        raise cli.UsageError('--{}-subset {}: {}'.format(e.split, e.size, e))
    settings.update(n_train=info['n_train'], n_test=info['n_test'],
                    n_class=info['n_class'], pixel_mean=info['mean'],
                    pixel_std=info['std'])
    if recorded is not None:
        runs.check_same_data(settings, recorded, (
            'n_train', 'n_test', 'pixel_mean', 'pixel_std'))
    if comm is not None:
        # Each worker trains on its share; worker 0 evaluates the whole test
        # set (MN's inference needs no communication).
        import chainermn
        train = chainermn.scatter_dataset(train, comm, shuffle=True,
                                          seed=settings['seed'])
    cli.check_batchsize(settings['batchsize'], len(train),
                        settings['n_workers'])

    trainer = _build_trainer(settings, train, test, device, comm,
                             args.no_progress)
    finish = None
    if settings['finetune_batches']:
        finish = functools.partial(_finetune_and_evaluate, train=train,
                                   test=test, settings=settings,
                                   device=device, comm=comm)
    return runs.train(trainer, settings, recorded, changes, argv,
                      args.overwrite, comm, lambda moved: _print_header(
                          device, settings, comm, moved), finish)


def _resolve(args, recorded):
    """:func:`resolve_settings`, ``--plain-mn`` taken from a snapshot."""
    if recorded is not None and args.plain_mn is None:
        args.plain_mn = recorded.get('mn_relu') is False
    return resolve_settings(args)


def _build_trainer(settings, train, test, device, comm, no_progress):
    """The model, optimizer, iterators, trainer and its extensions."""
    predictor = models.get_model_from_settings(settings, comm)
    settings['mn_norms'] = [name for name, _ in
                            mn_chainer.links.iter_mixture_normalizations(
                                predictor)]
    dump_layers = cli.check_norm_layers(
        predictor, settings['dump_mixtures'], '--dump-mixtures')
    runs.check_mixture_layers(dump_layers, settings['mn_norms'])
    model = L.Classifier(predictor)
    model.to_device(device)

    optimizer = make_optimizer(settings['optimizer'], settings['lr'])
    if comm is not None:
        import chainermn
        optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
    optimizer.setup(model)
    if settings['weight_decay'] > 0:
        optimizer.add_hook(
            chainer.optimizer_hooks.WeightDecay(settings['weight_decay']))

    batchsize = settings['batchsize']
    order_rng = numpy.random.RandomState(settings['seed'])
    order_sampler = chainer.iterators.ShuffleOrderSampler(order_rng)
    if settings['loaderjob']:
        train_iter = chainer.iterators.MultiprocessIterator(
            train, batchsize, n_processes=settings['loaderjob'],
            order_sampler=order_sampler)
        test_iter = chainer.iterators.MultiprocessIterator(
            test, batchsize, repeat=False, shuffle=False,
            n_processes=settings['loaderjob'])
    else:
        train_iter = chainer.iterators.SerialIterator(
            train, batchsize, order_sampler=order_sampler)
        test_iter = chainer.iterators.SerialIterator(
            test, batchsize, repeat=False, shuffle=False)

    updater = training.updaters.StandardUpdater(
        train_iter, optimizer, device=device)
    trainer = training.Trainer(
        updater, (settings['epoch'], 'epoch'), out=settings['out'])

    shift, shift_trigger = lr_schedule_extension(
        settings['lr_schedule'], settings['epoch'])
    trainer.extend(shift, trigger=shift_trigger)
    trainer.extend(mn_chainer.extensions.RandomStates(
        {'order': order_rng}, comm=comm), name='random_states')
    trainer.extend(mn_chainer.extensions.RunRecord(settings))
    if comm is None or comm.rank == 0:
        # With ChainerMN, evaluation, reports and snapshots run on rank 0.
        _extend_reporting(trainer, test_iter, model, predictor, device,
                          settings, dump_layers, no_progress)
    return trainer


def _extend_reporting(trainer, test_iter, model, predictor, device, settings,
                      dump_layers, no_progress):
    """Evaluator, snapshots, logs, plots and the progress bar."""
    trainer.extend(extensions.Evaluator(test_iter, model, device=device))
    trainer.extend(extensions.observe_lr(), trigger=(1, 'epoch'))
    if settings['mn_norms']:
        trainer.extend(runs.mixture_monitor(
            predictor, settings, dump_layers,
            (settings['dump_every'], 'epoch')))
    trainer.extend(extensions.LogReport())
    mn_keys = ['mn/{}/effective_k'.format(n) for n in settings['mn_norms']]
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'validation/main/loss',
         'main/accuracy', 'validation/main/accuracy', 'lr'] + mn_keys +
        ['elapsed_time']))
    if extensions.PlotReport.available():
        matplotlib.use('Agg')
        trainer.extend(mn_chainer.extensions.PlotReport(
            ['main/loss', 'validation/main/loss'], 'epoch',
            file_name='loss.png'))
        trainer.extend(mn_chainer.extensions.PlotReport(
            ['main/accuracy', 'validation/main/accuracy'], 'epoch',
            file_name='accuracy.png'))
    if not no_progress:
        trainer.extend(extensions.ProgressBar())
    # Last, so that the snapshot holds every other extension's state after
    # its run in that epoch.
    trainer.extend(mn_chainer.extensions.snapshot(
        'snapshot_epoch_{.updater.epoch}'), trigger=(1, 'epoch'))


def _finetuned(out):
    """The entries of ``<out>/finetuned.json`` (a one-line error if it
    cannot be read)."""
    try:
        return logs.load_finetuned(out)
    except logs.LogError as e:
        raise cli.CommandError('{} (move it away to fine-tune this run '
                               'again)'.format(e))


def _finetune_and_evaluate(trainer, train, test, settings, device, comm):
    """After the training: population statistics from ``--finetune-batches``
    batches on every worker, then worker 0 classifies the test split and
    adds the entry to ``finetuned.json`` (see the module doc)."""
    model = trainer.updater.get_optimizer('main').target
    rank = 0 if comm is None else comm.rank
    entry = evaluate.finetune_population(
        model, train, settings['seed'], settings['batchsize'],
        settings['finetune_batches'], device, rank)
    if rank != 0:
        return
    entry.update(evaluate.classify(model.predictor, test,
                                   settings['batchsize'], device))
    epoch, iteration = trainer.updater.epoch, trainer.updater.iteration
    entry.update(epoch=epoch, iteration=iteration,
                 snapshot='snapshot_epoch_{}'.format(epoch),
                 batchsize=settings['batchsize'],
                 n_workers=settings['n_workers'])
    same = ('iteration', 'finetune_batches', 'batchsize', 'n_workers')
    entries = [e for e in _finetuned(trainer.out)
               if any(e.get(k) != entry[k] for k in same)]
    path = os.path.join(trainer.out, logs.FINETUNED_FILE)
    rundir.write_json(path, entries + [entry])
    print('# epoch {}, population statistics from {} fine-tuning batches: '
          'test accuracy {:.2f}%, loss {:.4f} ({})'.format(
              epoch, entry['finetune_batches'], 100 * entry['accuracy'],
              entry['loss'], path))


def _print_header(device, settings, comm, moved):
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
                  settings['weight_decay'], settings['batchsize'],
                  '' if comm is None else ' per worker',
                  settings['epoch']))
    if settings['finetune_batches']:
        print('# then: fine-tune over {} batches{}, test accuracy with '
              'population statistics into finetuned.json'.format(
                  settings['finetune_batches'],
                  '' if comm is None else ' per worker'))
    for line in runs.describe_start(settings, moved, FLAGS) + ['']:
        print(line)
