"""Tests of models/dcgan.py and train_dcgan.py (DCGAN of the paper's 4.5)."""
import copy
import json
import os
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F

import mn_chainer.extensions
import mn_chainer.fid
import models.dcgan
import train_dcgan


def _mn_links():
    return pytest.importorskip('mn_chainer.links')


def test_generator_and_discriminator_shapes():
    for ch in (512, 64):
        gen = models.dcgan.Generator(n_hidden=100, ch=ch)
        dis = models.dcgan.Discriminator(ch=ch)
        z = gen.make_hidden(3, numpy.random.RandomState(0))
        assert z.shape == (3, 100) and z.dtype == numpy.float32
        assert z.min() >= -1 and z.max() <= 1
        with chainer.using_config('train', False):
            x = gen(z)
            y = dis(x)
        assert x.shape == (3, 3, 32, 32)
        assert x.dtype == numpy.float32
        assert numpy.abs(x.array).max() <= 1
        assert y.shape == (3, 1)
    assert gen.dc1(numpy.zeros((1, 64, 4, 4), numpy.float32)).shape == (
        1, 32, 8, 8)


def test_norm_protocol():
    gen = models.dcgan.Generator(ch=64)
    links = dict(gen.namedlinks(skipself=True))
    assert list(gen.norm_links()) == ['norm0', 'norm1', 'norm2', 'norm3']
    for name, path in gen.norm_links().items():
        assert isinstance(links[path], chainer.links.BatchNormalization)
    # The norms after the first two deconvolutions.
    assert gen.expand_norm_layer('paper') == ['norm1', 'norm2']
    assert links[gen.norm_links()['norm1']].avg_mean.shape == (32,)
    assert links[gen.norm_links()['norm2']].avg_mean.shape == (16,)
    assert gen.expand_norm_layer('norm3') == ['norm3']
    with pytest.raises(ValueError, match='paper'):
        gen.expand_norm_layer('conv3')
    dis = models.dcgan.Discriminator(ch=64)
    assert list(dis.norm_links()) == ['norm1', 'norm2', 'norm3']


def test_mn_generator_replaces_the_paper_layers():
    mn_links = _mn_links()
    gen = models.dcgan.Generator(ch=64, mn_layers=['paper'])
    replaced = {name: link for name, link in
                mn_links.iter_mixture_normalizations(gen)}
    assert sorted(replaced) == ['norm1', 'norm2']
    for link in replaced.values():
        assert link.n_components == 3 and link.relu
    assert isinstance(gen.norm0, chainer.links.BatchNormalization)
    assert isinstance(gen.norm3, chainer.links.BatchNormalization)
    gen = models.dcgan.Generator(ch=64, mn_layers=['norm2'],
                                 mn_kwargs={'n_components': 2})
    assert gen.norm2.n_components == 2 and gen.norm2.relu
    assert isinstance(gen.norm1, chainer.links.BatchNormalization)


def _softplus(x):
    return numpy.logaddexp(0, x)


def _grads(model, loss):
    model.cleargrads()
    loss.backward()
    return {p: v.grad.copy() for p, v in model.namedparams()}


