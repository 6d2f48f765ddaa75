import random

import chainer
import numpy
import pytest

import mn_chainer.datasets as datasets


def _arrays(n_train=40, n_test=20, n_class=10, seed=0):
    rng = numpy.random.RandomState(seed)
    return dict(
        x_train=rng.randint(0, 256, (n_train, 32, 32, 3)).astype(
            numpy.uint8),
        y_train=numpy.arange(n_train) % n_class,
        x_test=rng.randint(0, 256, (n_test, 32, 32, 3)).astype(numpy.uint8),
        y_test=numpy.arange(n_test) % n_class,
    )


def _save(tmp_path, name='data.npz', **arrays):
    path = str(tmp_path / name)
    numpy.savez(path, **arrays)
    return path


def test_load_npz_converts_to_nchw(tmp_path):
    arrays = _arrays()
    path = _save(tmp_path, notes=numpy.asarray('extra keys are ignored'),
                 **arrays)
    x_train, y_train, x_test, y_test = datasets.load_npz(path)
    assert x_train.dtype == numpy.uint8 and x_train.shape == (40, 3, 32, 32)
    assert x_test.shape == (20, 3, 32, 32)
    numpy.testing.assert_array_equal(
        x_train, arrays['x_train'].transpose(0, 3, 1, 2))
    numpy.testing.assert_array_equal(
        x_test, arrays['x_test'].transpose(0, 3, 1, 2))
    assert y_train.dtype == numpy.int32
    numpy.testing.assert_array_equal(y_train, arrays['y_train'])


def test_missing_file(tmp_path):
    path = str(tmp_path / 'nope.npz')
    with pytest.raises(FileNotFoundError, match='nope.npz'):
        datasets.load_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / 'garbage.npz'
    path.write_bytes(b'this is not a zip archive')
    with pytest.raises(ValueError, match='garbage.npz'):
        datasets.load_npz(str(path))


def test_single_array_file(tmp_path):
    path = str(tmp_path / 'single.npy')
    numpy.save(path, numpy.zeros(3))
    with pytest.raises(ValueError, match='not an .npz archive'):
        datasets.load_npz(path)


@pytest.mark.parametrize('key', datasets.NPZ_KEYS)
def test_missing_key(tmp_path, key):
    arrays = _arrays()
    del arrays[key]
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r'data\.npz lacks the key\(s\) ' +
                       key):
        datasets.load_npz(path)


@pytest.mark.parametrize('split', ['train', 'test'])
def test_wrong_image_dtype(tmp_path, split):
    arrays = _arrays()
    arrays['x_' + split] = arrays['x_' + split].astype(numpy.float32)
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match='x_{} must hold uint8'.format(
            split)):
        datasets.load_npz(path)


def test_nchw_images_rejected(tmp_path):
    arrays = _arrays()
    arrays['x_train'] = numpy.ascontiguousarray(
        arrays['x_train'].transpose(0, 3, 1, 2))
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match='looks like NCHW'):
        datasets.load_npz(path)


def test_wrong_image_size(tmp_path):
    arrays = _arrays()
    arrays['x_test'] = arrays['x_test'][:, :28, :28]
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r'x_test must have shape'):
        datasets.load_npz(path)


def test_empty_split(tmp_path):
    arrays = _arrays()
    arrays['x_test'] = arrays['x_test'][:0]
    arrays['y_test'] = arrays['y_test'][:0]
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match='x_test holds no images'):
        datasets.load_npz(path)


def test_label_length_mismatch(tmp_path):
    arrays = _arrays()
    arrays['y_train'] = arrays['y_train'][:-1]
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r'y_train must have shape \(40,\)'):
        datasets.load_npz(path)


def test_label_dtype(tmp_path):
    arrays = _arrays()
    arrays['y_test'] = arrays['y_test'].astype(numpy.float32)
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match='y_test must hold integer labels'):
        datasets.load_npz(path)


@pytest.mark.parametrize('bad_label', [10, -1])
def test_labels_out_of_range(tmp_path, bad_label):
    arrays = _arrays()
    arrays['y_train'][7] = bad_label
    path = _save(tmp_path, **arrays)
    with pytest.raises(ValueError, match=r'y_train labels must lie in '
                       r'\[0, 9\]'):
        datasets.load_npz(path, 'cifar10')


def test_cifar100_label_range(tmp_path):
    arrays = _arrays(n_class=100, n_train=120)
    path = _save(tmp_path, **arrays)
    assert datasets.load_npz(path, 'cifar100')[1].max() == 99
    with pytest.raises(ValueError, match=r'\[0, 9\]'):
        datasets.load_npz(path, 'cifar10')


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match='cifar10, cifar100'):
        datasets.load_npz(_save(tmp_path, **_arrays()), 'mnist')


