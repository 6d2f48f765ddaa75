import json
import os

import chainer
import numpy
import pytest

import mn_chainer.demo
import mn_chainer.optimizers
from tiny_data import write_tiny_cifar
import train_cifar


TINY = ['--widths', '4,4,8,8', '--no-progress']

LOG_KEYS = {'epoch', 'iteration', 'main/loss', 'main/accuracy',
            'validation/main/loss', 'validation/main/accuracy', 'lr',
            'elapsed_time'}


@pytest.fixture(scope='module')
def data_path(tmp_path_factory):
    """Tiny CIFAR-format file: uint8 NHWC images, integer labels."""
    return write_tiny_cifar(
        tmp_path_factory.mktemp('data') / 'tiny_cifar.npz', 48, 16)


def _run(data_path, out, *extra):
    argv = ['--data', data_path, '--out', str(out)] + TINY + list(extra)
    return train_cifar.main(argv)


@pytest.mark.parametrize('preset', ['BN-2', 'MN-2'])
def test_one_training_iteration(data_path, tmp_path, preset):
    out = tmp_path / preset
    log = _run(data_path, out, '--preset', preset, '--train-subset', '16',
               '--test-subset', '8', '-b', '16', '-e', '1')
    assert len(log) == 1
    entry = log[0]
    assert (entry['epoch'], entry['iteration']) == (1, 1)
    expected = set(LOG_KEYS)
    if preset == 'MN-2':
        expected.add('mn/conv3/effective_k')
        assert 1 <= entry['mn/conv3/effective_k'] <= 3
    assert expected <= set(entry)
    assert numpy.isfinite(entry['main/loss'])
    assert entry['lr'] == 0.01
    with open(str(out / 'log')) as f:
        assert json.load(f) == log
    with open(str(out / 'args.json')) as f:
        settings = json.load(f)
    assert settings['preset'] == 'table2:' + preset
    assert (settings['table'], settings['row']) == ('table2', preset)
    assert (settings['n_train'], settings['n_test']) == (16, 8)
    assert settings['weight_decay'] == 2e-5
    assert settings['batchsize'] == 16 and settings['epoch'] == 1
    if preset == 'MN-2':
        assert settings['mn_layers'] == ['conv3']
        assert (settings['n_components'], settings['em_iter']) == (3, 2)
    else:
        assert settings['mn_layers'] == []
    for name in ('snapshot_epoch_1', 'loss.png', 'accuracy.png'):
        assert (out / name).exists()


@pytest.mark.parametrize('norm', [
    ['--preset', 'BN-2'],
    # MN-2's settings with MN at two layers (as row MN-8).
    ['--preset', 'MN-2', '--mn-layers', 'conv2,conv3'],
])
def test_resume_reproduces_uninterrupted_run(data_path, tmp_path, norm):
    common = norm + ['--seed', '7', '--train-subset', '32',
                     '--test-subset', '8', '-b', '8']
    full = _run(data_path, tmp_path / 'full', *(common + ['-e', '2']))
    first = _run(data_path, tmp_path / 'part', *(common + ['-e', '1']))
    resumed = _run(data_path, tmp_path / 'part', *(
        common + ['-e', '2', '--resume',
                  str(tmp_path / 'part' / 'snapshot_epoch_1')]))

    def strip(entry):
        entry = dict(entry)
        del entry['elapsed_time']
        return entry

    assert [strip(e) for e in first] == [strip(full[0])]
    assert len(resumed) == 2
    assert strip(resumed[1]) == strip(full[1])
    assert resumed[1]['epoch'] == 2 and resumed[1]['iteration'] == 8


def test_same_seed_same_run_other_seed_differs(data_path, tmp_path):
    args = ['--preset', 'MN-2', '--train-subset', '16', '--test-subset', '8',
            '-b', '8', '-e', '1']
    a = _run(data_path, tmp_path / 'a', *(args + ['--seed', '1']))
    b = _run(data_path, tmp_path / 'b', *(args + ['--seed', '1']))
    c = _run(data_path, tmp_path / 'c', *(args + ['--seed', '2']))
    assert a[0]['main/loss'] == b[0]['main/loss']
    assert a[0]['main/loss'] != c[0]['main/loss']


def test_missing_data_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        train_cifar.main(['--data', str(tmp_path / 'missing.npz'),
                          '--out', str(tmp_path / 'out')] + TINY)


def _settings(*argv):
    parser = train_cifar.get_parser()
    return train_cifar.resolve_settings(parser.parse_args(list(argv)))


def test_settings_without_preset():
    s = _settings()
    assert s['model'] == 'cifar_cnn' and s['norm'] == 'bn'
    assert (s['lr'], s['weight_decay'], s['batchsize'], s['epoch']) == (
        0.01, 2e-5, 256, 100)
    assert s['optimizer'] == 'rmsprop'
    assert s['lr_schedule'] == {'kind': 'exponential', 'rate': 0.93,
                                'every': 2, 'at': []}
    assert s['mn_layers'] == [] and s['n_components'] is None
    s = _settings('--norm', 'mn')
    assert (s['mn_layers'], s['n_components'], s['em_iter'], s['mn_relu']) \
        == (['conv3'], 3, 2, True)


