"""train_cifar.py --finetune-batches: population statistics before the final
evaluation (issue 16, item 3), recorded in finetuned.json.

Tiny runs on random images (tests/tiny_data.py): the recorded accuracy and
loss are what ``mn-evaluate --inference population`` gives for the same
batches, and what an independent fine-tuning of the run's last snapshot
gives (a model rebuilt from args.json, ``mn_chainer.links.finetune`` over
batches drawn here); the flag leaves the training alone; resuming a
finished run only fine-tunes it, with the same result; flags, records and
the readers of run directories (mn-compare, mn-study) behave.
"""
import json
import os
import random
import shutil

import numpy
import pytest

import chainer

from mn_chainer import cli
from mn_chainer import compare
from mn_chainer import evaluate
import mn_chainer.datasets
import mn_chainer.links as ML
from mn_chainer import logs
from mn_chainer import rundir
from mn_chainer import study
import test_runs_mpi
from tiny_data import write_tiny_cifar
import train_cifar

MN = ['--norm', 'mn', '--mn-layers', 'conv2,conv3']
BN = ['--norm', 'bn']

ENTRY_KEYS = {'epoch', 'iteration', 'snapshot', 'finetune_batches',
              'batchsize', 'n_workers', 'accuracy', 'loss', 'n_images',
              'seconds', 'finetune_seconds'}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    # 20 test images in batches of 8: the last batch is short.
    return write_tiny_cifar(tmp_path_factory.mktemp('data') / 'tiny.npz',
                            40, 20)


def _train(data, out, *argv):
    return train_cifar.main(['--data', data, '-o', str(out), '--widths',
                             '4,8,8,8', '-b', '8', '--seed', '5',
                             '--no-progress'] + list(argv))


def _resume(out, *argv):
    return train_cifar.main(['-r', str(out), '--no-progress'] + list(argv))


def _records(out):
    return logs.load_finetuned(str(out))


def _results(entry):
    return {k: entry[k] for k in entry
            if k not in ('seconds', 'finetune_seconds')}


def _log(out):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in logs.load_log(str(out))]


@pytest.fixture(scope='module')
def runs(data, tmp_path_factory):
    """One epoch of MN and BN runs: with --finetune-batches 7 (more than the
    5 batches of an epoch) and without."""
    base = tmp_path_factory.mktemp('runs')
    for name, norm in (('mn', MN), ('bn', BN)):
        _train(data, base / name, '-e', '1', '--finetune-batches', '7',
               *norm)
        _train(data, base / (name + '_plain'), '-e', '1', *norm)
    return base


def _finetune_independently(run_dir, n_batches):
    """The last snapshot's classifier fine-tuned over ``n_batches`` batches
    drawn here: the order of numpy.random.RandomState(seed) (the sampler
    draws once when the iterator is made and once when finetune() resets
    it) and the augmentation of random.seed(seed), repeating the split."""
    model, settings, _ = evaluate.load_run(run_dir)
    train, test, _ = mn_chainer.datasets.get_cifar(
        data=settings['data'], seed=settings['seed'])
    order = numpy.random.RandomState(settings['seed'])
    order.permutation(len(train))
    indices = numpy.concatenate([order.permutation(len(train))
                                 for _ in range(2)])
    batchsize = settings['batchsize']
    random.seed(settings['seed'])
    batches = [[train[i] for i in indices[b * batchsize:(b + 1) * batchsize]]
               for b in range(n_batches)]
    assert ML.finetune(model, iter(batches)) == n_batches
    return model, test


@pytest.mark.parametrize('norm', ['mn', 'bn'])
def test_recorded_population_accuracy(runs, norm):
    out = str(runs / norm)
    entry, = _records(out)
    assert set(entry) == ENTRY_KEYS
    assert (entry['epoch'], entry['iteration']) == (1, 5)
    assert entry['snapshot'] == 'snapshot_epoch_1'
    assert (entry['finetune_batches'], entry['batchsize'],
            entry['n_workers'], entry['n_images']) == (7, 8, 1, 20)
    assert entry['seconds'] > 0 and entry['finetune_seconds'] > 0
    # The same as mn-evaluate's population rule over the same batches.
    result = evaluate.evaluate_run(out, inference=['population'],
                                   finetune_batches=7)
    assert result['snapshot'] == os.path.join(out, 'snapshot_epoch_1')
    population = result['population']
    assert (entry['accuracy'], entry['loss']) == (population['accuracy'],
                                                  population['loss'])
    # ... and an independent fine-tuning of the snapshot, classified image
    # by image.
    model, test = _finetune_independently(out, 7)
    if norm == 'mn':
        layer = model.predictor.conv3.bn
        assert layer.population_points == 7 * 8 * 7 * 7
    x, t = chainer.dataset.concat_examples(test[:])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = model.predictor(x)
    assert entry['accuracy'] == float((y.array.argmax(axis=1) == t).mean())
    loss = chainer.functions.softmax_cross_entropy(y, t, reduce='no').array
    assert entry['loss'] == pytest.approx(float(loss.mean()), rel=1e-5)
    # Population statistics, not the trained state's.
    queue = evaluate.evaluate_run(out, inference=['queue'])['queue']
    assert entry['loss'] != pytest.approx(queue['loss'], rel=1e-6)


