"""CIFAR-10/100 for the paper's experiments (section 4).

The images come from Chainer's downloader
(:func:`chainer.datasets.get_cifar10` / :func:`~chainer.datasets.get_cifar100`)
or, on offline machines, from an ``.npz`` file holding the arrays
``x_train``, ``y_train``, ``x_test``, ``y_test`` (``uint8`` images in NHWC
layout, integer labels). A malformed file is an error, never a reason to
fall back to other data.

Preprocessing follows the paper: per-channel mean/std normalization (the
statistics of the training images actually used) and, for training, random
crops with 4-pixel zero padding and random horizontal flips (ChainerCV
transforms) in a :class:`chainer.datasets.TransformDataset`.
"""
import os
import random
import zipfile
import zlib

import numpy

import chainer
import chainercv.transforms


#: Number of classes of each dataset.
N_CLASSES = {'cifar10': 10, 'cifar100': 100}

#: Keys a ``--data`` file must hold.
NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')

_IMAGE_SHAPE = (32, 32, 3)


class SubsetSizeError(ValueError):

    """A subset larger than the split it is drawn from.

    Attributes:
        split (str): ``'train'`` or ``'test'``.
        size (int): The subset size asked for.
        available (int): The images of the split.

    """

    def __init__(self, split, size, available, source):
        super(SubsetSizeError, self).__init__(
            'a subset of {} images exceeds the {} {} images of {}'.format(
                size, available, {'train': 'training'}.get(split, split),
                source))
        self.split = split
        self.size = size
        self.available = available


def _check_dataset(dataset):
    if dataset not in N_CLASSES:
        raise ValueError('unknown dataset {!r}; valid datasets: {}'.format(
            dataset, ', '.join(sorted(N_CLASSES))))
    return N_CLASSES[dataset]


def _check_split(path, name, x, y, n_class):
    """Validates one split of a ``--data`` file and returns it as NCHW."""
    if x.dtype != numpy.uint8:
        raise ValueError('{}: x_{} must hold uint8 images, got dtype {}'
                         .format(path, name, x.dtype))
    if x.ndim != 4 or x.shape[1:] != _IMAGE_SHAPE:
        hint = ''
        if x.ndim == 4 and x.shape[1:] == (3, 32, 32):
            hint = ' (this looks like NCHW; store NHWC)'
        raise ValueError(
            '{}: x_{} must have shape (N, 32, 32, 3) (NHWC), got {}{}'.format(
                path, name, x.shape, hint))
    if len(x) == 0:
        raise ValueError('{}: x_{} holds no images'.format(path, name))
    if not numpy.issubdtype(y.dtype, numpy.integer):
        raise ValueError('{}: y_{} must hold integer labels, got dtype {}'
                         .format(path, name, y.dtype))
    if y.shape != (len(x),):
        raise ValueError(
            '{}: y_{} must have shape ({},) to match x_{}, got {}'.format(
                path, name, len(x), name, y.shape))
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= n_class:
        raise ValueError(
            '{}: y_{} labels must lie in [0, {}], got range [{}, {}]'.format(
                path, name, n_class - 1, low, high))
    return (numpy.ascontiguousarray(x.transpose(0, 3, 1, 2)),
            y.astype(numpy.int32))


def load_npz(path, dataset='cifar10'):
    """Loads and validates a CIFAR ``.npz`` file.

    Args:
        path (str): File with ``x_train`` (N, 32, 32, 3) ``uint8``,
            ``y_train`` (N,) integers, and the same for ``test``. Other keys
            are ignored.
        dataset (str): ``'cifar10'`` or ``'cifar100'``; sets the label range.

    Returns:
        tuple: ``(x_train, y_train, x_test, y_test)`` with images as
        ``uint8`` arrays of shape (N, 3, 32, 32) and ``int32`` labels.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not an npz archive, lacks a key, or holds
            arrays of the wrong shape, dtype or label range; the message
            names the file and the problem.

    """
    n_class = _check_dataset(dataset)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            'CIFAR data file {} does not exist'.format(path))
    try:
        archive = numpy.load(path, allow_pickle=False)
    except EOFError:
        raise ValueError('{} is empty, not an .npz file'.format(path))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError('{} is not a readable .npz file: {}'.format(path, e))
    if not isinstance(archive, numpy.lib.npyio.NpzFile):
        raise ValueError('{} is a single array, not an .npz archive with '
                         'keys {}'.format(path, ', '.join(NPZ_KEYS)))
    with archive:
        missing = [k for k in NPZ_KEYS if k not in archive.files]
        if missing:
            raise ValueError('{} lacks the key(s) {} (it has: {})'.format(
                path, ', '.join(missing), ', '.join(archive.files) or
                'nothing'))
        arrays = {}
        for key in NPZ_KEYS:
            try:
                arrays[key] = archive[key]
            except ValueError as e:  # object arrays need pickle
                raise ValueError('{} holds an unreadable array {}: {}'.format(
                    path, key, e))
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise ValueError('{} is truncated or corrupt: its array {} '
                                 'cannot be read ({}: {})'.format(
                                     path, key, type(e).__name__, e))
    x_train, y_train = _check_split(
        path, 'train', arrays['x_train'], arrays['y_train'], n_class)
    x_test, y_test = _check_split(
        path, 'test', arrays['x_test'], arrays['y_test'], n_class)
    return x_train, y_train, x_test, y_test


