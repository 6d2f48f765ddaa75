"""Tests of ``mn-study``: statistics, report and the study runner.

The statistics are checked against values computed by hand (the
t-quantiles are the printed table values); the report reads tiny
hand-written run directories; ``run`` is driven with a fake trainer (a
script that writes what ``train_cifar.py`` writes) and, once, with the real
trainer on a few dozen CIFAR-10 images.
"""
import csv
import io
import json
import math
import os
import statistics

import numpy
import pytest

from mn_chainer import plot
from mn_chainer import stats
from mn_chainer import study

T975_DF2 = 4.302653   # Student t, 97.5% quantile, 2 degrees of freedom
T975_DF4 = 2.776445   # 4 degrees of freedom

UPDATES_PER_EPOCH = 32

# Test accuracies (fractions) of 4-epoch runs, per seed.
BN = {0: [0.40, 0.50, 0.55, 0.52],
      1: [0.42, 0.48, 0.56, 0.58],
      2: [0.38, 0.52, 0.50, 0.54]}
MN = {0: [0.45, 0.55, 0.60, 0.58],
      1: [0.40, 0.57, 0.59, 0.61],
      2: [0.44, 0.50, 0.58, 0.57]}


# ---------------------------------------------------------------------------
# Statistics


def test_mean_se_by_hand():
    est = stats.mean_se([1.0, 2.0, 3.0, 4.0])
    # deviations -1.5 -0.5 0.5 1.5: sum of squares 5, sample var 5/3
    assert est.n == 4
    assert est.mean == pytest.approx(2.5)
    assert est.se == pytest.approx(math.sqrt(5.0 / 3.0) / 2.0)


def test_mean_se_one_and_no_value():
    assert stats.mean_se([0.7]) == (0.7, None, 1)
    assert stats.mean_se([]) == (None, None, 0)


def test_mean_se_columns():
    mean, se = stats.mean_se_columns([[1.0, 10.0], [3.0, 10.0]])
    numpy.testing.assert_allclose(mean, [2.0, 10.0])
    # sample std of (1, 3) is sqrt(2); / sqrt(2) = 1
    numpy.testing.assert_allclose(se, [1.0, 0.0])
    mean, se = stats.mean_se_columns([[0.5, 0.6]])
    numpy.testing.assert_allclose(mean, [0.5, 0.6])
    assert se is None
    with pytest.raises(ValueError, match='runs, points'):
        stats.mean_se_columns(numpy.zeros((0, 3)))


def test_t_interval_by_hand():
    low, high = stats.t_interval(1.0, 0.5, 5)
    assert low == pytest.approx(1.0 - T975_DF4 * 0.5, rel=1e-6)
    assert high == pytest.approx(1.0 + T975_DF4 * 0.5, rel=1e-6)
    assert stats.t_interval(1.0, None, 1) is None
    with pytest.raises(ValueError, match='confidence'):
        stats.t_interval(1.0, 0.5, 5, confidence=1.0)


def test_paired_difference_shared_seeds_only():
    a = {0: 0.50, 1: 0.60, 2: 0.70, 3: 0.40}
    b = {0: 0.40, 1: 0.50, 2: 0.65, 4: 0.10}
    diff = stats.paired_difference(a, b)
    # pairs: 0.10, 0.10, 0.05; mean 0.25/3; deviations 1/60, 1/60, -1/30
    mean = 0.25 / 3
    sd = math.sqrt(((1 / 60.) ** 2 * 2 + (1 / 30.) ** 2) / 2)
    se = sd / math.sqrt(3)
    assert diff.n == 3 and diff.seeds == [0, 1, 2]
    assert diff.only_a == [3] and diff.only_b == [4]
    assert diff.mean == pytest.approx(mean)
    assert diff.se == pytest.approx(se)
    assert diff.low == pytest.approx(mean - T975_DF2 * se, rel=1e-6)
    assert diff.high == pytest.approx(mean + T975_DF2 * se, rel=1e-6)


