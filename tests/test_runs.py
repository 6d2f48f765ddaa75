"""Run directories, resumes and errors of the trainers (issue 15).

Tiny runs on a few dozen random images: the CIFAR CNN at widths 4,4,8,8 and
the DCGAN at ch 16. Most runs go through ``mn_chainer.cli.run`` in-process
(what the scripts' ``__main__`` does); the scenarios that need a process of
their own (help, warnings, tracebacks, SIGKILL mid-snapshot) start one.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest

import chainer

from mn_chainer import cli
from mn_chainer import extensions as mn_extensions
from mn_chainer import plot
import mn_chainer.demo
import mn_chainer.train
from tiny_data import write_tiny_cifar
import train_dcgan


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--widths', '4,4,8,8', '--no-progress', '-b', '16', '--seed', '3']
MN = ['--preset', 'MN-2', '--dump-mixtures', 'conv3']
DCGAN = ['--ch', '16', '-b', '4', '--snapshot-interval', '2',
         '--display-interval', '1', '--fid-interval', '0']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """48 training and 16 test images."""
    return write_tiny_cifar(tmp_path_factory.mktemp('data') / 'tiny.npz',
                            48, 16)


def _run(main, prog, argv, capsys):
    """``cli.run`` in-process: (exit status, result, stderr lines)."""
    capsys.readouterr()
    try:
        result = cli.run(main, argv, prog=prog)
        status = 0
    except SystemExit as e:
        result, status = None, e.code
    return status, result, capsys.readouterr().err.splitlines()


def _cifar(data, out, argv, capsys):
    return _run(mn_chainer.train.main, 'train_cifar.py',
                ['--data', data, '-o', str(out)] + TINY + list(argv), capsys)


def _dcgan(data, out, argv, capsys):
    return _run(train_dcgan.main, 'train_dcgan.py',
                ['--data', data, '-o', str(out)] + DCGAN + list(argv), capsys)


def _state(path):
    """Every file under ``path`` -> its bytes (a directory's whole state)."""
    state = {}
    for root, _, files in os.walk(str(path)):
        for name in files:
            full = os.path.join(root, name)
            with open(full, 'rb') as f:
                state[os.path.relpath(full, str(path))] = f.read()
    return state


def _args(out):
    with open(os.path.join(str(out), 'args.json')) as f:
        return json.load(f)


def _log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return [{k: v for k, v in e.items() if k != 'elapsed_time'}
                for e in json.load(f)]


def _png(path):
    import PIL.Image
    with PIL.Image.open(str(path)) as image:
        return numpy.asarray(image.convert('RGB'))


def _script(name, argv, env=None, **kwargs):
    environ = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    environ.pop(cli.DEBUG_ENV, None)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, name)] + list(argv),
        env=environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, **kwargs)


def _one_line(err, status, expected_status, *parts):
    assert status == expected_status, err
    assert len(err) == 1, err
    assert err[0].startswith(('train_cifar.py: error: ',
                              'train_dcgan.py: error: ',
                              mn_chainer.demo.PROG + ': error: '))
    for part in parts:
        assert part in err[0]


@pytest.fixture(scope='module')
def full(data, tmp_path_factory):
    """An uninterrupted 2-epoch MN-2 run dumping conv3's mixtures."""
    out = tmp_path_factory.mktemp('full') / 'run'
    log = mn_chainer.train.main(['--data', data, '-o', str(out), '-e', '2']
                                + TINY + MN)
    assert [e['epoch'] for e in log] == [1, 2]
    return out


@pytest.fixture
def one_epoch(data, tmp_path):
    """The first epoch of the same run, stopped there."""
    out = tmp_path / 'run'
    mn_chainer.train.main(['--data', data, '-o', str(out), '-e', '1'] + TINY
                          + MN)
    return out


# --- a run directory belongs to one run -------------------------------------

def test_new_run_into_a_finished_run_is_refused(data, one_epoch, capsys):
    before = _state(one_epoch)
    status, _, err = _cifar(data, one_epoch, ['--preset', 'BN-2'], capsys)
    _one_line(err, status, 1, '--out {} already holds a run'.format(
        one_epoch), '--resume {}'.format(one_epoch / 'snapshot_epoch_1'),
        'write elsewhere with --out', '--overwrite')
    assert _state(one_epoch) == before