@pytest.mark.parametrize('norm', ['mn', 'bn'])
def test_training_and_snapshot_unchanged(runs, norm):
    finetuned, plain = runs / norm, runs / (norm + '_plain')
    assert _log(finetuned) == _log(plain)
    assert _records(plain) == []
    with numpy.load(str(finetuned / 'snapshot_epoch_1')) as a, \
            numpy.load(str(plain / 'snapshot_epoch_1')) as b:
        model = [k for k in a.files if k.startswith('updater/model:main/')]
        assert model and sorted(model) == sorted(
            k for k in b.files if k.startswith('updater/model:main/'))
        for key in model:
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)
    with open(str(finetuned / 'args.json')) as f:
        assert json.load(f)['finetune_batches'] == 7
    with open(str(plain / 'args.json')) as f:
        assert json.load(f)['finetune_batches'] == 0


def test_resume_of_a_finished_run_only_finetunes(runs, tmp_path, capsys):
    out = tmp_path / 'run'
    shutil.copytree(str(runs / 'mn_plain'), str(out))
    log = _log(out)
    _resume(out, '--finetune-batches', '7')
    printed = capsys.readouterr().out
    assert '--finetune-batches 0 -> 7' in printed
    assert 'test accuracy' in printed
    assert _log(out) == log
    entry, = _records(out)
    assert _results(entry) == _results(_records(runs / 'mn')[0])
    with open(str(out / 'args.json')) as f:
        args = json.load(f)
    assert args['finetune_batches'] == 7
    assert args['resumes'][-1]['changed'] == {'finetune_batches': [0, 7]}
    # Again: the entry is replaced, not repeated.
    _resume(out, '--finetune-batches', '7')
    assert [_results(e) for e in _records(out)] == [_results(entry)]
    # Left out, the flag is the snapshot's, like every flag: a resume that
    # only fine-tuned wrote no snapshot.
    _resume(out)
    assert [_results(e) for e in _records(out)] == [_results(entry)]
    # Another setting adds an entry; training further adds one of its end,
    # and the snapshots it writes hold its setting.
    _resume(out, '--finetune-batches', '2')
    _resume(out, '-e', '2', '--finetune-batches', '2')
    _resume(out, '-e', '3')
    entries = _records(out)
    assert [(e['epoch'], e['iteration'], e['finetune_batches'])
            for e in entries] == [(1, 5, 7), (1, 5, 2), (2, 10, 2),
                                  (3, 15, 2)]
    assert entries[-1]['snapshot'] == 'snapshot_epoch_3'
    assert [e['epoch'] for e in _log(out)] == [1, 2, 3]
    # Switched off on a resume: nothing more is recorded.
    _resume(out, '-e', '4', '--finetune-batches', '0')
    assert len(_records(out)) == 4


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as status:
        cli.run(train_cifar.main, argv, prog=train_cifar.PROG)
    err = capsys.readouterr().err.strip().splitlines()
    return status.value.code, err[-1] if err else ''


@pytest.mark.parametrize('value,part', [('-1', 'must be >= 0, got -1'),
                                        ('x', "expected an integer, got "
                                         "'x'"),
                                        ('1.5', 'expected an integer')])
def test_bad_values_are_usage_errors(data, tmp_path, capsys, value, part):
    code, line = _exit(['--data', data, '-o', str(tmp_path / 'r'),
                        '--finetune-batches', value], capsys)
    assert code == 2
    assert '--finetune-batches' in line and part in line
    assert not (tmp_path / 'r').exists()


def test_help_describes_the_flag():
    text = train_cifar.get_parser().format_help()
    assert '--finetune-batches N' in text and 'finetuned.json' in text


@pytest.mark.parametrize('content', [b'', b'[{"epoch": 1', b'{"a": 1}',
                                     b'[{"epoch": 1, "iteration": 5}]'])
def test_unreadable_record_stops_the_resume_before_training(
        data, runs, tmp_path, capsys, content):
    out = tmp_path / 'run'
    shutil.copytree(str(runs / 'mn'), str(out))
    (out / logs.FINETUNED_FILE).write_bytes(content)
    before = sorted(os.listdir(str(out)))
    code, line = _exit(['-r', str(out), '-e', '2'], capsys)
    assert code == 1
    assert line.startswith('train_cifar.py: error: ')
    assert os.path.join(str(out), 'finetuned.json') in line
    assert 'move it away' in line
    assert sorted(os.listdir(str(out))) == before
    assert (out / logs.FINETUNED_FILE).read_bytes() == content
    # Without fine-tuning the record is not read, and --overwrite moves it
    # aside with its run.
    _train(data, out, '--overwrite', '-e', '1')
    assert (tmp_path / 'run.old1' / logs.FINETUNED_FILE).read_bytes() == \
        content