def _download(dataset):
    get = {'cifar10': chainer.datasets.get_cifar10,
           'cifar100': chainer.datasets.get_cifar100}[dataset]
    # scale=255 keeps the original integer pixel values exactly.
    splits = get(withlabel=True, ndim=3, scale=255.)
    arrays = []
    for split in splits:
        x, y = chainer.dataset.concat_examples(split)
        arrays.append(numpy.rint(x).astype(numpy.uint8))
        arrays.append(y.astype(numpy.int32))
    return tuple(arrays)


def load_arrays(dataset='cifar10', data=None):
    """Returns the CIFAR splits as arrays.

    Args:
        dataset (str): ``'cifar10'`` or ``'cifar100'``.
        data (str or None): An ``.npz`` file (see :func:`load_npz`); None
            uses Chainer's downloader (cached under ``$CHAINER_DATASET_ROOT``).

    Returns:
        tuple: ``(x_train, y_train, x_test, y_test)``, images ``uint8``
        (N, 3, 32, 32), labels ``int32``.

    """
    _check_dataset(dataset)
    if data is not None:
        return load_npz(data, dataset)
    return _download(dataset)


def subset_indices(n, size, seed):
    """Returns ``size`` distinct indices of ``range(n)`` drawn at random.

    The sample is seeded and random, never the first ``size`` (a split
    stored in class order would give a one-class subset). The indices are
    returned sorted.

    Args:
        n (int): Size of the split.
        size (int or None): Subset size; None (or ``n``) keeps everything.
        seed: Seed of :class:`numpy.random.RandomState`.

    """
    if size is None or size == n:
        return numpy.arange(n)
    if not 0 < size <= n:
        raise ValueError(
            'subset size must be in [1, {}] (the split size), got {}'.format(
                n, size))
    rng = numpy.random.RandomState(seed)
    return numpy.sort(rng.permutation(n)[:size])


def channel_stats(x):
    """Per-channel mean and standard deviation of images (N, C, H, W).

    Returns:
        tuple: ``(mean, std)``, each ``float32`` of shape (C, 1, 1).

    """
    x = numpy.asarray(x)
    n_channels = x.shape[1]
    mean = numpy.zeros(n_channels)
    sqmean = numpy.zeros(n_channels)
    # Accumulate in float64 per channel to bound memory on 50K images.
    for c in range(n_channels):
        xc = x[:, c].astype(numpy.float64)
        mean[c] = xc.mean()
        sqmean[c] = (xc * xc).mean()
    std = numpy.sqrt(numpy.maximum(sqmean - mean * mean, 0))
    std[std == 0] = 1
    shape = (n_channels, 1, 1)
    return (mean.reshape(shape).astype(numpy.float32),
            std.reshape(shape).astype(numpy.float32))