@pytest.mark.parametrize('mn', [False, True])
def test_one_updater_step(mn):
    """One step reports the non-saturating losses and moves both networks
    along their own loss gradients (Adam's first step is about
    ``-alpha * sign(grad)``)."""
    if mn:
        _mn_links()
    gen = models.dcgan.Generator(
        ch=32, mn_layers=['paper'] if mn else None, mn_kwargs={'seed': 3})
    dis = models.dcgan.Discriminator(ch=32)
    rng = numpy.random.RandomState(0)
    data = rng.randint(0, 256, (8, 3, 32, 32)).astype(numpy.uint8)

    # Independent reference on copies, before the update: the
    # discriminator's loss and gradient.
    gen_ref, dis_ref = copy.deepcopy(gen), copy.deepcopy(dis)
    x_real = data.astype(numpy.float32) / 127.5 - 1
    z = gen.make_hidden(8, numpy.random.RandomState(1))
    x_fake = gen_ref(z)
    y_real = dis_ref(x_real)
    y_fake = dis_ref(x_fake.array)
    expected_dis = (_softplus(-y_real.array).mean()
                    + _softplus(y_fake.array).mean())
    dis_grads = _grads(dis_ref, F.mean(F.softplus(-y_real))
                       + F.mean(F.softplus(y_fake)))

    opts = {}
    for name, model in (('gen', gen), ('dis', dis)):
        opts[name] = chainer.optimizers.Adam(alpha=2e-4, beta1=0.5)
        opts[name].setup(model)
    before = {name: {p: v.array.copy() for p, v in model.namedparams()}
              for name, model in (('gen', gen), ('dis', dis))}
    iterator = chainer.iterators.SerialIterator(data, 8, shuffle=False)
    updater = train_dcgan.GANUpdater(
        models=(gen, dis), iterator=iterator, optimizer=opts,
        rng=numpy.random.RandomState(1))
    reporter = chainer.Reporter()
    reporter.add_observer('gen', gen)
    reporter.add_observer('dis', dis)
    observation = {}
    with reporter.scope(observation):
        updater.update()
    # The generator's step is against the updated discriminator.
    y_fake = copy.deepcopy(dis)(x_fake)
    expected_gen = _softplus(-y_fake.array).mean()
    gen_grads = _grads(gen_ref, F.mean(F.softplus(-y_fake)))
    assert float(observation['dis/loss'].array) == pytest.approx(
        expected_dis, rel=1e-5)
    assert float(observation['gen/loss'].array) == pytest.approx(
        expected_gen, rel=1e-5)

    for name, model, grads in (('gen', gen, gen_grads),
                               ('dis', dis, dis_grads)):
        n_checked = 0
        for path, param in model.namedparams():
            g = grads[path]
            delta = param.array - before[name][path]
            big = numpy.abs(g) > 1e-4 * numpy.abs(g).max()
            numpy.testing.assert_array_equal(
                numpy.sign(delta[big]), -numpy.sign(g[big]),
                err_msg='{} {}'.format(name, path))
            n_checked += big.sum()
        assert n_checked > 0.5 * sum(p.size for p in model.params())

    if mn:
        for name, link in _mn_links().iter_mixture_normalizations(gen):
            assert 1 <= link.effective_k <= 3
        # Test mode uses the queued mixtures.
        with chainer.using_config('train', False):
            x = gen(z)
        assert numpy.isfinite(x.array).all()


def _write_npz(path, n=20, seed=0):
    rng = numpy.random.RandomState(seed)
    numpy.savez(path,
                x_train=rng.randint(0, 256, (n, 32, 32, 3)).astype(
                    numpy.uint8),
                y_train=rng.randint(0, 10, n),
                x_test=rng.randint(0, 256, (4, 32, 32, 3)).astype(
                    numpy.uint8),
                y_test=rng.randint(0, 10, 4))
    return path


def _run(tmp_path, name, extra):
    out = str(tmp_path / name)
    argv = ['--data', str(tmp_path / 'data.npz'), '-b', '8', '--ch', '32',
            '--iterations', '4', '--snapshot_interval', '2',
            '--display_interval', '1', '--seed', '5', '-o', out] + extra
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train_dcgan.main(argv)
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    return out, log, [str(w.message) for w in caught]


def _strip(log):
    return [{k: v for k, v in entry.items() if k != 'elapsed_time'}
            for entry in log]


