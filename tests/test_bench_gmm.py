"""Smoke runs of ``benchmarks/bench_gmm.py`` on tiny shapes (issue 19).

Its numbers are only meaningful at the benchmark's sizes; these runs check
that the command works end to end and reports what it promises: both
comparisons (ours float32 against scikit-learn float64, and equal
precision), which passes ran, the threads, the rest before every timed fit,
and clear usage errors.
"""
import os
import time

import pytest

pytest.importorskip('sklearn')

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'benchmarks')


@pytest.fixture
def bench_gmm(monkeypatch):
    monkeypatch.syspath_prepend(BENCHMARKS)
    import bench_gmm
    return bench_gmm


TINY = ['--points', '64', '--dims', '5', '--components', '2',
        '--repeats', '1', '--ll-seeds', '2']


def test_tiny_run_reports_both_comparisons(bench_gmm, capsys, monkeypatch):
    monkeypatch.delenv('MN_CHAINER_CPU_THREADS', raising=False)
    bench_gmm.main(TINY + ['--settle', '0', '--threads', '1'])
    out = capsys.readouterr().out
    assert 'scikit-learn given float32 points ran in float32' in out
    assert 'scikit-learn given float64 points ran in float64' in out
    assert 'our CPU passes: ' in out
    assert 'each after 0 s at rest' in out
    for line in ('speed-up ours float32 vs sklearn float64',
                 'speed-up ours float32 vs sklearn float32',
                 'speed-up ours float64 vs sklearn float64',
                 'log-likelihood ours float64 - sklearn float64'):
        assert line in out
    # --threads caps our kernels as it caps BLAS.
    assert os.environ['MN_CHAINER_CPU_THREADS'] == '1'


def test_settle_rests_before_every_timed_fit(bench_gmm, monkeypatch):
    """Each timed fit, and only a timed one, follows the rest."""
    events = []
    monkeypatch.setattr(time, 'sleep', lambda s: events.append(('rest', s)))
    side = bench_gmm._Side(lambda arg: events.append(('fit', arg)) or arg,
                           bench_gmm._CPUTimer(), lambda result: 0.0)
    bench_gmm._run([side], repeats=2, n_seeds=3, settle=0.25)
    assert events == [('fit', 0), ('rest', 0.25), ('fit', 0),
                      ('rest', 0.25), ('fit', 1), ('fit', 2)]
    assert len(side.times) == 2 and len(side.lls) == 3


@pytest.mark.parametrize('argv', [['--settle', '-1'], ['--repeats', '0']])
def test_usage_errors(bench_gmm, argv, capsys):
    with pytest.raises(SystemExit) as error:
        bench_gmm.main(TINY + argv)
    assert error.value.code == 2
    assert argv[0] in capsys.readouterr().err