class CifarTransform(object):

    """Normalizes a CIFAR example and, for training, augments it.

    Called on ``(image, label)`` with a ``uint8`` CHW image, it returns
    ``((image - mean) / std, label)`` as ``float32``; with ``train=True`` the
    normalized image is zero-padded by ``pad`` pixels on each side, randomly
    cropped back to its size (:func:`chainercv.transforms.random_crop`) and
    randomly flipped horizontally
    (:func:`chainercv.transforms.random_flip`).

    The ChainerCV transforms draw from Python's :mod:`random`; seed it
    (:func:`seed_augmentation`) for reproducible augmentation. In a worker
    process of :class:`~chainer.iterators.MultiprocessIterator` (a forked
    copy sharing the parent's state) the transform reseeds :mod:`random`
    from the OS on its first call, so workers draw different crops. A
    transform sent to another process by pickling (ChainerMN's
    ``scatter_dataset``) belongs to its receiver, whose own seeding is kept.

    Args:
        mean (numpy.ndarray): Per-channel mean, shape (C, 1, 1).
        std (numpy.ndarray): Per-channel standard deviation, shape (C, 1, 1).
        train (bool): Apply the random crop and flip.
        pad (int): Zero padding of the random crop.

    """

    def __init__(self, mean, std, train=False, pad=4):
        self.mean = numpy.asarray(mean, dtype=numpy.float32)
        self.std = numpy.asarray(std, dtype=numpy.float32)
        self.train = train
        self.pad = pad
        self._pid = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state['_pid']
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __call__(self, in_data):
        img, label = in_data
        img = (img.astype(numpy.float32) - self.mean) / self.std
        if self.train:
            if os.getpid() != self._pid:
                random.seed()
                self._pid = os.getpid()
            size = img.shape[1:]
            p = self.pad
            img = numpy.pad(img, ((0, 0), (p, p), (p, p)), mode='constant')
            img = chainercv.transforms.random_crop(img, size)
            img = chainercv.transforms.random_flip(img, x_random=True)
            img = numpy.ascontiguousarray(img)
        return img, numpy.int32(label)


def augmentation_seed(seed, rank=0):
    """The seed of worker ``rank``'s augmentation in a run seeded ``seed``.

    Worker 0 (and a single-process run) uses ``seed`` itself; worker ``r``
    a seed drawn from ``(seed, r)`` by :class:`numpy.random.SeedSequence`,
    so that the workers of a data-parallel run crop and flip their shares
    independently and every run of the same command draws the same.
    """
    if rank == 0:
        return seed
    return int(numpy.random.SeedSequence([seed, rank]).generate_state(
        2, numpy.uint64)[0])


def seed_augmentation(seed, rank=0):
    """Seeds the generator of the augmentation (Python's :mod:`random`,
    which ChainerCV's transforms draw from) with
    :func:`augmentation_seed`."""
    random.seed(augmentation_seed(seed, rank))


def get_cifar(dataset='cifar10', data=None, train_subset=None,
              test_subset=None, seed=0):
    """Returns the preprocessed CIFAR training and test datasets.

    Args:
        dataset (str): ``'cifar10'`` or ``'cifar100'``.
        data (str or None): ``.npz`` file, or None for Chainer's download.
        train_subset (int or None): Use a seeded random subset of this many
            training images.
        test_subset (int or None): Likewise for the test split.
        seed (int): Seed of the subsets (training and test draws use
            independent streams).

    Returns:
        tuple: ``(train, test, info)``: two
        :class:`~chainer.datasets.TransformDataset` of ``(image, label)``
        (``float32`` (3, 32, 32), ``int32``), the first with augmentation,
        and a dict with ``n_train``, ``n_test``, ``n_class``, ``mean`` and
        ``std`` (lists) and ``source`` (the file or ``'chainer'``).

    Raises:
        SubsetSizeError: For a subset larger than its split.
        ValueError: For a malformed ``data`` file (see :func:`load_npz`).

    """
    n_class = _check_dataset(dataset)
    x_train, y_train, x_test, y_test = load_arrays(dataset, data)
    source = 'chainer' if data is None else data
    for split, size, x in (('train', train_subset, x_train),
                           ('test', test_subset, x_test)):
        if size is not None and size > len(x):
            raise SubsetSizeError(split, size, len(x), source)
    idx = subset_indices(len(x_train), train_subset, [seed, 0])
    x_train, y_train = x_train[idx], y_train[idx]
    idx = subset_indices(len(x_test), test_subset, [seed, 1])
    x_test, y_test = x_test[idx], y_test[idx]
    mean, std = channel_stats(x_train)
    train = chainer.datasets.TransformDataset(
        chainer.datasets.TupleDataset(x_train, y_train),
        CifarTransform(mean, std, train=True))
    test = chainer.datasets.TransformDataset(
        chainer.datasets.TupleDataset(x_test, y_test),
        CifarTransform(mean, std, train=False))
    info = {'n_train': len(x_train), 'n_test': len(x_test),
            'n_class': n_class, 'mean': mean.ravel().tolist(),
            'std': std.ravel().tolist(), 'source': source}
    return train, test, info