@pytest.mark.parametrize('mn', [False, True])
def test_resume_continues_the_same_run(tmp_path, mn):
    """20 images, batch 8: the run crosses epochs (reshuffles) and a resumed
    run logs exactly what the uninterrupted one did."""
    if mn:
        _mn_links()
    _write_npz(str(tmp_path / 'data.npz'))
    extra = ['--mn'] if mn else []
    out, log, messages = _run(tmp_path, 'full', extra + ['--fid_interval',
                                                         '2'])
    assert [e['iteration'] for e in log] == [1, 2, 3, 4]
    assert log[-1]['epoch'] == 1
    assert all(numpy.isfinite(e['gen/loss']) and numpy.isfinite(e['dis/loss'])
               for e in log)
    # No weights: FID is unavailable, said once, and never logged.
    assert sum('FID is unavailable' in m for m in messages) == 1
    assert not any('FID' in e for e in log)
    if mn:
        assert log[-1]['mn/norm1/effective_k'] >= 1
    # Sample grids (10 x 10 images of 32 x 32) at each snapshot.
    import PIL.Image
    with PIL.Image.open(os.path.join(out, 'preview',
                                     'image_iter_00000002.png')) as grid:
        assert grid.size == (320, 320) and grid.mode == 'RGB'
    with open(os.path.join(out, 'args.json')) as f:
        args = json.load(f)
    assert args['n_train'] == 20 and args['mn'] == (['paper'] if mn else None)

    snapshot = os.path.join(out, 'snapshot_iter_2')
    out2, log2, _ = _run(tmp_path, 'resumed', extra + ['-r', snapshot])
    assert _strip(log2) == _strip(log)
    # Every extension fires where it would have (a trigger state saved
    # before its extension ran would fire again at iteration 3).
    assert set(os.listdir(out2)) == set(os.listdir(out)) - {
        'gen_iter_2.npz', 'snapshot_iter_2'}
    assert os.listdir(os.path.join(out2, 'preview')) == [
        'image_iter_00000004.png']


def test_fid_extension_logs_fid(tmp_path, monkeypatch):
    """FID in the log when weights are given. Pipeline only: the 'weights'
    are a random network's, and a 75x75 input keeps it fast."""
    _write_npz(str(tmp_path / 'data.npz'), n=8)
    weights = str(tmp_path / 'inception.npz')
    chainer.serializers.save_npz(
        weights, mn_chainer.fid.InceptionV3FID(size=75), compression=False)
    monkeypatch.setattr(mn_chainer.fid, 'INCEPTION_SIZE', 75)
    # The matrix square root of a 2048 x 2048 matrix takes ~10 s on this
    # CPU; the distance has its own tests (test_fid.py), here only its
    # plumbing matters: a cheap stand-in (the distance without the
    # cross term) records what it was given.
    distances = []

    def fast_distance(mu1, sigma1, mu2, sigma2):
        assert mu1.shape == mu2.shape == (2048,)
        assert sigma1.shape == sigma2.shape == (2048, 2048)
        diff = mu1 - mu2
        distances.append(diff.dot(diff) + numpy.trace(sigma1 + sigma2))
        return distances[-1]

    monkeypatch.setattr(mn_chainer.fid, 'frechet_distance', fast_distance)
    stats = str(tmp_path / 'real_stats.npz')
    out, log, _ = _run(tmp_path, 'fid', [
        '--iterations', '2', '--inception-weights', weights,
        '--fid-stats', stats, '--fid_interval', '1', '--fid_samples', '6',
        '--fid_batchsize', '4'])
    values = [e['FID'] for e in log]
    assert values == pytest.approx(distances) and len(values) == 2
    assert all(numpy.isfinite(v) and v > 0 for v in values)
    assert values[0] != values[1]  # the generator moved
    mu, sigma, meta = mn_chainer.fid.load_statistics(stats)
    assert mu.shape == (2048,) and int(meta['n_samples']) == 8


def test_fid_evaluator_refuses_random_weights():
    gen = models.dcgan.Generator(ch=32)
    with pytest.raises(mn_chainer.fid.FIDUnavailableError):
        mn_chainer.extensions.FIDEvaluator(
            gen, mn_chainer.fid.InceptionV3FID(size=75),
            numpy.zeros((2, 3, 32, 32), numpy.uint8), 'unused.npz')


def test_uint8_grid_layout():
    images = numpy.zeros((6, 3, 2, 2), numpy.float32) - 1
    images[4, 0] = 1  # red image at row 1, column 1 of a 2 x 3 grid
    grid = train_dcgan.to_uint8_grid(images, 2, 3)
    assert grid.shape == (4, 6, 3)
    expected = numpy.zeros((4, 6, 3), numpy.uint8)
    expected[2:4, 2:4, 0] = 255
    numpy.testing.assert_array_equal(grid, expected)
