import collections
import json
import os

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training
from chainer.training import extensions

from mn_chainer import extensions as mn_extensions


_Mixture = collections.namedtuple('_Mixture', 'weights means variances')

N_COMPONENTS = 3
CHANNELS = 4


class _FakeMN(chainer.Link):

    """Stands for an MN link: its mixture after call ``n`` is known."""

    def __init__(self):
        super(_FakeMN, self).__init__()
        self.n_components = N_COMPONENTS
        self.effective_k = 0
        self.last_mixture = None
        self.calls = 0

    def forward(self, x):
        if chainer.config.train:
            self.calls += 1
            self.effective_k, self.last_mixture = _fake_state(self.calls)
        return x


def _fake_state(n):
    """Mixture of the fake link after its n-th training call."""
    k = 1 + n % 3
    weights = numpy.arange(1, k + 1, dtype=numpy.float32)
    weights /= weights.sum()
    means = numpy.full((k, CHANNELS), n, dtype=numpy.float32)
    variances = numpy.full((k, CHANNELS), n + 1, dtype=numpy.float32)
    return k, _Mixture(weights, means, variances)


class _FakeNet(chainer.Chain):

    def __init__(self):
        super(_FakeNet, self).__init__()
        with self.init_scope():
            self.fc = L.Linear(CHANNELS, 2)
            self.norm = _FakeMN()

    def forward(self, x, t):
        loss = F.softmax_cross_entropy(self.fc(self.norm(x)), t)
        chainer.report({'loss': loss}, self)
        return loss


def _dataset(n=8):
    rng = numpy.random.RandomState(0)
    x = rng.randn(n, CHANNELS).astype(numpy.float32)
    t = (numpy.arange(n) % 2).astype(numpy.int32)
    return chainer.datasets.TupleDataset(x, t)


def _trainer(model, out, n_epoch, batchsize=4, n=8):
    it = chainer.iterators.SerialIterator(
        _dataset(n), batchsize, shuffle=False)
    opt = chainer.optimizers.SGD(lr=0.01)
    opt.setup(model)
    updater = training.updaters.StandardUpdater(it, opt)
    return training.Trainer(updater, (n_epoch, 'epoch'), out=str(out))


def _read_log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return json.load(f)


def test_fake_chain_reports_and_dumps(tmp_path, monkeypatch):
    model = _FakeNet()
    monitor = mn_extensions.MixtureMonitor(
        model, dump_fractions=(0.2, 0.4, 1.0))
    # The fake link is not a real MixtureNormalization: give the monitor
    # its list directly instead of mn_chainer.links' lookup.
    monkeypatch.setattr(monitor, '_links', lambda: [('conv3', model.norm)])
    trainer = _trainer(model, tmp_path, n_epoch=5)
    trainer.extend(monitor)
    trainer.extend(extensions.LogReport())
    trainer.run()

    log = _read_log(tmp_path)
    assert len(log) == 5
    for entry in log:
        # 8 samples, batch 4: epoch e ends with training call n = 2 e.
        n = 2 * entry['epoch']
        k = 1 + n % 3
        assert entry['mn/conv3/effective_k'] == float(k)
        w = numpy.arange(1, k + 1, dtype=numpy.float32)
        w = numpy.sort(w / w.sum())[::-1]
        expected = numpy.zeros(N_COMPONENTS)
        expected[:k] = w
        got = [entry['mn/conv3/weight_{}'.format(i)]
               for i in range(N_COMPONENTS)]
        numpy.testing.assert_allclose(got, expected, rtol=1e-6)
        assert 'mn/conv3/weight_{}'.format(N_COMPONENTS) not in entry
    # Hand-checked values: epoch 3 -> n = 6 -> K_eff = 1, one weight 1.
    assert log[2]['mn/conv3/effective_k'] == 1.0
    assert log[2]['mn/conv3/weight_0'] == pytest.approx(1.0)
    assert log[2]['mn/conv3/weight_1'] == 0.0

    with numpy.load(str(tmp_path / 'mixtures.npz')) as npz:
        numpy.testing.assert_allclose(npz['fractions'], [0.2, 0.4, 1.0])
        for fraction, n in (('0.2', 2), ('0.4', 4), ('1', 10)):
            k = 1 + n % 3
            assert npz['conv3/{}/means'.format(fraction)].shape == (
                k, CHANNELS)
            numpy.testing.assert_array_equal(
                npz['conv3/{}/means'.format(fraction)], n)
            numpy.testing.assert_array_equal(
                npz['conv3/{}/variances'.format(fraction)], n + 1)
            assert int(npz['conv3/{}/iteration'.format(fraction)]) == n
            assert float(npz['conv3/{}/epoch'.format(fraction)]) == n / 2
        assert 'conv3/0.6/means' not in npz.files


