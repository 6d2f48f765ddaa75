#!/usr/bin/env python
"""Train a DCGAN on CIFAR-10 with a batch- or mixture-normalized generator.

The paper's section 4.5: Adam (alpha 2e-4, beta1 0.5) for the generator and
the discriminator, 100K generator updates, FID every 10K. ``--mn`` replaces
the generator's norms after the first two deconvolutions with Mixture
Normalization (K = 3, EM iter 2, Eq. 40)::

    python train_dcgan.py --data cifar10.npz -d 0 -o result/dcgan_bn \\
        --inception-weights fid_inception.npz --fid-stats cifar10_fid.npz
    python train_dcgan.py --data cifar10.npz -d 0 -o result/dcgan_mn --mn \\
        --inception-weights fid_inception.npz --fid-stats cifar10_fid.npz

FID needs the FID Inception weights (see :mod:`mn_chainer.fid` and
``tools/convert_fid_inception.py``); without them it is reported as
unavailable and not logged. ``--dump-mixtures norm1,norm2`` writes the
generator's mixtures into ``<out>/mixtures.npz`` (paper Fig. 8, drawn by
``mn-plot mixture``).

The run directory belongs to one run and ``--resume`` continues it as
``train_cifar.py`` does (see :mod:`mn_chainer.runs`): flags left out take
the snapshot's values, the lengths, intervals, device, FID and dump flags
may change (recorded in ``args.json``), and a flag that contradicts the
snapshot is refused. Errors end with one line on stderr (exit status 2 for
usage errors, 1 for data or environment errors; ``--debug`` shows the
traceback).
"""
import argparse
import os
import sys
import warnings

import numpy

# Before Chainer: the package silences CuPy's NCCL warning on import.
import mn_chainer  # NOQA: F401, I100

import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions

from mn_chainer import cli
import mn_chainer.datasets
import mn_chainer.extensions
from mn_chainer.extensions import FIDEvaluator
import mn_chainer.fid
import mn_chainer.links
from mn_chainer import runs
import models.dcgan


#: Program name of the messages.
PROG = 'train_dcgan.py'

#: Settings where neither a flag nor a resumed snapshot gives one (the
#: paper's section 4.5 and Chainer's DCGAN example).
DEFAULTS = dict(
    batchsize=64, iterations=100000, n_hidden=100, ch=512, seed=0,
    snapshot_interval=10000, display_interval=100, alpha=2e-4, beta1=0.5,
    n_components=3, em_iter=2, dataset='cifar10', device='-1',
    fid_interval=10000, fid_samples=50000, fid_batchsize=100,
)

#: Settings key -> flag, for the checks of a resume.
FLAGS = {
    'batchsize': '--batchsize', 'n_hidden': '--n-hidden', 'ch': '--ch',
    'seed': '--seed', 'alpha': '--alpha', 'beta1': '--beta1', 'mn': '--mn',
    'n_components': '--n-components', 'em_iter': '--em-iter',
    'dataset': '--dataset', 'train_subset': '--train-subset',
    'n_workers': 'the number of workers (mpiexec -n)',
    'iterations': '--iterations', 'device': '--device', 'data': '--data',
    'communicator': '--communicator',
    'snapshot_interval': '--snapshot-interval',
    'display_interval': '--display-interval',
    'sample_interval': '--sample-interval',
    'fid_interval': '--fid-interval', 'fid_samples': '--fid-samples',
    'fid_batchsize': '--fid-batchsize',
    'inception_weights': '--inception-weights', 'fid_stats': '--fid-stats',
    'dump_mixtures': '--dump-mixtures', 'dump_interval': '--dump-interval',
}

#: Settings a resumed run may change (applied and recorded); the others
#: are the snapshot's, and a flag that contradicts one is refused.
RESUME_MAY_CHANGE = (
    'iterations', 'device', 'data', 'communicator', 'snapshot_interval',
    'display_interval', 'sample_interval', 'fid_interval', 'fid_samples',
    'fid_batchsize', 'inception_weights', 'fid_stats', 'dump_mixtures',
    'dump_interval')

#: The flags a resume takes from its snapshot when left out (the
#: communicator is created before the snapshot is read).
_RECORDED = runs.flag_destinations(FLAGS,
                                   exclude=('communicator', 'n_workers'))