def test_overwrite_moves_the_old_run_aside(data, one_epoch, capsys):
    before = _state(one_epoch)
    status, _, _ = _cifar(data, one_epoch, ['--preset', 'BN-2', '-e', '1',
                                            '--overwrite'], capsys)
    assert status == 0
    moved = str(one_epoch) + '.old1'
    assert _state(moved) == before
    assert _args(one_epoch)['preset'] == 'table2:BN-2'
    assert _args(moved)['preset'] == 'table2:MN-2'
    assert sorted(os.listdir(str(one_epoch))) == [
        '.lock', 'accuracy.png', 'args.json', 'log', 'loss.png',
        'snapshot_epoch_1']


def test_resume_equals_the_uninterrupted_run(data, full, one_epoch, capsys):
    """Only -r and -e given: every other setting comes from the snapshot;
    the log, the plots and the mixture dumps equal the uninterrupted run's,
    and args.json records the resume."""
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(one_epoch), '-e', '2', '--no-progress'],
                          capsys)
    assert status == 0, err
    assert _log(one_epoch) == _log(full)
    for name in ('loss.png', 'accuracy.png'):
        numpy.testing.assert_array_equal(_png(one_epoch / name),
                                         _png(full / name))
    with numpy.load(str(full / 'mixtures.npz')) as a, \
            numpy.load(str(one_epoch / 'mixtures.npz')) as b:
        assert sorted(a.files) == sorted(b.files)
        assert 'conv3/0.5/means' in a.files and 'conv3/1/means' in a.files
        for key in a.files:
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
    args, full_args = _args(one_epoch), _args(full)
    assert (args['preset'], args['seed'], args['epoch']) == (
        'table2:MN-2', 3, 2)
    assert args['resumes'] == [{
        'snapshot': str(one_epoch / 'snapshot_epoch_1'), 'epoch': 1,
        'iteration': 3, 'argv': ['-r', str(one_epoch), '-e', '2',
                                 '--no-progress'],
        'changed': {'epoch': [1, 2]}}]
    assert args['resume'] == str(one_epoch / 'snapshot_epoch_1')
    for key in ('lr', 'mn_layers', 'n_components', 'pixel_mean', 'widths',
                'dump_mixtures', 'dump_every'):
        assert args[key] == full_args[key], key
    # Fig. 8 from the command line.
    png = one_epoch / 'fig8.png'
    assert plot.main(['mixture', str(one_epoch), '-o', str(png)]) == 0
    assert png.stat().st_size > 10000


@pytest.mark.parametrize('flag,value,name', [
    ('-l', '0.02', '--learnrate 0.02'),
    ('--seed', '4', '--seed 4'),
    ('--mn-layers', 'conv2', '--mn-layers conv2'),
    ('--preset', 'BN-2', '--preset table2:BN-2'),
    ('--n_components', '5', '--n-components 5'),
    ('--plain-mn', None, '--plain-mn'),
    ('--widths', '4,4,8,16', '--widths 4,4,8,16'),
])
def test_flag_contradicting_the_snapshot_is_refused(
        data, one_epoch, capsys, flag, value, name):
    before = _state(one_epoch)
    argv = ['-r', str(one_epoch), '-e', '2', flag] + (
        [value] if value else [])
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py', argv,
                          capsys)
    _one_line(err, status, 2, name + ' contradicts the snapshot\'s run',
              'leave ' + name.split()[0] + ' out')
    assert _state(one_epoch) == before


def test_resume_from_an_older_snapshot_in_place(data, full, tmp_path,
                                                capsys):
    run = tmp_path / 'run'
    shutil.copytree(str(full), str(run))
    os.remove(str(run / '.lock'))
    before = _state(run)
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(run / 'snapshot_epoch_1')], capsys)
    _one_line(err, status, 1, 'has a later snapshot, snapshot_epoch_2')
    assert _state(run) == before