def test_subset_indices_random_seeded_not_first():
    idx = datasets.subset_indices(1000, 100, 3)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert (numpy.diff(idx) > 0).all()
    assert idx.max() > 100  # not the first N
    numpy.testing.assert_array_equal(idx,
                                     datasets.subset_indices(1000, 100, 3))
    assert not numpy.array_equal(idx, datasets.subset_indices(1000, 100, 4))
    # On a split stored in class order the subset still covers the classes.
    labels = numpy.repeat(numpy.arange(10), 100)
    assert len(set(labels[idx].tolist())) == 10
    numpy.testing.assert_array_equal(datasets.subset_indices(50, None, 0),
                                     numpy.arange(50))
    with pytest.raises(ValueError, match='1, 50'):
        datasets.subset_indices(50, 51, 0)


def test_channel_stats():
    x = numpy.random.RandomState(1).randint(0, 256, (30, 3, 8, 8)).astype(
        numpy.uint8)
    mean, std = datasets.channel_stats(x)
    assert mean.shape == (3, 1, 1) and std.shape == (3, 1, 1)
    ref = x.astype(numpy.float64)
    numpy.testing.assert_allclose(mean.ravel(), ref.mean(axis=(0, 2, 3)),
                                  rtol=1e-6)
    numpy.testing.assert_allclose(std.ravel(), ref.std(axis=(0, 2, 3)),
                                  rtol=1e-5)


def _normalized(img, mean, std):
    return (img.astype(numpy.float64) - mean) / std


def test_transform_test_mode_normalizes_only():
    rng = numpy.random.RandomState(0)
    img = rng.randint(0, 256, (3, 32, 32)).astype(numpy.uint8)
    mean = numpy.array([100., 110., 120.]).reshape(3, 1, 1)
    std = numpy.array([50., 60., 70.]).reshape(3, 1, 1)
    out, label = datasets.CifarTransform(mean, std, train=False)((img, 7))
    assert out.dtype == numpy.float32 and label == 7
    assert label.dtype == numpy.int32
    numpy.testing.assert_allclose(out, _normalized(img, mean, std),
                                  rtol=1e-6, atol=1e-6)


def _crop(img, dy, dx, flip):
    crop = img[:, dy:dy + 32, dx:dx + 32]
    return crop[:, :, ::-1] if flip else crop


def test_transform_train_mode_crops_and_flips():
    rng = numpy.random.RandomState(0)
    img = rng.randint(0, 256, (3, 32, 32)).astype(numpy.uint8)
    mean = numpy.full((3, 1, 1), 128.)
    std = numpy.full((3, 1, 1), 64.)
    padded = numpy.pad(_normalized(img, mean, std),
                       ((0, 0), (4, 4), (4, 4)), mode='constant')
    transform = datasets.CifarTransform(mean, std, train=True)
    random.seed(0)
    seen = set()
    for _ in range(60):
        out, _ = transform((img, 1))
        assert out.shape == (3, 32, 32) and out.dtype == numpy.float32
        matches = [(dy, dx, flip)
                   for dy in range(9) for dx in range(9)
                   for flip in (False, True)
                   if numpy.allclose(out, _crop(padded, dy, dx, flip),
                                     atol=1e-5)]
        assert matches, 'output is not a flipped/unflipped crop'
        seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(dy, dx) for dy, dx, _ in seen}) > 10


def test_get_cifar_subsets_and_stats(tmp_path):
    arrays = _arrays(n_train=200, n_test=100)
    path = _save(tmp_path, **arrays)
    train, test, info = datasets.get_cifar('cifar10', path, train_subset=50,
                                           test_subset=30, seed=5)
    assert (len(train), len(test)) == (50, 30)
    assert (info['n_train'], info['n_test'], info['n_class']) == (50, 30, 10)
    assert info['source'] == path
    idx = datasets.subset_indices(200, 50, [5, 0])
    chosen = arrays['x_train'][idx].transpose(0, 3, 1, 2).astype(
        numpy.float64)
    # Statistics of the training images actually used.
    numpy.testing.assert_allclose(info['mean'], chosen.mean(axis=(0, 2, 3)),
                                  rtol=1e-5)
    numpy.testing.assert_allclose(info['std'], chosen.std(axis=(0, 2, 3)),
                                  rtol=1e-5)
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == numpy.float32
    test_idx = datasets.subset_indices(100, 30, [5, 1])
    assert y == arrays['y_test'][test_idx[0]]
    mean = numpy.asarray(info['mean']).reshape(3, 1, 1)
    std = numpy.asarray(info['std']).reshape(3, 1, 1)
    numpy.testing.assert_allclose(
        x, _normalized(arrays['x_test'][test_idx[0]].transpose(2, 0, 1),
                       mean, std), rtol=1e-5, atol=1e-5)
    # Same seed, same subsets.
    train2, _, info2 = datasets.get_cifar('cifar10', path, 50, 30, seed=5)
    assert info2 == info