def test_paired_difference_one_and_no_pair():
    one = stats.paired_difference({0: 0.5, 1: 0.6}, {1: 0.4})
    assert one.n == 1 and one.mean == pytest.approx(0.2)
    assert (one.se, one.low, one.high) == (None, None, None)
    none = stats.paired_difference({0: 0.5}, {1: 0.4})
    assert none.n == 0 and none.mean is None and none.low is None
    assert none.only_a == [0] and none.only_b == [1]


def test_windowed_mean_and_first_reach():
    assert stats.windowed_mean([1, 2, 3, 4, 5], 3) == pytest.approx(4.0)
    assert stats.windowed_mean([1, 2], 3) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        stats.windowed_mean([], 3)
    with pytest.raises(ValueError):
        stats.windowed_mean([1.0], 0)
    assert stats.first_reach([10, 20, 30], [0.2, 0.5, 0.6], 0.5) == 20
    assert stats.first_reach([10, 20, 30], [0.2, 0.5, 0.6], 0.7) is None


# ---------------------------------------------------------------------------
# Report on hand-written run directories


def write_run(directory, accs, row, seed, epoch=None, **settings):
    """A run directory as train_cifar.py writes it (log and args.json)."""
    os.makedirs(str(directory), exist_ok=True)
    log = [{'epoch': e, 'iteration': e * UPDATES_PER_EPOCH,
            'main/loss': 1.0, 'validation/main/accuracy': a,
            'elapsed_time': 2.0 * e} for e, a in enumerate(accs, 1)]
    with open(os.path.join(str(directory), 'log'), 'w') as f:
        json.dump(log, f)
    args = {'model': 'cifar_cnn', 'dataset': 'cifar10',
            'preset': 'table2:' + row, 'table': 'table2', 'row': row,
            'norm': 'mn' if row.startswith('MN') else 'bn',
            'mn_layers': ['conv3'] if row.startswith('MN') else [],
            'lr': 0.01, 'batchsize': 128, 'epoch': epoch or len(accs),
            'train_subset': 4096, 'n_train': 4096, 'seed': seed,
            'out': str(directory), 'device': '-1',
            'pixel_mean': [seed, 0.0, 0.0]}
    args.update(settings)
    with open(os.path.join(str(directory), 'args.json'), 'w') as f:
        json.dump(args, f)
    return str(directory)


def write_study(root, bn=BN, mn=MN):
    for seed, accs in bn.items():
        write_run(os.path.join(str(root), 'BN-2', 'seed{}'.format(seed)),
                  accs, 'BN-2', seed)
    for seed, accs in mn.items():
        write_run(os.path.join(str(root), 'MN-2', 'seed{}'.format(seed)),
                  accs, 'MN-2', seed)
    return str(root)


def summarize(paths, **kwargs):
    runs = [study.load_study_run(p) for p in study.find_run_dirs(paths)]
    groups, _ = study.group_runs(runs)
    return study.StudySummary(groups, **kwargs)