def _truncated(path, out):
    os.makedirs(str(out))
    with open(str(path), 'rb') as f:
        data = f.read()
    target = str(out / 'snapshot_epoch_1')
    with open(target, 'wb') as f:
        f.write(data[:len(data) // 2])
    return target


def test_failed_resumes_leave_the_directory_as_it_was(data, full, tmp_path,
                                                      capsys):
    # Missing, truncated, written by the other trainer, and an old
    # snapshot (no recorded settings) of another network.
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(tmp_path / 'nothing')], capsys)
    _one_line(err, status, 1, 'no such snapshot file')
    bad = _truncated(full / 'snapshot_epoch_1', tmp_path / 'torn')
    before = _state(tmp_path / 'torn')
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', bad], capsys)
    _one_line(err, status, 1, '--resume {}'.format(bad),
              'not a readable trainer snapshot')
    assert _state(tmp_path / 'torn') == before
    gan = tmp_path / 'gan'
    assert _dcgan(data, gan, ['--iterations', '2'], capsys)[0] == 0
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(gan), '-o', str(tmp_path / 'x')],
                          capsys)
    _one_line(err, status, 1, 'a snapshot of train_dcgan.py, not of '
              'train_cifar.py')
    old = str(tmp_path / 'old' / 'snapshot_epoch_2')
    os.makedirs(os.path.dirname(old))
    with numpy.load(str(full / 'snapshot_epoch_2')) as npz:
        numpy.savez(old, **{k: npz[k] for k in npz.files
                            if 'run_record' not in k})
    os.rename(old + '.npz', old)
    before = _state(tmp_path / 'old')
    status, _, err = _cifar(data, tmp_path / 'old', [
        '-r', old, '--preset', 'MN-2', '--mn-layers', 'conv2', '-e', '3'],
        capsys)
    _one_line(err, status, 1, 'the snapshot does not match this run: it has '
              'no updater/model:main/predictor/conv')
    assert _state(tmp_path / 'old') == before
    assert not os.path.exists(str(tmp_path / 'x'))