class GANUpdater(training.updaters.StandardUpdater):

    """One discriminator and one generator Adam step per iteration.

    Non-saturating GAN losses (Goodfellow et al.) through ``softplus``::

        L_D = mean(softplus(-D(x))) + mean(softplus(D(G(z))))
        L_G = mean(softplus(-D(G(z))))

    reported as ``dis/loss`` and ``gen/loss``. The steps alternate as in
    Goodfellow et al.'s Algorithm 1: the discriminator's on detached fakes,
    then the generator's against the updated discriminator. (Chainer's DCGAN
    example reuses one ``D(G(z))`` for both, so its generator gradient runs
    through discriminator weights already changed in place by the first
    step; a fresh forward pass avoids that mix.) The batches are ``uint8``
    images (N, 3, 32, 32) mapped to ``[-1, 1]`` here; ``z`` is drawn from
    ``rng`` (kept in the snapshots by
    :class:`mn_chainer.extensions.RandomStates`, so a resumed run draws
    what an uninterrupted one would).

    Args:
        models (tuple): ``(gen, dis)``.
        rng (numpy.random.RandomState): Source of ``z`` (and, when shared
            with the iterator's order sampler, of the shuffling).
        *args, **kwargs: Those of
            :class:`~chainer.training.updaters.StandardUpdater`
            (``optimizer={'gen': ..., 'dis': ...}``).

    """

    def __init__(self, *args, **kwargs):
        self.gen, self.dis = kwargs.pop('models')
        self.rng = kwargs.pop('rng', None)
        if self.rng is None:
            self.rng = numpy.random.RandomState()
        super(GANUpdater, self).__init__(*args, **kwargs)

    def loss_dis(self, dis, y_fake, y_real):
        batchsize = len(y_fake)
        loss = (F.sum(F.softplus(-y_real)) + F.sum(F.softplus(y_fake))) \
            / batchsize
        chainer.report({'loss': loss}, dis)
        return loss

    def loss_gen(self, gen, y_fake):
        loss = F.sum(F.softplus(-y_fake)) / len(y_fake)
        chainer.report({'loss': loss}, gen)
        return loss

    def update_core(self):
        gen_optimizer = self.get_optimizer('gen')
        dis_optimizer = self.get_optimizer('dis')
        batch = self.get_iterator('main').next()
        x_real = self.converter(batch, self.device)
        x_real = x_real.astype(numpy.float32) / 127.5 - 1

        gen, dis = self.gen, self.dis
        z = gen.device.send(gen.make_hidden(len(batch), self.rng))
        x_fake = gen(z)
        # The discriminator's step stops at the fakes ...
        y_real = dis(x_real)
        y_fake = dis(x_fake.array)
        dis_optimizer.update(self.loss_dis, dis, y_fake, y_real)
        # ... and the generator's is taken against the updated
        # discriminator, through a fresh forward pass.
        gen_optimizer.update(self.loss_gen, gen, dis(x_fake))


def to_uint8_grid(images, rows, cols):
    """Tile images ``(rows * cols, 3, H, W)`` in ``[-1, 1]`` into an RGB grid.

    Returns:
        numpy.ndarray: ``uint8`` array of shape ``(rows * H, cols * W, 3)``.

    """
    images = numpy.asarray(images)
    x = numpy.clip(numpy.rint((images + 1) * 127.5), 0, 255).astype(
        numpy.uint8)
    _, c, h, w = x.shape
    x = x.reshape((rows, cols, c, h, w)).transpose(0, 3, 1, 4, 2)
    return x.reshape((rows * h, cols * w, c))


def sample_grid(gen, rows, cols, seed, out, dirname='preview'):
    """Extension writing ``<out>/preview/image_iter_<iteration>.png``.

    The generator runs in test mode (``chainer.config.train = False``:
    batch normalization's running averages, Mixture Normalization's queue
    of mixtures) on a fixed ``z`` drawn with ``seed``.
    """
    z = gen.make_hidden(rows * cols, numpy.random.RandomState(seed))

    @training.make_extension()
    def make_image(trainer):
        import PIL.Image
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            x = gen(gen.device.send(z))
        x = chainer.backend.CpuDevice().send(x.array)
        directory = os.path.join(out, dirname)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, 'image_iter_{:08d}.png'.format(
            trainer.updater.iteration))
        PIL.Image.fromarray(to_uint8_grid(x, rows, cols)).save(path)

    return make_image


#: argparse type of --ch: the three deconvolutions halve it.
_CH = cli.checked(int, lambda value: value > 0 and value % 8 == 0,
                  'must be a positive multiple of 8')