def test_iteration_trigger_and_total(tmp_path, monkeypatch):
    model = _FakeNet()
    monitor = mn_extensions.MixtureMonitor(
        model, trigger=(3, 'iteration'), dump_fractions=[0.5],
        dump_path='sub/mix.npz', total=(4, 'iteration'))
    monkeypatch.setattr(monitor, '_links', lambda: [('a/b', model.norm)])
    trainer = _trainer(model, tmp_path, n_epoch=3)
    trainer.extend(monitor)
    trainer.extend(extensions.LogReport(trigger=(3, 'iteration')))
    trainer.run()
    log = _read_log(tmp_path)
    assert [e['iteration'] for e in log] == [3, 6]
    assert [e['mn/a/b/effective_k'] for e in log] == [1.0, 1.0]
    with numpy.load(str(tmp_path / 'sub' / 'mix.npz')) as npz:
        # 0.5 of 4 iterations: dumped after iteration 2.
        assert int(npz['a/b/0.5/iteration']) == 2
        numpy.testing.assert_array_equal(npz['a/b/0.5/means'], 2)


def test_before_training_reports_zero(monkeypatch):
    model = _FakeNet()
    monitor = mn_extensions.MixtureMonitor(model)
    monkeypatch.setattr(monitor, '_links', lambda: [('x', model.norm)])
    assert monitor.observe() == {
        'mn/x/effective_k': 0.0, 'mn/x/weight_0': 0.0,
        'mn/x/weight_1': 0.0, 'mn/x/weight_2': 0.0}


def test_invalid_arguments():
    with pytest.raises(ValueError):
        mn_extensions.MixtureMonitor(None, dump_fractions=[0.0])
    with pytest.raises(ValueError):
        mn_extensions.MixtureMonitor(None, dump_fractions=[1.5])
    with pytest.raises(ValueError):
        mn_extensions.MixtureMonitor(None, total=(10, 'minute'))


def _real_links():
    return pytest.importorskip('mn_chainer.links')


def test_real_mixture_normalization(tmp_path):
    mn_links = _real_links()
    if not hasattr(mn_links, 'MixtureNormalization'):
        pytest.skip('mn_chainer.links.MixtureNormalization not written yet')

    class Net(chainer.Chain):

        def __init__(self):
            super(Net, self).__init__()
            with self.init_scope():
                self.conv = L.Convolution2D(3, CHANNELS, 3, pad=1)
                self.bn = mn_links.MixtureNormalization(
                    CHANNELS, n_components=3, seed=0)
                self.fc = L.Linear(CHANNELS, 2)

        def forward(self, x, t):
            h = F.relu(self.bn(self.conv(x)))
            h = F.average(h, axis=(2, 3))
            loss = F.softmax_cross_entropy(self.fc(h), t)
            chainer.report({'loss': loss}, self)
            return loss

    rng = numpy.random.RandomState(1)
    x = rng.randn(8, 3, 6, 6).astype(numpy.float32)
    t = (numpy.arange(8) % 2).astype(numpy.int32)
    model = Net()
    it = chainer.iterators.SerialIterator(
        chainer.datasets.TupleDataset(x, t), 8, shuffle=False)
    opt = chainer.optimizers.SGD(lr=0.01)
    opt.setup(model)
    updater = training.updaters.StandardUpdater(it, opt)
    trainer = training.Trainer(updater, (1, 'iteration'), out=str(tmp_path))
    monitor = mn_extensions.MixtureMonitor(
        model, trigger=(1, 'iteration'), dump_fractions=[1.0])
    trainer.extend(monitor)
    trainer.extend(extensions.LogReport(trigger=(1, 'iteration')))
    trainer.run()

    names = [name for name, _ in mn_links.iter_mixture_normalizations(model)]
    assert len(names) == 1
    name = names[0]
    link = model.bn
    (entry,) = _read_log(tmp_path)
    k_eff = link.effective_k
    assert 1 <= k_eff <= 3
    assert entry['mn/{}/effective_k'.format(name)] == float(k_eff)
    weights = [entry['mn/{}/weight_{}'.format(name, k)] for k in range(3)]
    expected = numpy.zeros(3)
    expected[:k_eff] = numpy.sort(
        chainer.backend.CpuDevice().send(link.last_mixture.weights))[::-1]
    numpy.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)
    with numpy.load(str(tmp_path / 'mixtures.npz')) as npz:
        means = npz['{}/1/means'.format(name)]
        assert means.shape == (k_eff, CHANNELS)
        numpy.testing.assert_allclose(
            means, chainer.backend.CpuDevice().send(link.last_mixture.means))
        assert npz['{}/1/variances'.format(name)].shape == (k_eff, CHANNELS)
        assert npz['{}/1/weights'.format(name)].shape == (k_eff,)


