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
unavailable and not logged.
"""
import argparse
import json
import os
import sys
import warnings

import numpy

import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions

import mn_chainer.datasets
import mn_chainer.fid
import models.dcgan


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
    ``rng``, whose state is saved with the trainer so a resumed run draws
    what an uninterrupted one would.

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

    def serialize(self, serializer):
        super(GANUpdater, self).serialize(serializer)
        name, keys, pos, has_gauss, cached = self.rng.get_state()
        keys = serializer('rng_keys', numpy.array(keys))
        extra = serializer('rng_state', numpy.array(
            [pos, has_gauss, cached], dtype=numpy.float64))
        if isinstance(serializer, chainer.serializer.Deserializer):
            self.rng.set_state((name, numpy.asarray(keys, numpy.uint32),
                                int(extra[0]), int(extra[1]),
                                float(extra[2])))


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


class FIDEvaluator(training.Extension):

    """Report ``FID`` of the generator's samples against real statistics.

    Samples are drawn in test mode. The real statistics are read from
    ``stats_path`` when it exists; otherwise they are computed from
    ``real_images`` at the first evaluation and cached there.

    Args:
        gen (chainer.Link): The generator.
        inception (mn_chainer.fid.InceptionV3FID): Pretrained extractor.
        real_images (numpy.ndarray): ``uint8`` images (N, 3, 32, 32), read
            only on a cache miss.
        stats_path (str): Cache of the real statistics (npz).
        n_samples (int): Generated samples per evaluation.
        batchsize (int): Batch size of generation and feature extraction.
        seed (int): Seed of the evaluation's ``z`` (the same every time).

    """

    trigger = 10000, 'iteration'
    priority = training.PRIORITY_WRITER

    def __init__(self, gen, inception, real_images, stats_path,
                 n_samples=50000, batchsize=100, seed=0):
        if not inception.pretrained:
            raise mn_chainer.fid.FIDUnavailableError(
                mn_chainer.fid.no_weights_message())
        self.gen = gen
        self.inception = inception
        self.real_images = real_images
        self.stats_path = stats_path
        self.n_samples = n_samples
        self.batchsize = batchsize
        self.seed = seed
        self._real = None

    def real_statistics(self):
        if self._real is None:
            images = self.real_images

            def batches():
                for x in mn_chainer.fid.iter_batches(images, self.batchsize):
                    yield x.astype(numpy.float32) / 127.5 - 1

            self._real = mn_chainer.fid.cached_statistics(
                self.inception, batches, self.stats_path,
                source='real training images')
        return self._real

    def _fake_batches(self):
        rng = numpy.random.RandomState(self.seed)
        done = 0
        while done < self.n_samples:
            n = min(self.batchsize, self.n_samples - done)
            z = self.gen.device.send(self.gen.make_hidden(n, rng))
            with chainer.using_config('train', False), \
                    chainer.no_backprop_mode():
                yield self.gen(z).array
            done += n

    def evaluate(self):
        mu_real, sigma_real = self.real_statistics()
        features = mn_chainer.fid.extract_features(
            self.inception, self._fake_batches())
        mu, sigma = mn_chainer.fid.compute_statistics(features)
        return mn_chainer.fid.frechet_distance(mu, sigma, mu_real, sigma_real)

    def __call__(self, trainer):
        chainer.report({'FID': self.evaluate()})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='DCGAN on CIFAR-10 with batch or mixture normalization '
        '(Kalayeh & Shah, section 4.5)')
    parser.add_argument('--batchsize', '-b', type=int, default=64,
                        help='Number of images in each mini-batch')
    parser.add_argument('--iterations', type=int, default=100000,
                        help='Number of generator updates')
    parser.add_argument('--device', '-d', type=str, default='-1',
                        help='Device specifier: -1 (CPU), a GPU id, or a '
                        'ChainerX/Chainer device string')
    parser.add_argument('--out', '-o', default='result/dcgan',
                        help='Output directory')
    parser.add_argument('--resume', '-r', default=None,
                        help='Resume from this trainer snapshot')
    parser.add_argument('--n_hidden', '-n', type=int, default=100,
                        help='Dimension of z')
    parser.add_argument('--ch', type=int, default=512,
                        help='Widest channel count of G and D')
    parser.add_argument('--communicator', default=None,
                        help='ChainerMN communicator (e.g. naive, '
                        'pure_nccl): data-parallel training under mpiexec, '
                        'MN fitted over the global batch')
    parser.add_argument('--seed', type=int, default=0,
                        help='Seed of z, shuffling, MN fits and the subset')
    parser.add_argument('--snapshot_interval', type=int, default=10000,
                        help='Iterations between trainer snapshots')
    parser.add_argument('--display_interval', type=int, default=100,
                        help='Iterations between log entries')
    parser.add_argument('--sample_interval', type=int, default=None,
                        help='Iterations between sample grids (default: '
                        'the snapshot interval)')
    parser.add_argument('--alpha', type=float, default=2e-4,
                        help='Adam alpha of both networks')
    parser.add_argument('--beta1', type=float, default=0.5,
                        help='Adam beta1 of both networks')

    group = parser.add_argument_group('mixture normalization')
    group.add_argument('--mn', nargs='*', default=None, metavar='LAYER',
                       help='Use MN in the generator; without names, at the '
                       'paper\'s layers (norm1 norm2 = "paper")')
    group.add_argument('--n_components', type=int, default=3,
                       help='Mixture components K')
    group.add_argument('--em_iter', type=int, default=2,
                       help='The paper\'s "EM iter." (K-means + EM)')

    group = parser.add_argument_group('data')
    group.add_argument('--dataset', default='cifar10',
                       choices=sorted(mn_chainer.datasets.N_CLASSES),
                       help='Dataset (training images only)')
    group.add_argument('--data', default=None, metavar='PATH.npz',
                       help='npz with x_train (N, 32, 32, 3) uint8 ... '
                       'instead of Chainer\'s download')
    group.add_argument('--train_subset', '--train-subset', type=int,
                       default=None,
                       help='Train on a seeded random subset of this size')

    group = parser.add_argument_group('FID')
    group.add_argument('--inception_weights', '--inception-weights',
                       default=None, metavar='PATH.npz',
                       help='FID Inception weights converted by '
                       'tools/convert_fid_inception.py')
    group.add_argument('--fid_stats', '--fid-stats', default=None,
                       metavar='PATH.npz',
                       help='Real-image FID statistics (read if present, '
                       'else computed and cached; default '
                       '<out>/fid_stats_<dataset>_train.npz)')
    group.add_argument('--fid_interval', '--fid-interval', type=int,
                       default=10000,
                       help='Iterations between FID evaluations (0: never)')
    group.add_argument('--fid_samples', '--fid-samples', type=int,
                       default=50000,
                       help='Generated samples per FID evaluation')
    group.add_argument('--fid_batchsize', '--fid-batchsize', type=int,
                       default=100,
                       help='Batch size of FID feature extraction')
    args = parser.parse_args(argv)
    if args.mn is not None and not args.mn:
        args.mn = ['paper']
    if args.sample_interval is None:
        args.sample_interval = args.snapshot_interval
    return args


def load_train_images(args):
    """Training images (uint8, N x 3 x 32 x 32) of ``--dataset``/``--data``."""
    x_train = mn_chainer.datasets.load_arrays(args.dataset, args.data)[0]
    idx = mn_chainer.datasets.subset_indices(
        len(x_train), args.train_subset, [args.seed, 0])
    return x_train[idx]


def main(argv=None):
    args = parse_args(argv)
    comm = None
    if args.communicator is not None:
        import chainermn
        comm = chainermn.create_communicator(args.communicator)
        if args.device not in ('-1', '@numpy'):
            args.device = '@cupy:{}'.format(comm.intra_rank)  # GPU per worker
    is_main = comm is None or comm.rank == 0
    device = chainer.get_device(args.device)
    device.use()
    if not is_main:
        sys.stdout = open(os.devnull, 'w')  # rank 0 prints

    print('Device: {}{}'.format(device, '' if comm is None else
                                ' x {} workers'.format(comm.size)))
    print('# Minibatch-size: {}'.format(args.batchsize))
    print('# n_hidden: {}'.format(args.n_hidden))
    print('# iterations: {}'.format(args.iterations))
    print('# generator norms: {}'.format(
        'MN at {} (K={}, EM iter {})'.format(
            ', '.join(args.mn), args.n_components, args.em_iter)
        if args.mn else 'BN'))
    print('')

    numpy.random.seed(args.seed)
    mn_kwargs = {'n_components': args.n_components,
                 'em_iter': args.em_iter, 'relu': True, 'seed': args.seed}
    if comm is not None:
        mn_kwargs['comm'] = comm
    gen = models.dcgan.Generator(n_hidden=args.n_hidden, ch=args.ch,
                                 mn_layers=args.mn, mn_kwargs=mn_kwargs)
    dis = models.dcgan.Discriminator(ch=args.ch)
    gen.to_device(device)
    dis.to_device(device)

    def make_optimizer(model):
        optimizer = chainer.optimizers.Adam(alpha=args.alpha,
                                            beta1=args.beta1)
        if comm is not None:
            optimizer = chainermn.create_multi_node_optimizer(optimizer, comm)
        optimizer.setup(model)
        return optimizer

    opt_gen = make_optimizer(gen)
    opt_dis = make_optimizer(dis)

    x_train = load_train_images(args)
    print('# training images: {}'.format(len(x_train)))

    n_train = len(x_train)
    if comm is not None:
        x_train = chainermn.scatter_dataset(x_train, comm, shuffle=True,
                                            seed=args.seed)
    rng = numpy.random.RandomState(args.seed)
    train_iter = chainer.iterators.SerialIterator(
        x_train, args.batchsize,
        order_sampler=chainer.iterators.ShuffleOrderSampler(rng))
    updater = GANUpdater(models=(gen, dis), iterator=train_iter,
                         optimizer={'gen': opt_gen, 'dis': opt_dis},
                         device=device, rng=rng)
    trainer = training.Trainer(updater, (args.iterations, 'iteration'),
                               out=args.out)
    if is_main:
        _extend_rank0(trainer, args, gen, x_train, device, n_train)
    if args.resume is not None:
        chainer.serializers.load_npz(args.resume, trainer)

    trainer.run()


def _extend_rank0(trainer, args, gen, x_train, device, n_train):
    """Reports, sample grids, FID and snapshots (rank 0 with ChainerMN)."""
    os.makedirs(args.out, exist_ok=True)
    settings = dict(vars(args), model='dcgan', n_train=n_train)
    with open(os.path.join(args.out, 'args.json'), 'w') as f:
        json.dump(settings, f, indent=2, sort_keys=True)

    snapshot_interval = (args.snapshot_interval, 'iteration')
    display_interval = (args.display_interval, 'iteration')
    trainer.extend(extensions.snapshot_object(
        gen, 'gen_iter_{.updater.iteration}.npz'), trigger=snapshot_interval)

    report_keys = ['epoch', 'iteration', 'gen/loss', 'dis/loss']
    if args.fid_interval > 0:
        fid = make_fid_extension(args, gen, x_train, device)
        if fid is not None:
            trainer.extend(fid, trigger=(args.fid_interval, 'iteration'))
            report_keys.append('FID')
    if args.mn:
        import mn_chainer.extensions
        trainer.extend(mn_chainer.extensions.MixtureMonitor(
            gen, trigger=display_interval))
    trainer.extend(extensions.LogReport(trigger=display_interval))
    trainer.extend(extensions.PrintReport(report_keys + ['elapsed_time']),
                   trigger=display_interval)
    trainer.extend(extensions.ProgressBar(update_interval=10))
    trainer.extend(sample_grid(gen, 10, 10, args.seed, args.out),
                   trigger=(args.sample_interval, 'iteration'))

    # Added last, so it runs after every other extension of its iteration
    # and saves their trigger states up to date (an extension still to run
    # would fire again after a resume). Snapshot writers save to a
    # temporary file in `out` and rename it, so a crash never leaves a
    # truncated snapshot.
    trainer.extend(
        extensions.snapshot(filename='snapshot_iter_{.updater.iteration}'),
        trigger=snapshot_interval)


def make_fid_extension(args, gen, x_train, device):
    """The FID extension, or None (with a warning) without weights."""
    if args.inception_weights is None:
        warnings.warn(mn_chainer.fid.no_weights_message())
        return None
    inception = mn_chainer.fid.InceptionV3FID(weights=args.inception_weights)
    inception.to_device(device)
    stats = args.fid_stats or os.path.join(
        args.out, 'fid_stats_{}_train.npz'.format(args.dataset))
    return FIDEvaluator(gen, inception, x_train, stats,
                        n_samples=args.fid_samples,
                        batchsize=args.fid_batchsize, seed=args.seed)


if __name__ == '__main__':
    main()