def test_summary_by_hand(tmp_path):
    s = summarize([write_study(tmp_path)])
    assert list(s.groups) == ['BN-2', 'MN-2']
    assert s.baseline.name == 'BN-2'
    bn, mn = s.groups['BN-2'], s.groups['MN-2']
    assert bn.seeds == [0, 1, 2]
    # Windowed metric: mean of each run's last 3 evaluations.
    assert bn.windowed[0] == pytest.approx((0.50 + 0.55 + 0.52) / 3)
    assert mn.windowed[2] == pytest.approx((0.50 + 0.58 + 0.57) / 3)
    best = bn.estimate('best')
    assert best.mean == pytest.approx((0.55 + 0.58 + 0.54) / 3)
    assert best.se == pytest.approx(
        statistics.stdev([0.55, 0.58, 0.54]) / math.sqrt(3))
    # Per-evaluation mean and SE over seeds.
    numpy.testing.assert_allclose(mn.curve_mean[1], (0.55 + 0.57 + 0.50) / 3)
    numpy.testing.assert_allclose(
        mn.curve_se[1], statistics.stdev([0.55, 0.57, 0.50]) / math.sqrt(3))

    c, = s.comparisons
    diffs = [(0.55 + 0.60 + 0.58 - 0.50 - 0.55 - 0.52) / 3,
             (0.57 + 0.59 + 0.61 - 0.48 - 0.56 - 0.58) / 3,
             (0.50 + 0.58 + 0.57 - 0.52 - 0.50 - 0.54) / 3]
    se = statistics.stdev(diffs) / math.sqrt(3)
    assert c.windowed.mean == pytest.approx(statistics.mean(diffs))
    assert c.windowed.se == pytest.approx(se)
    assert c.windowed.low == pytest.approx(
        statistics.mean(diffs) - T975_DF2 * se, rel=1e-6)
    best_diffs = [0.60 - 0.55, 0.61 - 0.58, 0.58 - 0.54]
    assert c.best.mean == pytest.approx(statistics.mean(best_diffs))
    assert c.best.se == pytest.approx(
        statistics.stdev(best_diffs) / math.sqrt(3))

    # Updates to reach BN's mean best accuracy (0.5567): BN seed 1 at
    # epoch 3 only; MN seeds 0, 2 at epoch 3, seed 1 at epoch 2.
    assert s.target == pytest.approx((0.55 + 0.58 + 0.54) / 3)
    assert s.baseline_reach == {0: None, 1: 96, 2: None}
    assert c.reach == {0: 96, 1: 64, 2: 96}
    est, never = study.reach_estimate(c.reach)
    assert (est.n, never) == (3, 0)
    assert est.mean == pytest.approx(256 / 3.)
    assert est.se == pytest.approx(
        statistics.stdev([96, 64, 96]) / math.sqrt(3))


def _csv_tables(text):
    blocks = [b for b in text.strip().split('\n\n') if b.strip()]
    return [list(csv.DictReader(io.StringIO(b))) for b in blocks]


def test_report_csv_numbers(tmp_path):
    out = study.report([write_study(tmp_path)], fmt='csv')
    summary, curves, paired, reach = _csv_tables(out)
    row = {r['group']: r for r in summary}
    assert row['MN-2']['seeds'] == '3'
    assert float(row['BN-2']['best_mean']) == pytest.approx(
        100 * (0.55 + 0.58 + 0.54) / 3, rel=1e-5)
    assert float(row['BN-2']['best_se']) == pytest.approx(
        100 * statistics.stdev([0.55, 0.58, 0.54]) / math.sqrt(3), rel=1e-5)
    assert [int(r['epoch']) for r in curves] == [1, 2, 3, 4]
    assert [int(r['updates']) for r in curves] == [32, 64, 96, 128]
    assert float(curves[0]['MN-2_mean']) == pytest.approx(
        100 * (0.45 + 0.40 + 0.44) / 3, rel=1e-5)
    assert [r['metric'] for r in paired] == ['last 3 evals', 'best']
    assert float(paired[1]['diff_mean']) == pytest.approx(
        100 * (0.05 + 0.03 + 0.04) / 3, rel=1e-5)
    reach_rows = {r['group']: r for r in reach}
    assert reach_rows['BN-2']['reached'] == '1'
    assert reach_rows['BN-2']['never'] == '2'
    assert reach_rows['BN-2']['updates_se'] == ''   # one run: undefined
    assert float(reach_rows['MN-2']['reduction']) == pytest.approx(
        100 * (1 - (256 / 3.) / 96), rel=1e-5)
    # The paper's Table III: MN-2 1.34 vs BN-2 1.95 x1e4 updates.
    assert float(reach_rows['MN-2']['paper_reduction']) == pytest.approx(
        100 * (1 - 1.34 / 1.95), rel=1e-5)


