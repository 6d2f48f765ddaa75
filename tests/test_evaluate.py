"""mn-evaluate (python -m mn_chainer.evaluate): queue vs population inference
of a run."""
import importlib.metadata
import json
import os
import random
import subprocess
import sys

import numpy
import pytest

import chainer
import chainer.links as L

import cifar_files
import mn_chainer.datasets
from mn_chainer import evaluate
import mn_chainer.links as ML
import models


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_dir(tmp_path, mn_layers=('conv3',), name='run'):
    """A run directory as train_cifar.py leaves it: args.json, snapshots."""
    data = cifar_files.write_tiny_cifar(tmp_path / 'tiny.npz', 48, 20)
    out = tmp_path / name
    out.mkdir()
    settings = dict(model='cifar_cnn', dataset='cifar10', data=data,
                    n_class=10, widths=[4, 8, 8, 8], batchsize=16, seed=3,
                    norm='mn' if mn_layers else 'bn',
                    mn_layers=list(mn_layers), n_components=2, em_iter=2,
                    mn_relu=True, train_subset=None, test_subset=None)
    (out / 'args.json').write_text(json.dumps(settings))
    model = L.Classifier(models.get_model_from_settings(settings))
    train, _, _ = mn_chainer.datasets.get_cifar(data=data, seed=3)
    for epoch in (1, 2):
        for i in range(0, 48, 16):
            model(*chainer.dataset.concat_examples(train[i:i + 16]))
        target = chainer.serializers.DictionarySerializer()
        model.serialize(target['updater']['model:main'])
        with open(str(out / 'snapshot_epoch_{}'.format(epoch)), 'wb') as f:
            numpy.savez(f, **target.target)  # no .npz added
    return str(out), model


def _accuracy(predictor, test):
    x, t = chainer.dataset.concat_examples(test[:])
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        return float((predictor(x).array.argmax(axis=1) == t).mean())


def test_queue_and_population_inference(tmp_path):
    run_dir, trained = _run_dir(tmp_path)
    result = evaluate.evaluate_run(run_dir)
    assert result['snapshot'] == os.path.join(run_dir, 'snapshot_epoch_2')
    _, test, _ = mn_chainer.datasets.get_cifar(data=str(
        tmp_path / 'tiny.npz'), seed=3)
    # Queue: the trained model as saved.
    queue = result['queue']
    assert queue['n_images'] == 20 and queue['seconds'] > 0
    assert queue['accuracy'] == pytest.approx(_accuracy(trained.predictor,
                                                        test))
    # Population: one pass over the 48 training images, 3 batches of 16.
    population = result['population']
    assert population['finetune_batches'] == 3
    # ...is the trained model after finetune() on the run's training split
    # (augmented, in the run's seeded order).
    model, _, _ = evaluate.load_run(run_dir)
    train, test, _ = mn_chainer.datasets.get_cifar(data=str(
        tmp_path / 'tiny.npz'), seed=3)
    random.seed(3)
    ML.finetune(model, chainer.iterators.SerialIterator(
        train, 16, repeat=False, order_sampler=chainer.iterators.
        ShuffleOrderSampler(numpy.random.RandomState(3))))
    assert model.predictor.conv3.bn.population_points == 48 * 7 * 7
    direct = evaluate.classify(model.predictor, test, 16,
                               chainer.get_device('@numpy'))
    assert (population['accuracy'], population['loss']) == (
        direct['accuracy'], direct['loss'])
    assert population['loss'] != pytest.approx(queue['loss'])


def test_finetune_batches_and_rules(tmp_path):
    run_dir, _ = _run_dir(tmp_path, mn_layers=())  # a BN run
    result = evaluate.evaluate_run(run_dir, inference=['population'],
                                   finetune_batches=5, batchsize=8)
    assert 'queue' not in result
    assert result['population']['finetune_batches'] == 5


def test_command_line(tmp_path, capsys):
    runs = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        runs.append(_run_dir(tmp_path / str(i))[0])
    out = str(tmp_path / 'results.json')
    results, summary = evaluate.run(runs + ['--json', out])
    printed = capsys.readouterr().out
    assert printed.count('population') == 3 and '2 runs, queue' in printed
    with open(out) as f:
        saved = json.load(f)
    assert [r['run'] for r in saved['runs']] == runs
    accuracy = [r['queue']['accuracy'] for r in results]
    numpy.testing.assert_allclose(summary['queue']['accuracy'],
                                  (numpy.mean(accuracy),
                                   numpy.std(accuracy, ddof=1)))


@pytest.mark.parametrize('case', ['no_args', 'no_snapshot', 'corrupt',
                                  'two_with_snapshot', 'bad_rule'])
def test_errors_are_one_line(tmp_path, case):
    run_dir, _ = _run_dir(tmp_path)
    argv = [run_dir]
    if case == 'no_args':
        os.remove(os.path.join(run_dir, 'args.json'))
    elif case == 'no_snapshot':
        for name in os.listdir(run_dir):
            if name.startswith('snapshot'):
                os.remove(os.path.join(run_dir, name))
    elif case == 'corrupt':
        with open(os.path.join(run_dir, 'snapshot_epoch_2'), 'wb') as f:
            f.write(b'PK\x03\x04 truncated')
    elif case == 'two_with_snapshot':
        argv = [run_dir, run_dir, '--snapshot', 'x']
    else:
        argv = [run_dir, '--inference', 'median']
    result = subprocess.run(
        [sys.executable, '-m', 'mn_chainer.evaluate'] + argv, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=120)
    status, needle = {
        'no_args': (1, 'args.json'), 'no_snapshot': (1, 'no snapshot'),
        'corrupt': (1, 'snapshot_epoch_2: cannot load'),
        'two_with_snapshot': (2, '--snapshot'),
        'bad_rule': (2, 'median')}[case]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert needle in lines[-1] and 'Traceback' not in result.stderr


def test_console_script(tmp_path, capsys):
    entries = [e for e in importlib.metadata.entry_points(
        group='console_scripts') if e.name == 'mn-evaluate']
    if not entries:
        pytest.skip('mn-chainer is not installed (pip install -e .)')
    assert entries[0].value == 'mn_chainer.evaluate:main'
    main = entries[0].load()
    run_dir, _ = _run_dir(tmp_path)
    # The exit status of the console script's sys.exit(main()).
    assert main([run_dir, '--inference', 'queue']) == 0
    assert ' queue ' in capsys.readouterr().out
    with pytest.raises(SystemExit) as status:
        main([run_dir, '--snapshot', str(tmp_path / 'none')])
    assert status.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith('mn-evaluate: error: ') and 'none' in \
        error[-1]
    script = os.path.join(os.path.dirname(sys.executable), 'mn-evaluate')
    if os.path.exists(script):
        result = subprocess.run([script, '--help'], stdout=subprocess.PIPE,
                                universal_newlines=True, timeout=120)
        assert result.returncode == 0
        assert result.stdout.startswith('usage: mn-evaluate')