def test_load_finetuned_errors(tmp_path):
    assert logs.load_finetuned(str(tmp_path)) == []
    path = tmp_path / logs.FINETUNED_FILE
    for content, problem in [
            (b'', 'empty file'), (b'[{', 'truncated or invalid JSON'),
            (b'{}', 'not a record of fine-tuned evaluations'),
            (b'[1]', 'entry 0 is not a JSON object'),
            (b'[{"epoch": 1, "iteration": 2, "finetune_batches": 3}]',
             'entry 0 has no numeric "accuracy"'),
            (b'[{"epoch": 1, "iteration": 2, "finetune_batches": true, '
             b'"accuracy": 0.5}]', 'entry 0 has no numeric '
             '"finetune_batches"')]:
        path.write_bytes(content)
        with pytest.raises(logs.LogError) as error:
            logs.load_finetuned(str(tmp_path))
        assert str(error.value).startswith(str(path) + ': ')
        assert problem in str(error.value)


def test_record_written_atomically_and_marks_a_run(tmp_path):
    out = tmp_path / 'run'
    out.mkdir()
    (out / logs.FINETUNED_FILE).write_text('[]')
    assert rundir.run_files(str(out)) == [logs.FINETUNED_FILE]
    (out / (logs.FINETUNED_FILE + '.tmp')).write_text('[{"ep')
    assert rundir.remove_temporaries(str(out)) == [
        logs.FINETUNED_FILE + '.tmp']


def test_compare_and_study_report_read_finetuned_runs(data, runs, tmp_path,
                                                      capsys):
    # Two seeds of one row, fine-tuned differently (a run-specific setting).
    base = tmp_path / 'study' / 'BN-2'
    _train(data, base / 'seed0', '--preset', 'BN-2', '-e', '1')
    _train(data, base / 'seed1', '--preset', 'BN-2', '-e', '1',
           '--seed', '1', '--finetune-batches', '2')
    capsys.readouterr()
    assert compare.main([str(base / 'seed0'), str(base / 'seed1')]) == 0
    assert study.main(['report', str(tmp_path / 'study')]) == 0
    assert 'BN-2' in capsys.readouterr().out


def test_study_resumes_a_run_not_yet_finetuned(data, tmp_path):
    out = tmp_path / 'study'
    run = out / 'BN-2' / 'seed0'
    _train(data, run, '--preset', 'BN-2', '-e', '1', '--seed', '0',
           '--finetune-batches', '2')
    assert study.PlannedRun(str(out), 'BN-2', 0).state == 'finished'
    os.remove(str(run / logs.FINETUNED_FILE))
    planned = study.PlannedRun(str(out), 'BN-2', 0)
    assert (planned.state, planned.start_epoch, planned.snapshot) == (
        'resume', 1, str(run / 'snapshot_epoch_1'))
    # A record of another epoch or setting is not this run's last.
    rundir.write_json(str(run / logs.FINETUNED_FILE), [dict(
        epoch=1, iteration=5, finetune_batches=3, accuracy=0.1)])
    assert study.PlannedRun(str(out), 'BN-2', 0).state == 'resume'


def _mpiexec(argv):
    """``mpiexec -n 2 train_cifar.py --communicator naive`` (skipped
    without Open MPI and mpi4py)."""
    test_runs_mpi._mpiexec('train_cifar.py', ['--no-progress'] + argv)


def test_two_workers_finetune_and_resume(data, tmp_path):
    """Under ChainerMN every worker fine-tunes its share (MN's population
    fit all-reduces); worker 0 records; a resume only fine-tunes, alike."""
    common = ['--data', data, '--widths', '4,8,8,8', '-b', '4', '-e', '1',
              '--seed', '2'] + MN
    _mpiexec(common + ['-o', str(tmp_path / 'a'), '--finetune-batches',
                       '3'])
    entry, = _records(tmp_path / 'a')
    assert (entry['n_workers'], entry['batchsize'], entry['epoch'],
            entry['iteration'], entry['finetune_batches'],
            entry['n_images']) == (2, 4, 1, 5, 3, 20)
    _mpiexec(common + ['-o', str(tmp_path / 'b')])
    assert _records(tmp_path / 'b') == []
    _mpiexec(['-r', str(tmp_path / 'b'), '--finetune-batches', '3'])
    resumed, = _records(tmp_path / 'b')
    assert _results(resumed) == _results(entry)
    assert _log(tmp_path / 'b') == _log(tmp_path / 'a')