def test_download_path_uses_chainer_getter(monkeypatch):
    rng = numpy.random.RandomState(0)
    raw = rng.randint(0, 256, (6, 3, 32, 32)).astype(numpy.uint8)
    labels = numpy.arange(6) % 100
    calls = []

    def fake_get_cifar100(withlabel=True, ndim=3, scale=1., dtype=None):
        # Chainer's semantics: float32 CHW pixels scaled to [0, scale].
        calls.append((withlabel, ndim, scale))
        x = raw.astype(numpy.float32) * (scale / 255.)
        split = chainer.datasets.TupleDataset(x, labels.astype(numpy.int32))
        return split, split

    monkeypatch.setattr(chainer.datasets, 'get_cifar100', fake_get_cifar100)
    x_train, y_train, x_test, y_test = datasets.load_arrays('cifar100')
    assert calls == [(True, 3, 255.)]
    assert x_train.dtype == numpy.uint8
    numpy.testing.assert_array_equal(x_train, raw)
    numpy.testing.assert_array_equal(y_test, labels)


def test_empty_and_corrupt_files_name_the_file(tmp_path):
    empty = tmp_path / 'empty.npz'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='empty.npz is empty'):
        datasets.load_npz(str(empty))
    path = _save(tmp_path, **_arrays())
    with open(path, 'rb') as f:
        content = bytearray(f.read())
    # Flip bytes inside the first member: the zip directory still reads,
    # the member's CRC does not match.
    content[200:204] = bytes(255 - b for b in content[200:204])
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r'corrupt.npz is truncated or '
                       r'corrupt: its array x_train cannot be read'):
        datasets.load_npz(str(corrupt))
    torn = tmp_path / 'torn.npz'
    torn.write_bytes(bytes(content[:len(content) // 2]))
    with pytest.raises(ValueError, match='torn.npz'):
        datasets.load_npz(str(torn))


@pytest.mark.parametrize('train_subset,test_subset,split,message', [
    (41, None, 'train', 'a subset of 41 images exceeds the 40 training '
     'images of'),
    (None, 21, 'test', 'a subset of 21 images exceeds the 20 test images'),
])
def test_subset_larger_than_the_split(tmp_path, train_subset, test_subset,
                                      split, message):
    path = _save(tmp_path, **_arrays())
    with pytest.raises(datasets.SubsetSizeError, match=message) as info:
        datasets.get_cifar('cifar10', path, train_subset, test_subset)
    assert info.value.split == split
    assert isinstance(info.value, ValueError)


def test_augmentation_seed_per_worker():
    assert datasets.augmentation_seed(7) == datasets.augmentation_seed(7, 0)
    assert datasets.augmentation_seed(7) == 7
    seeds = {datasets.augmentation_seed(s, r) for s in (0, 1, 7)
             for r in range(4)}
    assert len(seeds) == 12
    assert datasets.augmentation_seed(7, 1) == datasets.augmentation_seed(
        7, 1)
    datasets.seed_augmentation(7, 2)
    first = random.random()
    random.seed(datasets.augmentation_seed(7, 2))
    assert random.random() == first


def test_transform_sent_to_another_process_keeps_its_seeding():
    """ChainerMN's scatter_dataset pickles the dataset to the other
    workers: the copy must draw from the receiver's seeded generator, not
    reseed from the OS as a forked iterator worker does."""
    import pickle
    rng = numpy.random.RandomState(0)
    img = rng.randint(0, 256, (3, 32, 32)).astype(numpy.uint8)
    transform = datasets.CifarTransform(numpy.zeros((3, 1, 1)),
                                        numpy.ones((3, 1, 1)), train=True)
    transform._pid = -1  # as if it came from another process
    copy = pickle.loads(pickle.dumps(transform))
    outputs = []
    for t in (copy, copy):
        random.seed(3)
        outputs.append([t((img, 0))[0] for _ in range(5)])
    for a, b in zip(*outputs):
        numpy.testing.assert_array_equal(a, b)
    # The original (a forked copy of another process) reseeds itself.
    random.seed(3)
    forked = [transform((img, 0))[0] for _ in range(5)]
    assert any(not numpy.array_equal(a, b)
               for a, b in zip(forked, outputs[0]))