# --- resumable state ---------------------------------------------------------

class _FakeComm(object):

    """A communicator of ``size`` workers seen from ``rank``: gathering
    returns this worker's object and the given ones of the others."""

    def __init__(self, rank, size, others=()):
        self.rank, self.size, self._others = rank, size, list(others)

    def gather_obj(self, obj):
        return [obj] + self._others if self.rank == 0 else None


def _streams(seed):
    """States of Python's random, NumPy's and an own generator."""
    import random
    return (random.Random(seed).getstate(),
            numpy.random.RandomState(seed).get_state(),
            [numpy.random.RandomState(seed + 1).get_state()])


def _draws(rng):
    import random
    return (random.random(), numpy.random.rand(), rng.rand())


def test_random_states_round_trip(tmp_path):
    import random
    rng = numpy.random.RandomState(0)
    ext = mn_extensions.RandomStates({'order': rng})
    random.seed(1)
    numpy.random.seed(2)
    _draws(rng)
    path = str(tmp_path / 'states.npz')
    chainer.serializers.save_npz(path, ext)
    expected = [_draws(rng) for _ in range(3)]
    random.seed(5)
    numpy.random.seed(5)
    rng.seed(5)
    chainer.serializers.load_npz(path, ext)
    assert [_draws(rng) for _ in range(3)] == expected


def test_random_states_of_every_worker(tmp_path):
    """Worker 0 saves the states gathered from the others; each worker
    loads its own."""
    import random
    rng = numpy.random.RandomState(0)
    worker1 = _streams(11)
    saver = mn_extensions.RandomStates(
        {'order': rng}, comm=_FakeComm(0, 2, [worker1]))
    path = str(tmp_path / 'states.npz')
    with pytest.raises(RuntimeError, match='snapshot\'s trigger'):
        chainer.serializers.save_npz(path, saver)
    saver(None)
    chainer.serializers.save_npz(path, saver)
    rng1 = numpy.random.RandomState(99)
    loader = mn_extensions.RandomStates({'order': rng1},
                                        comm=_FakeComm(1, 2))
    chainer.serializers.load_npz(path, loader)
    assert random.getstate() == worker1[0]
    expected_numpy = numpy.random.RandomState(11)
    assert numpy.random.rand() == expected_numpy.rand()
    assert rng1.rand() == numpy.random.RandomState(12).rand()
    third = mn_extensions.RandomStates({'order': rng1},
                                       comm=_FakeComm(2, 3))
    with pytest.raises(KeyError):
        chainer.serializers.load_npz(path, third)


def test_run_record(tmp_path):
    model = _FakeNet()
    trainer = _trainer(model, tmp_path, n_epoch=1)
    settings = {'lr': 0.01, 'mn_layers': ['conv3'], 'note': 'é'}
    trainer.extend(mn_extensions.RunRecord(settings))
    trainer.run()
    path = str(tmp_path / 'snapshot')
    chainer.serializers.save_npz(path, trainer)
    assert mn_extensions.RunRecord.read(path) == settings
    other = _trainer(_FakeNet(), tmp_path, n_epoch=1)
    other.run()
    chainer.serializers.save_npz(str(tmp_path / 'plain'), other)
    assert mn_extensions.RunRecord.read(str(tmp_path / 'plain')) is None
    (tmp_path / 'bad').write_bytes(b'PK\x03\x04 torn')
    with pytest.raises(ValueError, match='bad is not a readable trainer '
                       'snapshot'):
        mn_extensions.RunRecord.read(str(tmp_path / 'bad'))