@pytest.mark.parametrize('fmt', ['text', 'markdown'])
def test_report_text_one_seed_group(tmp_path, fmt):
    root = write_study(tmp_path, mn={1: MN[1]})
    out = study.report([root], fmt=fmt)
    assert 'nan' not in out.lower()
    assert 'MN-2: one seed: standard errors and intervals are undefined' \
        in out
    assert '59.00 ± n/a' in out   # MN-2 seed 1's windowed metric
    # One shared seed (1): the difference without SE or interval.
    diff = 100 * ((0.57 + 0.59 + 0.61) - (0.48 + 0.56 + 0.58)) / 3
    assert '{:+.2f}'.format(diff) in out
    assert 'one pair: SE and interval undefined' in out
    assert 'left out: BN-2 only: 0 2' in out


def test_report_unequal_seed_sets(tmp_path):
    root = write_study(tmp_path, mn={0: MN[0], 1: MN[1], 5: MN[2]})
    s = summarize([root])
    c, = s.comparisons
    assert c.windowed.seeds == [0, 1]
    assert c.windowed.only_a == [5] and c.windowed.only_b == [2]
    out = study.report([root])
    assert 'only shared seeds are paired; left out: MN-2 only: 5; BN-2 ' \
           'only: 2' in out


def test_report_run_dirs_as_arguments(tmp_path):
    root = write_study(tmp_path)
    paths = [os.path.join(root, 'BN-2', 'seed0'),
             os.path.join(root, 'MN-2', 'seed1')]
    s = summarize(paths)
    assert [g.seeds for g in s.groups.values()] == [[0], [1]]


def test_report_setting_differs_in_group(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0], 'MN-2', 3,
              lr=0.05)
    with pytest.raises(study.StudyError, match=r"group MN-2: its runs "
                       r"differ in setting 'lr': 0\.01 in .*; 0\.05 in "
                       r".*seed3"):
        study.report([root])


def test_report_seeds_devices_and_outputs_may_differ(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0], 'MN-2', 3,
              device='@cupy:0', data='/elsewhere/cifar10.npz',
              resume='x/snapshot_epoch_2')
    assert summarize([root]).groups['MN-2'].seeds == [0, 1, 2, 3]


def test_report_planned_lengths_differ(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0] + [0.6], 'MN-2', 3)
    with pytest.raises(study.StudyError, match="differ in setting 'epoch'"):
        study.report([root])


def test_report_evaluations_differ(tmp_path):
    root = write_study(tmp_path)
    path = write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0], 'MN-2', 3)
    with open(os.path.join(path, 'log')) as f:
        log = json.load(f)
    for e in log:
        e['iteration'] += 1
    with open(os.path.join(path, 'log'), 'w') as f:
        json.dump(log, f)
    with pytest.raises(study.StudyError, match='runs of different lengths'):
        study.report([root])


def test_report_incomplete_run(tmp_path):
    root = write_study(tmp_path)
    path = write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0][:2],
                     'MN-2', 3, epoch=4)
    with pytest.raises(study.StudyError, match=r'seed3: incomplete: its log '
                       r'ends at epoch 2 of 4 .*--skip-incomplete'):
        study.report([root])
    out = study.report([root], skip_incomplete=True)
    assert 'left out (incomplete, log ends at epoch 2 of 4): ' + path in out
    assert '| 3 |' not in out


def test_report_duplicate_seed(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(str(tmp_path), 'copy'), BN[0], 'BN-2', 0)
    with pytest.raises(study.StudyError, match='group BN-2: seed 0 twice'):
        study.report([root])


def test_report_baselines(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'BN-1', 'seed0'), BN[0], 'BN-1', 0,
              lr=0.05)
    with pytest.raises(study.StudyError, match=r'several BN groups '
                       r'\(BN-1, BN-2\): give --baseline'):
        study.report([root])
    out = study.report([root], baseline='BN-1')
    assert "the groups differ in 'lr': 0.05 in BN-1; 0.01 in BN-2, MN-2" \
        in out
    assert "Paired difference against BN-1" in out
    with pytest.raises(study.StudyError, match='no such group'):
        study.report([root], baseline='BN-7')