#: argparse type of --beta1.
_BETA = cli.checked(float, lambda value: 0 <= value < 1,
                    'must be in [0, 1)')


def get_parser():
    """The command line of ``train_dcgan.py``."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=cli.HelpFormatter,
        description='DCGAN on CIFAR-10 with batch or mixture normalization '
        '(Kalayeh & Shah, section 4.5). On --resume, flags left out take '
        'the snapshot\'s values.')
    positive = cli.positive(int)
    group = parser.add_argument_group('training')
    group.add_argument('--batchsize', '-b', type=positive,
                       help='images in each mini-batch (per worker; '
                       'default: {})'.format(DEFAULTS['batchsize']))
    group.add_argument('--iterations', type=positive,
                       help='generator updates (default: {})'.format(
                           DEFAULTS['iterations']))
    cli.add_option(group, '--n-hidden', '-n', aliases=('--n_hidden',),
                   type=positive, help='dimension of z (default: 100)')
    group.add_argument('--ch', type=_CH,
                       help='widest channel count of G and D (default: '
                       '512)')
    group.add_argument('--alpha', type=cli.positive(float),
                       help='Adam alpha of both networks (default: 2e-4)')
    group.add_argument('--beta1', type=_BETA,
                       help='Adam beta1 of both networks (default: 0.5)')
    group.add_argument('--seed', type=int,
                       help='seed of z, shuffling, MN fits and the subset '
                       '(default: 0)')

    group = parser.add_argument_group('mixture normalization')
    group.add_argument('--mn', nargs='*', metavar='LAYER',
                       help='use MN in the generator; without names, at the '
                       'paper\'s layers (norm1 norm2 = "paper")')
    runs.add_mixture_options(group)
    group.add_argument('--dump-interval', type=positive, metavar='N',
                       help='iterations between two dumps (default: the '
                       'display interval)')

    group = parser.add_argument_group('data')
    group.add_argument('--dataset',
                       choices=sorted(mn_chainer.datasets.N_CLASSES),
                       help='dataset, training images only (default: '
                       'cifar10)')
    group.add_argument('--data', metavar='PATH.npz',
                       help='npz with x_train (N, 32, 32, 3) uint8 ... '
                       'instead of Chainer\'s download')
    cli.add_option(group, '--train-subset', aliases=('--train_subset',),
                   type=positive, metavar='N',
                   help='train on a seeded random subset of this size')

    group = parser.add_argument_group('FID')
    cli.add_option(group, '--inception-weights',
                   aliases=('--inception_weights',), metavar='PATH.npz',
                   help='FID Inception weights converted by '
                   'tools/convert_fid_inception.py')
    cli.add_option(group, '--fid-stats', aliases=('--fid_stats',),
                   metavar='PATH.npz',
                   help='real-image FID statistics (read if present, '
                   'else computed and cached; default '
                   '<out>/fid_stats_<dataset>_train.npz)')
    cli.add_option(group, '--fid-interval', aliases=('--fid_interval',),
                   type=cli.non_negative(int), metavar='N',
                   help='iterations between FID evaluations (0: never; '
                   'default: 10000)')
    cli.add_option(group, '--fid-samples', aliases=('--fid_samples',),
                   type=positive, metavar='N',
                   help='generated samples per FID evaluation (default: '
                   '50000)')
    cli.add_option(group, '--fid-batchsize', aliases=('--fid_batchsize',),
                   type=positive, metavar='N',
                   help='batch size of FID feature extraction (default: '
                   '100)')

    group = runs.add_run_options(parser, 'result/dcgan')
    cli.add_option(group, '--snapshot-interval',
                   aliases=('--snapshot_interval',), type=positive,
                   metavar='N', help='iterations between trainer snapshots '
                   '(default: 10000)')
    cli.add_option(group, '--display-interval',
                   aliases=('--display_interval',), type=positive,
                   metavar='N', help='iterations between log entries '
                   '(default: 100)')
    cli.add_option(group, '--sample-interval',
                   aliases=('--sample_interval',), type=positive,
                   metavar='N', help='iterations between sample grids '
                   '(default: the snapshot interval)')
    return parser


def parse_args(argv=None):
    """Parses the command line; flags left out are None.

    ``--mn`` without names becomes ``['paper']``.
    """
    args = get_parser().parse_args(argv)
    if args.mn is not None and not args.mn:
        args.mn = ['paper']
    return args


def resolve_settings(args):
    """The settings of a run: the flags given, else :data:`DEFAULTS`.

    Returns:
        dict: The settings (written to ``args.json``).

    Raises:
        mn_chainer.cli.UsageError: For inconsistent flags.

    """
    settings = {key: getattr(args, key, None) for key in FLAGS
                if key != 'n_workers'}
    for key, value in DEFAULTS.items():
        if settings[key] is None:
            settings[key] = value
    if settings['sample_interval'] is None:
        settings['sample_interval'] = settings['snapshot_interval']
    settings['dump_mixtures'] = list(settings['dump_mixtures'] or [])
    if settings['dump_mixtures'] and not settings['mn']:
        raise cli.UsageError('--dump-mixtures {} needs --mn'.format(
            ','.join(settings['dump_mixtures'])))
    if settings['dump_interval'] is None and settings['dump_mixtures']:
        settings['dump_interval'] = settings['display_interval']
    settings.update(model='dcgan', resume=args.resume, out=args.out)
    return settings


def load_train_images(settings):
    """Training images (uint8, N x 3 x 32 x 32) of the run's dataset."""
    x_train = mn_chainer.datasets.load_arrays(
        settings['dataset'], settings['data'])[0]
    size = settings['train_subset']
    if size is not None and size > len(x_train):
        raise cli.UsageError('--train-subset {}: a subset of {} images '
                             'exceeds the {} training images of {}'.format(
                                 size, size, len(x_train),
                                 settings['data'] or settings['dataset']))
    idx = mn_chainer.datasets.subset_indices(
        len(x_train), size, [settings['seed'], 0])
    return x_train[idx]