def test_kill_during_snapshot_then_resume(data, full, one_epoch, capsys):
    """SIGKILL while the epoch-2 snapshot is written (a test hook makes the
    writer sleep before it moves the file in place): the temporary folder
    stays, the next start removes it and the resumed run equals the
    uninterrupted one."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'train_cifar.py'), '-r',
         str(one_epoch), '-e', '2', '--no-progress'],
        env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1',
                 **{mn_extensions.SNAPSHOT_DELAY_ENV: '60'}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        temporary = []
        while not temporary and time.time() < deadline:
            time.sleep(0.2)
            temporary = [n for n in os.listdir(str(one_epoch))
                         if n.startswith('tmpsnapshot_epoch_2')]
            assert process.poll() is None
        assert temporary, 'the snapshot writer never started'
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (one_epoch / 'snapshot_epoch_2').exists()
    assert len(_log(one_epoch)) == 2  # logged before the snapshot started
    # The snapshot's run is 1 epoch long (the killed resume's -e 2 never
    # reached a snapshot): resuming it as it is only tidies the directory.
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(one_epoch), '--no-progress'], capsys)
    assert status == 0, err
    assert not [n for n in os.listdir(str(one_epoch))
                if n.startswith('tmp')]
    assert _log(one_epoch) == _log(full)[:1]
    status, _, err = _run(mn_chainer.train.main, 'train_cifar.py',
                          ['-r', str(one_epoch), '-e', '2', '--no-progress'],
                          capsys)
    assert status == 0, err
    assert _log(one_epoch) == _log(full)


# --- one clear line on stderr ------------------------------------------------

@pytest.mark.parametrize('argv,parts', [
    (['--mn-layers', 'conv9'], ["--mn-layers conv9: unknown norm layer "
                                "'conv9'", 'valid names: conv1, conv2, '
                                'conv3, conv4']),
    (['--mn-layers', ','], ['--mn-layers ,', 'valid names: conv1']),
    (['-b', '64'], ['--batchsize 64 exceeds the 48 training images']),
    (['--train-subset', '100'], ['--train-subset 100', 'exceeds the 48 '
                                 'training images']),
    (['--test-subset', '17'], ['--test-subset 17', 'exceeds the 16 test']),
    (['--widths', '4,4,4'], ['--widths needs 4 integers']),
    (['--norm', 'bn', '--mn-layers', 'conv3'], ['contradicts']),
    (['--preset', 'MN-7'], ['--preset MN-7', 'exists for cifar100']),
    (['--mn-layers', 'conv3', '--dump-mixtures', 'conv2'],
     ['--dump-mixtures: conv2 is not a Mixture Normalization layer',
      'its MN layers: conv3']),
    (['--dump-mixtures', 'conv3'], ['needs Mixture Normalization']),
    (['-d', 'gpu'], ["--device 'gpu': not a device specifier"]),
])
def test_usage_errors(data, tmp_path, capsys, argv, parts):
    status, _, err = _cifar(data, tmp_path / 'run', argv, capsys)
    _one_line(err, status, 2, *parts)
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('argv', [['-b', '0'], ['-e', '-1'], ['-l', 'x'],
                                  ['--weight-decay', '-1'],
                                  ['--n-components', '0']])
def test_argparse_errors_end_with_the_flag(data, tmp_path, capsys, argv):
    status, _, err = _cifar(data, tmp_path / 'run', argv, capsys)
    assert status == 2
    assert err[-1].startswith('train_cifar.py: error: argument ')


def _bad_npz(path, kind):
    rng = numpy.random.RandomState(1)
    arrays = dict(
        x_train=rng.randint(0, 256, (8, 32, 32, 3)).astype(numpy.uint8),
        y_train=rng.randint(0, 10, 8), y_test=rng.randint(0, 10, 4),
        x_test=rng.randint(0, 256, (4, 32, 32, 3)).astype(numpy.uint8))
    if kind == 'labels':
        arrays['y_train'][3] = 10
    if kind == 'key':
        del arrays['y_test']
    numpy.savez(path, **arrays)
    if kind in ('empty', 'truncated', 'text'):
        with open(path, 'rb') as f:
            content = f.read()
        with open(path, 'wb') as f:
            f.write({'empty': b'', 'truncated': content[:len(content) // 2],
                     'text': b'x_train,y_train\n'}[kind])
    return path


@pytest.mark.parametrize('kind,part', [
    ('empty', 'is empty'), ('truncated', 'is not a readable .npz'),
    ('text', 'is not a readable .npz'), ('labels', 'labels must lie in'),
    ('key', 'lacks the key(s) y_test'),
])
def test_bad_data_files(tmp_path, capsys, kind, part):
    path = _bad_npz(str(tmp_path / 'bad.npz'), kind)
    status, _, err = _cifar(path, tmp_path / 'run', [], capsys)
    _one_line(err, status, 1, path, part)
    status, _, err = _dcgan(path, tmp_path / 'gan', [], capsys)
    _one_line(err, status, 1, path, part)
    assert not (tmp_path / 'run').exists()


def test_environment_errors(data, tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    status, _, err = _cifar(data, blocker / 'run', [], capsys)
    _one_line(err, status, 1, 'is a file, not a directory')
    if not chainer.backends.cuda.available:
        status, _, err = _cifar(data, tmp_path / 'run', ['-d', '0'], capsys)
        _one_line(err, status, 1, '--device 0: no usable GPU',
                  'use -d -1 to run on the CPU')


def test_disk_full_during_a_snapshot(data, tmp_path, capsys, monkeypatch):
    def full_disk(path, target, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', path)
    monkeypatch.setattr(chainer.serializers.npz, 'save_npz', full_disk)
    status, _, err = _cifar(data, tmp_path / 'run', ['-e', '1'], capsys)
    _one_line(err, status, 1, 'snapshot_epoch_1: No space left on device')
    assert not [n for n in os.listdir(str(tmp_path / 'run'))
                if n.startswith('tmp')]


# --- DCGAN ------------------------------------------------------------------

@pytest.mark.parametrize('argv,part', [
    (['-b', '0'], 'argument --batchsize/-b: must be positive'),
    (['--iterations', '0'], 'argument --iterations: must be positive'),
    (['--snapshot_interval', '0'],
     'argument --snapshot_interval: must be positive'),
    (['--alpha', '-1'], 'argument --alpha: must be positive'),
    (['--em_iter', '0'], 'argument --em_iter: must be positive'),
    (['--beta1', '1'], 'argument --beta1: must be in [0, 1)'),
    (['--ch', '12'], 'must be a positive multiple of 8'),
    (['--fid-samples', '0'], 'argument --fid-samples'),
])
def test_dcgan_argument_errors(data, tmp_path, capsys, argv, part):
    status, _, err = _dcgan(data, tmp_path / 'run', argv, capsys)
    assert status == 2
    assert err[-1].startswith('train_dcgan.py: error: ')
    assert part in err[-1]


@pytest.mark.parametrize('argv,parts', [
    (['-b', '64'], ['--batchsize 64 exceeds the 48 training images']),
    (['--train-subset', '60'], ['--train-subset 60']),
    (['--mn', 'norm9'], ["--mn norm9: unknown Generator norm layer 'norm9'",
                         'valid names: norm0']),
    (['--dump-mixtures', 'norm1'], ['--dump-mixtures norm1 needs --mn']),
    (['--mn', 'norm1', '--dump-mixtures', 'norm2'],
     ['norm2 is not a Mixture Normalization layer']),
])
def test_dcgan_usage_errors(data, tmp_path, capsys, argv, parts):
    status, _, err = _dcgan(data, tmp_path / 'run', argv, capsys)
    _one_line(err, status, 2, *parts)
    assert not (tmp_path / 'run').exists()


def test_dcgan_resumes_with_its_settings(data, tmp_path, capsys):
    """A resume without --mn keeps the MN run's settings; a failed resume
    (--mn on a BN run's snapshot) leaves args.json as it was."""
    full, part = tmp_path / 'full', tmp_path / 'part'
    extra = ['--mn', '--dump-mixtures', 'paper', '--dump-interval', '2']
    assert _dcgan(data, full, ['--iterations', '4'] + extra, capsys)[0] == 0
    assert _dcgan(data, part, ['--iterations', '2'] + extra, capsys)[0] == 0
    status, _, err = _run(train_dcgan.main, 'train_dcgan.py',
                          ['-r', str(part), '--iterations', '4'], capsys)
    assert status == 0, err
    assert _log(part) == _log(full)
    args = _args(part)
    assert args['mn'] == ['paper'] and args['iterations'] == 4
    assert args['resumes'][0]['changed'] == {'iterations': [2, 4]}
    with numpy.load(str(full / 'mixtures.npz')) as a, \
            numpy.load(str(part / 'mixtures.npz')) as b:
        assert sorted(a.files) == sorted(b.files)
        assert 'norm1/0.5/means' in a.files
        for key in a.files:
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
    bn = tmp_path / 'bn'
    assert _dcgan(data, bn, ['--iterations', '2'], capsys)[0] == 0
    before = _state(bn)
    status, _, err = _run(train_dcgan.main, 'train_dcgan.py',
                          ['-r', str(bn), '--iterations', '4', '--mn'],
                          capsys)
    _one_line(err, status, 2, "--mn paper contradicts the snapshot's run")
    assert _state(bn) == before
    assert _args(bn)['mn'] is None


# --- the demo ----------------------------------------------------------------

def test_demo_refuses_resumes_and_overwrites(data, tmp_path, capsys):
    out = tmp_path / 'demo'
    argv = ['--data', data, '-e', '1', '--train-subset', '16',
            '--test-subset', '8', '-b', '8', '--widths', '4,4,8,8',
            '--out', str(out)]
    logs = mn_chainer.demo.main(argv)
    assert [len(logs[r]) for r in mn_chainer.demo.ROWS] == [1, 1]
    before = _state(out)
    status, _, err = _run(mn_chainer.demo.main, mn_chainer.demo.PROG, argv,
                          capsys)
    _one_line(err, status, 1, '--out {} already holds a demo'.format(out),
              '--resume')
    assert _state(out) == before
    logs = mn_chainer.demo.main(argv + ['--resume', '-e', '2'])
    assert [len(logs[r]) for r in mn_chainer.demo.ROWS] == [2, 2]
    assert _args(out / 'mn2')['resumes'][0]['changed'] == {'epoch': [1, 2]}
    resumed = _state(out)
    mn_chainer.demo.main(argv + ['--overwrite'])
    assert _state(str(out) + '.old1') == resumed
    assert len(_log(out / 'mn2')) == 1


def test_demo_resume_starts_a_new_demo_and_reprints_a_finished_one(
        data, tmp_path, capsys):
    # `make` always passes --resume: the first call starts the demo, the
    # next ones train nothing more and print the same comparison.
    out = tmp_path / 'demo'
    argv = ['--data', data, '-e', '1', '--train-subset', '16',
            '--test-subset', '8', '-b', '8', '--widths', '4,4,8,8',
            '--out', str(out), '--resume']
    logs = mn_chainer.demo.main(argv)
    assert [len(logs[r]) for r in mn_chainer.demo.ROWS] == [1, 1]
    first = _state(out)
    table = capsys.readouterr().out
    again = mn_chainer.demo.main(argv)
    assert again == logs
    state = _state(out)
    # Only the resumes (args.json) and this invocation's wall time
    # (summary.txt) are new; logs, snapshots and plots stay as they were.
    assert sorted(state) == sorted(first)
    for name in state:
        if not name.endswith(('args.json', 'summary.txt')):
            assert state[name] == first[name], name
    for row in ('bn2', 'mn2'):
        resumes = _args(out / row)['resumes']
        assert len(resumes) == 1 and not resumes[0]['changed']
    reprinted = capsys.readouterr().out

    def accuracies(text):
        return [line for line in text.splitlines() if line.strip()
                and line.split()[0] in ('1', 'best')]
    assert accuracies(reprinted) == accuracies(table)
    assert accuracies(table)


# --- whole processes ---------------------------------------------------------

@pytest.mark.parametrize('script', ['train_cifar.py', 'train_dcgan.py'])
def test_help_shows_each_default_once_and_one_spelling(script):
    result = _script(script, ['--help'])
    assert result.returncode == 0
    assert result.stderr == ''  # no CuPy NCCL warning either
    text = result.stdout
    assert 'default: None' not in text
    assert '_' not in ''.join(w for w in text.split() if w.startswith('--'))
    entries = ' '.join(text.split()).split(' -')
    for entry in entries:
        assert entry.count('default') <= 1, entry
    section = text[text.index('mixture normalization:'):]
    section = section[:section.index('\n\n')]
    assert '--n-components' in section
    if script == 'train_cifar.py':
        assert '--mn-layers' in section and '--dump-mixtures' in section
        assert 'cifar_cnn channel widths' in text


def test_errors_of_the_script_and_the_debug_traceback(tmp_path):
    result = _script('train_cifar.py', ['--mn-layers', 'conv9', '-o',
                                        str(tmp_path / 'r')])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "train_cifar.py: error: --mn-layers conv9: unknown norm layer "
        "'conv9' of CifarCNN; valid names: conv1, conv2, conv3, conv4"]
    empty = tmp_path / 'empty.npz'
    empty.write_bytes(b'')
    result = _script('train_cifar.py', ['--data', str(empty), '-o',
                                        str(tmp_path / 'r')])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'train_cifar.py: error: {} is empty, not an .npz file'.format(empty)]
    result = _script('train_cifar.py', ['--data', str(empty), '-o',
                                        str(tmp_path / 'r')],
                     env={cli.DEBUG_ENV: '1'})
    assert result.returncode == 1
    assert 'Traceback (most recent call last)' in result.stderr
    assert not (tmp_path / 'r').exists()


def test_the_package_does_not_import_the_scripts():
    code = ('import sys, mn_chainer.demo, mn_chainer.train, '
            'mn_chainer.extensions; '
            'print(sorted(m for m in sys.modules if m.startswith("train_")))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'
    assert result.stderr == ''