def test_report_without_bn_group(tmp_path):
    root = write_study(tmp_path, bn={})
    out = study.report([root])
    assert 'no BN group: no paired differences' in out
    assert 'Paired' not in out


def test_report_cli_errors(tmp_path, capsys):
    root = write_study(tmp_path / 's')
    with open(os.path.join(root, 'MN-2', 'seed1', 'log'), 'w') as f:
        f.write('[{"epoch": 1, "iter')
    capsys.readouterr()
    assert study.main(['report', root]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith('mn-study: error: ')
    assert os.path.join(root, 'MN-2', 'seed1', 'log') in err[0]
    assert 'truncated' in err[0]


def test_report_cli_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        study.main(['report', str(tmp_path / 'missing')])
    assert e.value.code == 2
    assert 'missing: not a directory' in capsys.readouterr().err
    root = write_study(tmp_path / 's')
    for argv in (['--window', '0'], ['--confidence', '1.5']):
        with pytest.raises(SystemExit) as e:
            study.main(['report', root] + argv)
        assert e.value.code == 2
    os.makedirs(str(tmp_path / 'empty'))
    assert study.main(['report', str(tmp_path / 'empty')]) == 1
    assert 'no run directories' in capsys.readouterr().err


def test_report_plot(tmp_path):
    root = write_study(tmp_path / 's')
    png = str(tmp_path / 'curves.png')
    study.report([root], plot=png)
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


# ---------------------------------------------------------------------------
# mn-plot curves with groups (Fig. 2 with seeds)


def _logs(accs_by_seed):
    return [('seed{}'.format(s), [
        {'epoch': e, 'iteration': 32 * e, 'validation/main/accuracy': a}
        for e, a in enumerate(accs, 1)]) for s, accs in accs_by_seed.items()]


def test_group_error_curves_by_hand():
    runs = _logs(BN) + _logs({1: MN[1]})
    curves = plot.group_error_curves(runs, ['BN'] * 3 + ['MN'])
    assert list(curves) == ['BN', 'MN']
    epochs, errors, mean, se = curves['BN']
    numpy.testing.assert_array_equal(epochs, [1, 2, 3, 4])
    numpy.testing.assert_allclose(errors[2], [62, 48, 50, 46])
    numpy.testing.assert_allclose(mean[0], 100 - (40 + 42 + 38) / 3.)
    numpy.testing.assert_allclose(
        se[3], statistics.stdev([48, 42, 46]) / math.sqrt(3))
    epochs, errors, mean, se = curves['MN']
    numpy.testing.assert_allclose(mean, [60, 43, 41, 39])
    assert se is None


def test_group_error_curves_refuse_misaligned_runs():
    runs = _logs({0: BN[0], 1: BN[1][:3]})
    with pytest.raises(ValueError, match='group BN: its runs are evaluated '
                       'at different epochs: seed0 at 4 epochs, seed1 at 3'):
        plot.group_error_curves(runs, ['BN', 'BN'])
    with pytest.raises(ValueError, match='one group per run'):
        plot.group_error_curves(runs, ['BN'])


def test_plot_curves_cli_groups(tmp_path, capsys):
    root = write_study(tmp_path / 's', mn={1: MN[1]})
    dirs = study.find_run_dirs([root])
    png = tmp_path / 'groups.png'
    assert plot.main(['curves'] + dirs + ['--group-by', 'row', '-o',
                                          str(png)]) == 0
    with open(str(png), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert plot.main(['curves'] + dirs + ['--groups', 'a', 'a', 'a', 'b',
                                          '-o', str(png)]) == 0
    with pytest.raises(SystemExit) as e:
        plot.main(['curves'] + dirs + ['--groups', 'a', '-o', str(png)])
    assert e.value.code == 2
    assert '--groups needs one group per run' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        plot.main(['curves'] + dirs + ['--group-by', 'colour', '-o',
                                       str(png)])
    assert e.value.code == 1
    assert "no 'colour' in its args.json" in capsys.readouterr().err