def main(argv=None):
    """Trains the DCGAN; returns the LogReport log (list of dicts).

    Errors are raised; the command line reports them in one line (see
    :mod:`mn_chainer.cli`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings, recorded, changes, comm = runs.prepare(
        args, PROG, _RECORDED, FLAGS, RESUME_MAY_CHANGE,
        lambda args, recorded: resolve_settings(args), 'result/dcgan')
    rank = 0 if comm is None else comm.rank
    device = cli.worker_device(settings['device'], comm)
    if not rank == 0:
        sys.stdout = open(os.devnull, 'w')  # worker 0 prints

    if settings['mn']:
        cli.check_norm_layers(models.dcgan.Generator(
            n_hidden=settings['n_hidden'], ch=settings['ch']),
            settings['mn'], '--mn')
    numpy.random.seed(settings['seed'])
    mn_kwargs = {'n_components': settings['n_components'],
                 'em_iter': settings['em_iter'], 'relu': True,
                 'seed': settings['seed']}
    if comm is not None:
        mn_kwargs['comm'] = comm
    gen = models.dcgan.Generator(
        n_hidden=settings['n_hidden'], ch=settings['ch'],
        mn_layers=settings['mn'], mn_kwargs=mn_kwargs)
    dis = models.dcgan.Discriminator(ch=settings['ch'])
    gen.to_device(device)
    dis.to_device(device)
    mn_norms = [name for name, _ in
                mn_chainer.links.iter_mixture_normalizations(gen)] \
        if settings['mn'] else []
    dump_layers = cli.check_norm_layers(gen, settings['dump_mixtures'],
                                        '--dump-mixtures')
    runs.check_mixture_layers(dump_layers, mn_norms)

    x_train = load_train_images(settings)
    settings['n_train'] = len(x_train)
    if recorded is not None:
        runs.check_same_data(settings, recorded, ('n_train',))
    if comm is not None:
        import chainermn
        x_train = chainermn.scatter_dataset(x_train, comm, shuffle=True,
                                            seed=settings['seed'])
    cli.check_batchsize(settings['batchsize'], len(x_train),
                        settings['n_workers'])
    trainer = _build_trainer(settings, gen, dis, x_train, device, comm,
                             dump_layers)
    return runs.train(trainer, settings, recorded, changes, argv,
                      args.overwrite, comm, lambda moved: _print_header(
                          device, settings, comm, moved))


def _build_trainer(settings, gen, dis, x_train, device, comm, dump_layers):
    """Optimizers, iterator, updater, trainer and extensions."""
    def make_optimizer(model):
        optimizer = chainer.optimizers.Adam(alpha=settings['alpha'],
                                            beta1=settings['beta1'])
        if comm is not None:
            import chainermn
            optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
        optimizer.setup(model)
        return optimizer

    # One generator for z and the shuffling, the same on every worker (the
    # snapshot's iterator state, written by worker 0, is then every
    # worker's).
    rng = numpy.random.RandomState(settings['seed'])
    train_iter = chainer.iterators.SerialIterator(
        x_train, settings['batchsize'],
        order_sampler=chainer.iterators.ShuffleOrderSampler(rng))
    updater = GANUpdater(
        models=(gen, dis), iterator=train_iter,
        optimizer={'gen': make_optimizer(gen), 'dis': make_optimizer(dis)},
        device=device, rng=rng)
    trainer = training.Trainer(
        updater, (settings['iterations'], 'iteration'), out=settings['out'])
    snapshot_trigger = (settings['snapshot_interval'], 'iteration')
    trainer.extend(mn_chainer.extensions.RandomStates(
        {'rng': rng}, comm=comm, trigger=snapshot_trigger),
        name='random_states')
    trainer.extend(mn_chainer.extensions.RunRecord(settings))
    if comm is None or comm.rank == 0:
        _extend_rank0(trainer, settings, gen, x_train, device, dump_layers)
    return trainer


def _extend_rank0(trainer, settings, gen, x_train, device, dump_layers):
    """Reports, sample grids, FID and snapshots (rank 0 with ChainerMN)."""
    snapshot_interval = (settings['snapshot_interval'], 'iteration')
    display_interval = (settings['display_interval'], 'iteration')
    trainer.extend(extensions.snapshot_object(
        gen, 'gen_iter_{.updater.iteration}.npz'), trigger=snapshot_interval)

    report_keys = ['epoch', 'iteration', 'gen/loss', 'dis/loss']
    if settings['fid_interval'] > 0:
        fid = make_fid_extension(settings, gen, x_train, device)
        if fid is not None:
            trainer.extend(fid, trigger=(settings['fid_interval'],
                                         'iteration'))
            report_keys.append('FID')
    if settings['mn']:
        trainer.extend(runs.mixture_monitor(
            gen, settings, dump_layers,
            (settings['dump_interval'], 'iteration'),
            trigger=display_interval))
    trainer.extend(extensions.LogReport(trigger=display_interval))
    trainer.extend(extensions.PrintReport(report_keys + ['elapsed_time']),
                   trigger=display_interval)
    trainer.extend(extensions.ProgressBar(update_interval=10))
    trainer.extend(sample_grid(gen, 10, 10, settings['seed'],
                               settings['out']),
                   trigger=(settings['sample_interval'], 'iteration'))

    # Added last, so it runs after every other extension of its iteration
    # and saves their trigger states up to date (an extension still to run
    # would fire again after a resume).
    trainer.extend(mn_chainer.extensions.snapshot(
        'snapshot_iter_{.updater.iteration}'), trigger=snapshot_interval)


def make_fid_extension(settings, gen, x_train, device):
    """The FID extension, or None (with a warning) without weights."""
    if settings['inception_weights'] is None:
        warnings.warn(mn_chainer.fid.no_weights_message())
        return None
    inception = mn_chainer.fid.InceptionV3FID(
        weights=settings['inception_weights'])
    inception.to_device(device)
    stats = settings['fid_stats'] or os.path.join(
        settings['out'], 'fid_stats_{}_train.npz'.format(settings['dataset']))
    return FIDEvaluator(gen, inception, x_train, stats,
                        n_samples=settings['fid_samples'],
                        batchsize=settings['fid_batchsize'],
                        seed=settings['seed'])


def _print_header(device, settings, comm, moved):
    print('Device: {}{}'.format(device, '' if comm is None else
                                ' x {} workers'.format(comm.size)))
    print('# Minibatch-size: {}'.format(settings['batchsize']))
    print('# n_hidden: {}'.format(settings['n_hidden']))
    print('# iterations: {}'.format(settings['iterations']))
    print('# generator norms: {}'.format(
        'MN at {} (K={}, EM iter {})'.format(
            ', '.join(settings['mn']), settings['n_components'],
            settings['em_iter']) if settings['mn'] else 'BN'))
    print('# training images: {}'.format(settings['n_train']))
    for line in runs.describe_start(settings, moved, FLAGS) + ['']:
        print(line)


if __name__ == '__main__':
    cli.run(main, prog=PROG)
