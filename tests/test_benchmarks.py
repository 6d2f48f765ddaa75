"""Smoke runs of the BN vs MN benchmarks on tiny shapes (issue 19).

The benchmarks' numbers are only meaningful at their real sizes; these runs
check that the commands work end to end and report what they promise: both
forms of the layer with time and memory ratios (``bench_layer``), and the
interleaved epoch with the norm layers' breakdown (``bench_epoch``).
"""
import json
import os
import sys

import numpy
import pytest

import cifar_files


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks')


@pytest.fixture
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import bench_epoch
    import bench_layer
    import interleave
    return bench_layer, bench_epoch, interleave


def test_interleaved_alternates_and_reverses(benchmarks):
    _, _, interleave = benchmarks
    calls = []
    times = interleave.interleaved(
        [lambda: calls.append('a'), lambda: calls.append('b')], 3,
        lambda: None, warmup=1)
    assert calls == ['a', 'b', 'b', 'a', 'a', 'b', 'b', 'a']
    assert [len(t) for t in times] == [3, 3]
    assert interleave.median_ratio([2., 6., 4.], [1., 2., 4.]) == 2.


def test_bench_layer_reports_both_forms_with_memory(benchmarks, capsys):
    bench_layer, _, _ = benchmarks
    bench_layer.main(['--batches', '16', '--channels', '32', '--components',
                      '2', '--sample-ratios', '1.0', '--repeats', '2',
                      '--clock', 'cpu', '--markdown'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith('| Eq.')]
    forms = [row.split('|')[1].strip() for row in rows]
    assert forms == ['Eq. 34', 'Eq. 40']
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        bn_mib, mn_mib, ratio = (float(c) for c in cells[-3:])
        assert bn_mib > 0 and mn_mib > 0
        assert ratio == pytest.approx(mn_mib / bn_mib, rel=0.2)
    assert 'Eq. 40: worst MN/BN at K=2' in out


def test_bench_epoch_small_cnn(benchmarks, tmp_path, capsys):
    _, bench_epoch, _ = benchmarks
    data = str(tmp_path / 'cifar.npz')
    cifar_files.write_tiny_cifar(data, n_train=24, n_test=8)
    out_json = str(tmp_path / 'epoch.json')
    bench_epoch.main(['--data', data, '--train-subset', '20', '-b', '8',
                      '--widths', '4,4,8,8', '--warmup', '1',
                      '--layer-reps', '2', '--control', '--out', out_json])
    out = capsys.readouterr().out
    assert 'MN/BN of the epoch' in out and 'conv3' in out
    with open(out_json) as f:
        report = json.load(f)
    assert report['steps'] == 3  # 8 + 8 + 4 images
    assert report['widths'] == [4, 4, 8, 8]
    for name in ('BN', 'MN', 'BN*'):
        assert len(report['results'][name]['seconds_per_step']) == 3
    assert report['results']['MN']['epoch_ratio'] == pytest.approx(
        sum(report['results']['MN']['seconds_per_step'])
        / sum(report['results']['BN']['seconds_per_step']))
    layer, = report['layers']
    assert layer['name'] == 'conv3' and len(layer['mn']) == 2
    assert 0 < layer['fit'] < numpy.median(layer['mn'])


def test_bench_epoch_refuses_two_bn_presets(benchmarks, capsys):
    _, bench_epoch, _ = benchmarks
    with pytest.raises(SystemExit) as e:
        bench_epoch.main(['--mn', 'BN-2'])
    assert e.value.code == 2
    assert 'MN preset' in capsys.readouterr().err


def teardown_module():
    for name in ('bench_epoch', 'bench_layer', 'interleave'):
        sys.modules.pop(name, None)