def test_flags_override_preset():
    s = _settings('--preset', 'MN-4', '--dataset', 'cifar100', '-l', '0.02',
                  '--weight-decay', '0', '--n_components', '5',
                  '--em_iter', '8', '-b', '64', '-e', '3', '--plain-mn',
                  '--optimizer', 'rmsprop_tf')
    assert s['preset'] == 'table2:MN-4' and s['dataset'] == 'cifar100'
    assert (s['lr'], s['weight_decay'], s['n_components'], s['em_iter']) == (
        0.02, 0.0, 5, 8)
    assert (s['batchsize'], s['epoch'], s['mn_relu']) == (64, 3, False)
    assert s['optimizer'] == 'rmsprop_tf'
    assert s['mn_layers'] == ['conv3']
    s = _settings('--preset', 'MN-2', '--norm', 'bn')
    assert s['mn_layers'] == [] and s['lr'] == 0.01
    s = _settings('--preset', 'BN-3', '--mn-layers', 'conv1,conv2')
    assert s['norm'] == 'mn' and s['mn_layers'] == ['conv1', 'conv2']
    assert (s['lr'], s['weight_decay']) == (0.05, 1e-4)


@pytest.mark.parametrize('argv,match', [
    (['--norm', 'bn', '--mn-layers', 'conv3'], 'contradicts'),
    (['--preset', 'MN-7'], 'exists for cifar100'),
    (['--widths', '4,4,4'], '4 integers'),
])
def test_inconsistent_flags(argv, match):
    with pytest.raises(ValueError, match=match):
        _settings(*argv)


def test_make_optimizer_mapping():
    opt = train_cifar.make_optimizer('rmsprop', 0.05)
    assert isinstance(opt, chainer.optimizers.RMSprop)
    assert (opt.lr, opt.alpha) == (0.05, 0.9)
    opt = train_cifar.make_optimizer('nesterov', 0.1)
    assert isinstance(opt, chainer.optimizers.NesterovAG)
    assert opt.momentum == 0.9
    opt = train_cifar.make_optimizer('rmsprop_tf', 0.01)
    assert isinstance(opt, mn_chainer.optimizers.RMSpropTF)
    assert (opt.decay, opt.momentum, opt.eps) == (0.9, 0.9, 1.0)


def test_step_schedule_trigger():
    shift, trigger = train_cifar.lr_schedule_extension(
        {'kind': 'step', 'rate': 0.1, 'every': None, 'at': [0.5, 0.75]}, 200)
    assert isinstance(shift, chainer.training.extensions.ExponentialShift)
    assert list(trigger.points) == [100, 150]
    shift, trigger = train_cifar.lr_schedule_extension(
        {'kind': 'exponential', 'rate': 0.93, 'every': 2, 'at': []}, 100)
    assert trigger == (2, 'epoch')


def test_rmsprop_tf_matches_reference():
    rng = numpy.random.RandomState(0)
    w0 = rng.randn(5).astype(numpy.float64)
    grads = [rng.randn(5) for _ in range(4)]
    link = chainer.Link()
    with link.init_scope():
        link.w = chainer.Parameter(w0.copy())
    opt = mn_chainer.optimizers.RMSpropTF(lr=0.1)
    opt.setup(link)
    for g in grads:
        link.w.grad = g.copy()
        opt.update()
    # TensorFlow 1's ApplyRMSProp, written out: ms starts at one.
    w, ms, mom = w0.copy(), numpy.ones(5), numpy.zeros(5)
    for g in grads:
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.1 * g / numpy.sqrt(ms + 1.0)
        w = w - mom
    numpy.testing.assert_allclose(link.w.array, w, rtol=1e-12)


def test_demo_prints_side_by_side(data_path, tmp_path, capsys):
    out = tmp_path / 'demo'
    logs = mn_chainer.demo.main([
        '--data', data_path, '--epoch', '2', '--train-subset', '16',
        '--test-subset', '8', '-b', '8', '--widths', '4,4,8,8',
        '--out', str(out)])
    assert set(logs) == {'BN-2', 'MN-2'}
    for name in ('bn2', 'mn2'):
        with open(os.path.join(str(out), name, 'args.json')) as f:
            settings = json.load(f)
        assert settings['preset'] == 'table2:' + name.upper()[:2] + '-2'
        assert settings['n_train'] == 16 and settings['seed'] == 0
    printed = capsys.readouterr().out
    table = printed[printed.index('test accuracy (%) per epoch'):]
    lines = table.splitlines()
    assert lines[1].split()[:3] == ['epoch', 'BN-2', 'MN-2']
    for epoch in (1, 2):
        cells = lines[1 + epoch].split()
        assert int(cells[0]) == epoch
        assert float(cells[1]) == pytest.approx(
            100 * logs['BN-2'][epoch - 1]['validation/main/accuracy'],
            abs=0.006)
        assert float(cells[2]) == pytest.approx(
            100 * logs['MN-2'][epoch - 1]['validation/main/accuracy'],
            abs=0.006)
    assert (out / 'summary.txt').exists()