def _plotting_trainer(out, n_epoch, plot_class):
    numpy.random.seed(0)  # the same initial weights
    model = _FakeNet()
    trainer = _trainer(model, out, n_epoch=n_epoch, n=12)
    trainer.extend(plot_class(['main/loss'], 'epoch', file_name='loss.png'))
    trainer.extend(extensions.snapshot(filename='snapshot_epoch_{'
                                       '.updater.epoch}'))
    return trainer


@pytest.mark.skipif(not extensions.PlotReport.available(),
                    reason='matplotlib is not available')
def test_plot_report_resumes_exactly(tmp_path):
    """12 samples, batch 4: 3 updates per epoch. Chainer's own PlotReport
    gets an extra point after a resume; the package's does not."""
    import matplotlib
    matplotlib.use('Agg')
    full = _plotting_trainer(tmp_path / 'full', 2,
                             mn_extensions.PlotReport)
    full.run()
    points = full.get_extension('PlotReport')._data['main/loss']
    assert [x for x, _ in points] == [1, 2]
    for plot_class, fine in ((mn_extensions.PlotReport, True),
                             (extensions.PlotReport, False)):
        out = tmp_path / plot_class.__module__
        _plotting_trainer(out, 1, plot_class).run()
        resumed = _plotting_trainer(out, 2, plot_class)
        chainer.serializers.load_npz(str(out / 'snapshot_epoch_1'), resumed)
        resumed.run()
        got = [tuple(p) for p in
               resumed.get_extension('PlotReport')._data['main/loss']]
        assert (got == [tuple(p) for p in points]) == fine, got


def _monitor_trainer(out, n_epoch, total=None):
    model = _FakeNet()
    with model.init_scope():
        model.other = _FakeMN()
    for link in (model.norm, model.other):
        link.register_persistent('calls')  # its mixtures resume too
    monitor = mn_extensions.MixtureMonitor(
        model, dump_trigger=(1, 'epoch'), dump_layers=['conv3'],
        total=total)
    monitor._links = lambda: [('conv3', model.norm), ('conv2', model.other)]
    trainer = _trainer(model, out, n_epoch=n_epoch)
    trainer.extend(monitor)
    trainer.extend(extensions.snapshot(filename='snapshot_epoch_{'
                                       '.updater.epoch}'))
    return trainer


def test_mixture_dumps_every_epoch_across_a_resume(tmp_path):
    full = _monitor_trainer(tmp_path / 'full', 4)
    full.run()
    with numpy.load(str(tmp_path / 'full' / 'mixtures.npz')) as npz:
        expected = {k: npz[k] for k in npz.files}
    numpy.testing.assert_allclose(expected['fractions'],
                                  [0.25, 0.5, 0.75, 1])
    assert not [k for k in expected if k.startswith('conv2/')]
    assert int(expected['conv3/0.5/iteration']) == 4
    # Stopped after epoch 2 of 4 and resumed.
    part = tmp_path / 'part'
    _monitor_trainer(part, 2, total=(4, 'epoch')).run()
    with numpy.load(str(part / 'mixtures.npz')) as npz:
        assert sorted(npz['fractions']) == [0.25, 0.5]
    resumed = _monitor_trainer(part, 4)
    chainer.serializers.load_npz(str(part / 'snapshot_epoch_2'), resumed)
    resumed.run()
    with numpy.load(str(part / 'mixtures.npz')) as npz:
        assert sorted(npz.files) == sorted(expected)
        for key in npz.files:
            numpy.testing.assert_array_equal(npz[key], expected[key])
    # Resumed from epoch 1 into another directory, reading the dumps of
    # the snapshot's run: the dumps of the abandoned epochs are replaced.
    fork = _monitor_trainer(tmp_path / 'fork', 4)
    monitor = fork.get_extension('MixtureMonitor')
    monitor.previous_dump = str(part / 'mixtures.npz')
    chainer.serializers.load_npz(str(part / 'snapshot_epoch_1'), fork)
    fork.run()
    with numpy.load(str(tmp_path / 'fork' / 'mixtures.npz')) as npz:
        assert sorted(npz.files) == sorted(expected)
        for key in npz.files:
            numpy.testing.assert_array_equal(npz[key], expected[key])
