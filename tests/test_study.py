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
import shutil
import signal
import subprocess
import sys
import statistics
import time
import zipfile

import numpy
import pytest

import mn_chainer.cli
import mn_chainer.logs
import mn_chainer.rundir
from mn_chainer import plot
from mn_chainer import stats
from mn_chainer import study
from mn_chainer import study_report

T975_DF2 = 4.302653   # Student t, 97.5% quantile, 2 degrees of freedom
T975_DF4 = 2.776445   # 4 degrees of freedom

UPDATES_PER_EPOCH = 32

CommandError = mn_chainer.cli.CommandError

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
    runs = [study_report.load_study_run(p)
            for p in study_report.find_run_dirs(paths)]
    groups, _ = study_report.group_runs(runs)
    return study_report.StudySummary(groups, **kwargs)


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
    est, never = study_report.reach_estimate(c.reach)
    assert (est.n, never) == (3, 0)
    assert est.mean == pytest.approx(256 / 3.)
    assert est.se == pytest.approx(
        statistics.stdev([96, 64, 96]) / math.sqrt(3))


def _csv_tables(text):
    blocks = [b for b in text.strip().split('\n\n') if b.strip()]
    return [list(csv.DictReader(io.StringIO(b))) for b in blocks]


def test_report_csv_numbers(tmp_path):
    out = study_report.report([write_study(tmp_path)], fmt='csv')
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
    out = study_report.report([root], fmt=fmt)
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
    out = study_report.report([root])
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
    with pytest.raises(CommandError, match=r"group MN-2: its runs "
                       r"differ in setting 'lr': 0\.01 in .*; 0\.05 in "
                       r".*seed3"):
        study_report.report([root])


def test_report_seeds_devices_and_outputs_may_differ(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0], 'MN-2', 3,
              device='@cupy:0', data='/elsewhere/cifar10.npz',
              resume='x/snapshot_epoch_2', resumes=[{'epoch': 2}],
              dump_mixtures=['conv3'])
    assert summarize([root]).groups['MN-2'].seeds == [0, 1, 2, 3]


def test_report_planned_lengths_differ(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0] + [0.6], 'MN-2', 3)
    with pytest.raises(CommandError, match="differ in setting 'epoch'"):
        study_report.report([root])


def test_report_groups_of_other_lengths(tmp_path):
    root = write_study(tmp_path, mn={s: a[:3] for s, a in MN.items()})
    out = study_report.report([root])
    assert "the groups differ in 'epoch': 4 in BN-2; 3 in MN-2" in out
    assert 'different numbers of updates per epoch' not in out
    assert '    4      128  54.67 ± 1.76      –' in out
    rows = _csv_tables(study_report.report([root], fmt='csv'))[1]
    assert rows[3]['epoch'] == '4' and rows[3]['MN-2_mean'] == ''
    # Another batch size: other updates per epoch, no shared column.
    root = write_study(tmp_path / 'b')
    write_run(os.path.join(root, 'MN-4', 'seed0'), MN[0], 'MN-4', 0,
              batchsize=256)
    path = os.path.join(root, 'MN-4', 'seed0', 'log')
    with open(path) as f:
        log = json.load(f)
    for e in log:
        e['iteration'] //= 2
    with open(path, 'w') as f:
        json.dump(log, f)
    out = study_report.report([root])
    assert ('the groups do different numbers of updates per epoch: BN-2 32, '
            'MN-2 32, MN-4 16') in out
    assert "the groups differ in 'batchsize': 128 in BN-2, MN-2; 256 in " \
        "MN-4" in out


def test_report_evaluations_differ(tmp_path):
    root = write_study(tmp_path)
    path = write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0], 'MN-2', 3)
    with open(os.path.join(path, 'log')) as f:
        log = json.load(f)
    for e in log:
        e['iteration'] += 1
    with open(os.path.join(path, 'log'), 'w') as f:
        json.dump(log, f)
    with pytest.raises(CommandError, match='runs of different lengths'):
        study_report.report([root])


def test_report_incomplete_run(tmp_path):
    root = write_study(tmp_path)
    path = write_run(os.path.join(root, 'MN-2', 'seed3'), MN[0][:2],
                     'MN-2', 3, epoch=4)
    with pytest.raises(CommandError, match=r'seed3: incomplete: its log '
                       r'ends at epoch 2 of 4 .*--skip-incomplete'):
        study_report.report([root])
    out = study_report.report([root], skip_incomplete=True)
    assert 'left out (incomplete, log ends at epoch 2 of 4): ' + path in out
    assert '| 3 |' not in out


def test_report_run_without_log_yet(tmp_path):
    root = write_study(tmp_path)
    path = write_run(os.path.join(root, 'MN-2', 'seed3'), [], 'MN-2', 3,
                     epoch=4)
    os.remove(os.path.join(path, 'log'))
    with pytest.raises(CommandError, match='seed3: incomplete: its log ends '
                       'at epoch 0 of 4'):
        study_report.report([root])


@pytest.mark.parametrize('seed', [None, '1', 1.0, True])
def test_report_seed_must_be_an_integer(tmp_path, seed):
    path = write_run(tmp_path / 'run', BN[0], 'BN-2', seed)
    with pytest.raises(CommandError, match=r'args\.json: "seed" is .*, not '
                       r'an integer'):
        study_report.report([path])


def test_report_duplicate_seed(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(str(tmp_path), 'copy'), BN[0], 'BN-2', 0)
    with pytest.raises(CommandError, match='group BN-2: seed 0 twice'):
        study_report.report([root])


def test_report_baselines(tmp_path):
    root = write_study(tmp_path)
    write_run(os.path.join(root, 'BN-1', 'seed0'), BN[0], 'BN-1', 0,
              lr=0.05)
    with pytest.raises(CommandError, match=r'several BN groups '
                       r'\(BN-1, BN-2\): give --baseline'):
        study_report.report([root])
    out = study_report.report([root], baseline='BN-1')
    assert "the groups differ in 'lr': 0.05 in BN-1; 0.01 in BN-2, MN-2" \
        in out
    assert "Paired difference against BN-1" in out
    with pytest.raises(CommandError, match='no such group'):
        study_report.report([root], baseline='BN-7')


def test_report_without_bn_group(tmp_path):
    root = write_study(tmp_path, bn={})
    out = study_report.report([root])
    assert 'no BN group: no paired differences' in out
    assert 'Paired' not in out


def _exit_status(argv):
    with pytest.raises(SystemExit) as e:
        study.main(argv)
    return e.value.code


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('mn-study: error: ')
    return err[0]


def test_report_cli_errors(tmp_path, capsys):
    root = write_study(tmp_path / 's')
    assert study.main(['report', root, '--format', 'csv']) == 0
    assert 'MN-2' in capsys.readouterr().out
    log = os.path.join(root, 'MN-2', 'seed1', 'log')
    with open(log, 'w') as f:
        f.write('[{"epoch": 1, "iter')
    assert _exit_status(['report', root]) == 1
    line = _one_error_line(capsys)
    assert log + ': truncated' in line


def test_report_cli_usage_errors(tmp_path, capsys):
    assert _exit_status(['report', str(tmp_path / 'missing')]) == 2
    assert 'missing: not a directory' in _one_error_line(capsys)
    root = write_study(tmp_path / 's')
    for argv in (['--window', '0'], ['--confidence', '1.5'],
                 ['--baseline', 'BN-7']):
        assert _exit_status(['report', root] + argv) == 2
        assert argv[0] in _one_error_line(capsys)
    os.makedirs(str(tmp_path / 'empty'))
    assert _exit_status(['report', str(tmp_path / 'empty')]) == 1
    assert 'no run directories' in _one_error_line(capsys)


def test_report_plot(tmp_path):
    root = write_study(tmp_path / 's')
    png = str(tmp_path / 'curves.png')
    study_report.report([root], plot=png)
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
    dirs = study_report.find_run_dirs([root])
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


# ---------------------------------------------------------------------------
# mn-study run with a fake trainer

FAKE_TRAINER = r'''
"""Writes what train_cifar.py writes: args.json, log, snapshot_epoch_<n>.

FAKE_CALLS: file to append each call to (argv, thread variables, pid).
FAKE_KILL=<row>/seed<k>:<epoch>: SIGKILL itself after that epoch.
FAKE_USAGE_ERROR=<row>: exit 2 at once for that preset.
FAKE_SLEEP: seconds per epoch.
"""
import argparse
import json
import os
import shutil
import signal
import sys
import time
import zipfile

parser = argparse.ArgumentParser()
for flag in ('--preset', '--out', '--resume', '--data'):
    parser.add_argument(flag)
parser.add_argument('--seed', type=int)
parser.add_argument('-e', '--epoch', type=int, default=3)
parser.add_argument('--no-progress', action='store_true')
args = parser.parse_args()
with open(os.environ['FAKE_CALLS'], 'a') as f:
    f.write(json.dumps({
        'argv': sys.argv[1:], 'pid': os.getpid(),
        'launched': os.environ.get('FAKE_LAUNCHED'),
        'threads': [os.environ.get(v) for v in (
            'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')],
    }) + '\n')
if os.environ.get('FAKE_USAGE_ERROR') == args.preset:
    print('fake: error: --preset {}: refused'.format(args.preset),
          file=sys.stderr)
    sys.exit(2)
name = '{}/seed{}'.format(args.preset, args.seed)


def write(path, obj):
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f)
    os.replace(path + '.tmp', path)


log = []
if args.resume:
    with open(args.resume) as f:
        log = json.load(f)
elif os.path.isdir(args.out) and os.listdir(args.out):
    sys.exit('fake: error: {} holds a run'.format(args.out))
os.makedirs(args.out, exist_ok=True)
mn = args.preset.startswith('MN')
write(os.path.join(args.out, 'args.json'), {
    'preset': 'table2:' + args.preset, 'table': 'table2',
    'row': args.preset, 'seed': args.seed, 'epoch': args.epoch,
    'norm': 'mn' if mn else 'bn', 'mn_layers': ['conv3'] if mn else [],
    'dataset': 'cifar10', 'out': args.out, 'resume': args.resume})
for epoch in range(len(log) + 1, args.epoch + 1):
    time.sleep(float(os.environ.get('FAKE_SLEEP', 0)))
    log.append({'epoch': epoch, 'iteration': 10 * epoch,
                'elapsed_time': 0.1 * epoch,
                'validation/main/accuracy': 0.3 + 0.05 * epoch
                + 0.01 * args.seed + 0.02 * mn})
    write(os.path.join(args.out, 'log'), log)
    write(os.path.join(args.out, 'snapshot_epoch_{}'.format(epoch)), log)
    if os.environ.get('FAKE_KILL') == '{}:{}'.format(name, epoch):
        os.kill(os.getpid(), signal.SIGKILL)
print('fake: done', name)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake trainer command; its calls are read with ``fake.calls()``.
    """
    script = tmp_path / 'fake_trainer.py'
    script.write_text(FAKE_TRAINER)
    calls = tmp_path / 'calls.jsonl'
    monkeypatch.setenv('FAKE_CALLS', str(calls))
    for name in ('FAKE_KILL', 'FAKE_USAGE_ERROR', 'FAKE_SLEEP',
                 'FAKE_LAUNCHED') + study.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    class Fake(object):
        command = [sys.executable, str(script)]

        @staticmethod
        def calls():
            if not calls.exists():
                return []
            with open(str(calls)) as f:
                return [json.loads(line) for line in f]

        @staticmethod
        def reset():
            if calls.exists():
                calls.unlink()
    return Fake


def run_study(out, fake, presets=('BN-2', 'MN-2'), seeds=(0, 1),
              flags=('-e', '3'), **kwargs):
    stdout = io.StringIO()
    runner = study.StudyRunner(str(out), list(presets), list(seeds),
                               list(flags), trainer=fake.command,
                               stdout=stdout, poll=0.02, **kwargs)
    try:
        status = runner.run()
    finally:
        run_study.output = stdout.getvalue()
    return status


def _epochs(run_dir):
    with open(os.path.join(str(run_dir), 'log')) as f:
        return [e['epoch'] for e in json.load(f)]


def test_run_trains_rows_x_seeds_then_skips(tmp_path, fake):
    out = tmp_path / 'study'
    assert run_study(out, fake) == 0
    lines = run_study.output.splitlines()
    assert lines[0].startswith('study {}: 4 runs (2 presets x 2 seeds): 0 '
                               'finished, 4 to start; 1 at a time'.format(
                                   out))
    names = ['BN-2/seed0', 'MN-2/seed0', 'BN-2/seed1', 'MN-2/seed1']
    for i, name in enumerate(names, 1):
        line, = [x for x in lines if x.startswith('[{}/4] {}: '.format(
            i, name))]
        assert 'finished in' in line and '(epochs 1-3 of 3;' in line
        assert 'run left' in line or 'runs left' in line
        assert 'ETA' in line
    assert lines[4].endswith('0 runs left, ETA 0s')
    calls = fake.calls()
    assert len(calls) == 4
    for call, name in zip(calls, names):
        row, seed = name.split('/seed')
        path = str(out / row / ('seed' + seed))
        assert call['argv'] == ['--preset', row, '--seed', seed, '--out',
                                path, '--no-progress', '-e', '3']
        assert _epochs(path) == [1, 2, 3]
        with open(path + '.out') as f:
            text = f.read()
        assert text.startswith('# mn-study ') and 'fake: done' in text
    assert call['threads'] == [None, None, None]   # -j 1: left alone
    with open(str(out / 'study.json')) as f:
        assert json.load(f) == {'trainer_flags': ['-e', '3'],
                                'runs': names}

    fake.reset()
    assert run_study(out, fake) == 0
    assert fake.calls() == []
    assert '4 finished, 0 to start' in run_study.output
    assert run_study.output.count('finished before, skipped') == 4
    # More seeds: only the new runs are trained.
    assert run_study(out, fake, seeds=(0, 1, 2)) == 0
    assert [c['argv'][:4] for c in fake.calls()] == [
        ['--preset', 'BN-2', '--seed', '2'],
        ['--preset', 'MN-2', '--seed', '2']]
    text = study_report.report([str(out)])
    assert 'BN-2       3  0 1 2' in text
    # MN's fake accuracy is BN's + 2 points at every epoch and seed.
    assert '+2.00               0.00  [+2.00, +2.00]' in text


def test_run_refuses_other_trainer_flags(tmp_path, fake):
    out = tmp_path / 'study'
    assert run_study(out, fake, seeds=(0,)) == 0
    with pytest.raises(mn_chainer.cli.UsageError, match=r'was run with '
                       r'trainer flags "-e 3", this command gives "-e 4"'):
        run_study(out, fake, seeds=(0,), flags=('-e', '4'))


def test_run_resumes_a_killed_run(tmp_path, fake, monkeypatch):
    out = tmp_path / 'study'
    monkeypatch.setenv('FAKE_KILL', 'MN-2/seed0:2')
    with pytest.raises(CommandError, match=r'^1 run failed: MN-2/seed0; 2 '
                       r'not started$'):
        run_study(out, fake)
    line, = [x for x in run_study.output.splitlines() if 'FAILED' in x]
    assert line.startswith('[2/4] MN-2/seed0: FAILED after ')
    assert ': exited with status -9: ' in line
    assert line.endswith('(output: {})'.format(out / 'MN-2' / 'seed0.out'))
    assert _epochs(out / 'MN-2' / 'seed0') == [1, 2]
    assert len(fake.calls()) == 2   # the study stopped at the failure

    monkeypatch.delenv('FAKE_KILL')
    fake.reset()
    assert run_study(out, fake) == 0
    assert ('1 finished, 1 to resume: MN-2/seed0 (epoch 2), 2 to start'
            in run_study.output)
    call, _, _ = fake.calls()
    assert call['argv'][-2:] == [
        '--resume', str(out / 'MN-2' / 'seed0' / 'snapshot_epoch_2')]
    assert _epochs(out / 'MN-2' / 'seed0') == [1, 2, 3]
    assert '(epochs 3-3 of 3;' in run_study.output


def test_run_stops_after_a_failure(tmp_path, fake, monkeypatch):
    monkeypatch.setenv('FAKE_USAGE_ERROR', 'BN-2')
    with pytest.raises(mn_chainer.cli.UsageError, match=r'^1 run failed: '
                       r'BN-2/seed0; 3 not started$'):
        run_study(tmp_path / 'a', fake)
    assert ('exited with status 2: fake: error: --preset BN-2: refused'
            in run_study.output)
    assert len(fake.calls()) == 1
    fake.reset()
    with pytest.raises(mn_chainer.cli.UsageError, match=r'^2 runs failed: '
                       r'BN-2/seed0, BN-2/seed1$'):
        run_study(tmp_path / 'b', fake, keep_going=True)
    assert len(fake.calls()) == 4
    assert _epochs(tmp_path / 'b' / 'MN-2' / 'seed1') == [1, 2, 3]


def test_run_restarts_a_run_without_snapshot(tmp_path, fake):
    out = tmp_path / 'study'
    stale = out / 'MN-2' / 'seed0'
    stale.mkdir(parents=True)
    (stale / 'args.json').write_text(json.dumps(
        {'preset': 'table2:MN-2', 'row': 'MN-2', 'seed': 0, 'epoch': 3}))
    assert run_study(out, fake, presets=('MN-2',), seeds=(0,)) == 0
    aside = out / '.aside' / 'MN-2-seed0-1'
    assert 'MN-2/seed0: interrupted before its first snapshot; moved to ' \
        '{}, starting again'.format(aside) in run_study.output
    assert sorted(os.listdir(str(aside))) == ['args.json']
    assert _epochs(stale) == [1, 2, 3]
    dirs = study_report.find_run_dirs([str(out)])
    assert dirs == [str(stale)]    # the moved run is not in the report


def test_run_refuses_a_directory_of_another_run(tmp_path, fake):
    other = tmp_path / 'study' / 'MN-2' / 'seed0'
    other.mkdir(parents=True)
    (other / 'args.json').write_text(json.dumps(
        {'preset': 'table2:MN-2', 'row': 'MN-2', 'seed': 5, 'epoch': 3}))
    with pytest.raises(CommandError, match='seed0: holds a run of preset '
                       'table2:MN-2 seed 5, not MN-2 seed 0; move it away'):
        run_study(tmp_path / 'study', fake, presets=('MN-2',), seeds=(0,))
    assert fake.calls() == []


def test_run_parallel_threads_and_launcher(tmp_path, fake):
    assert run_study(tmp_path / 'a', fake, jobs=2) == 0
    per_run = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert [c['threads'] for c in fake.calls()] == [[per_run] * 3] * 4
    assert '2 at a time, {} thread'.format(per_run) in run_study.output
    assert _epochs(tmp_path / 'a' / 'MN-2' / 'seed1') == [1, 2, 3]
    fake.reset()
    assert run_study(tmp_path / 'b', fake, seeds=(0,), threads=3,
                     launcher=['env', 'FAKE_LAUNCHED=yes']) == 0
    assert [(c['threads'], c['launched']) for c in fake.calls()] == [
        (['3'] * 3, 'yes')] * 2


@pytest.mark.parametrize('kwargs, match', [
    (dict(flags=['--seed', '3']), 'trainer flag --seed'),
    (dict(flags=['--out=x']), 'trainer flag --out=x'),
    (dict(flags=['-ox']), 'trainer flag -ox'),
    (dict(flags=['-r', 's']), 'trainer flag -r'),
    (dict(seeds=[0, 0]), '--seeds repeats 0'),
    (dict(presets=['MN-2', 'MN-2']), '--presets repeats MN-2'),
    (dict(presets=['table2:MN-2', 'table2_MN-2']), 'share a directory'),
    (dict(jobs=0), '-j must be >= 1'),
    (dict(threads=0), '--threads must be >= 1'),
])
def test_run_usage_errors(tmp_path, fake, kwargs, match):
    with pytest.raises(mn_chainer.cli.UsageError, match=match):
        run_study(tmp_path / 'study', fake, **kwargs)
    assert fake.calls() == []


def test_run_trainer_that_cannot_start(tmp_path):
    out = tmp_path / 'study'
    runner = study.StudyRunner(str(out), ['BN-2'], [0], [],
                               trainer=[str(tmp_path / 'no_trainer')],
                               stdout=io.StringIO())
    with pytest.raises(CommandError, match=r'BN-2/seed0: cannot start .*'
                       r'no_trainer \(No such file or directory\); check '
                       r'--trainer'):
        runner.run()


def test_run_one_study_per_directory(tmp_path, fake):
    out = tmp_path / 'study'
    out.mkdir()
    with study.StudyLock(str(out)):
        with pytest.raises(CommandError, match='another mn-study run is '
                           'using this directory'):
            run_study(out, fake)
    assert run_study(out, fake, seeds=(0,)) == 0


@pytest.mark.skipif(mn_chainer.rundir.fcntl is None, reason='no fcntl')
def test_study_lock_is_a_run_lock_of_its_own(tmp_path):
    out = str(tmp_path)
    code = ('import sys\nfrom mn_chainer import study\ntry:\n'
            '    study.StudyLock(sys.argv[1])\n'
            'except study.mn_chainer.cli.CommandError as e:\n'
            '    print(e)\n    sys.exit(3)\n')
    with study.StudyLock(out) as lock:
        assert lock.path == os.path.join(out, '.study.lock')
        # Another process is kept out and told who holds it.
        result = subprocess.run([sys.executable, '-c', code, out],
                                stdout=subprocess.PIPE,
                                universal_newlines=True, timeout=120)
        assert result.returncode == 3
        assert result.stdout.strip() == (
            '{}: another mn-study run is using this directory (process {})'
            .format(out, os.getpid()))
        # A run directory's lock is another file.
        mn_chainer.rundir.RunLock(out).release()
    result = subprocess.run([sys.executable, '-c', code, out], timeout=120)
    assert result.returncode == 0


def test_run_cli(tmp_path, fake, capsys):
    out = str(tmp_path / 'study')
    trainer = ' '.join(fake.command)
    assert study.main(['run', '--presets', 'BN-2', '--seeds', '0', '-o', out,
                       '--trainer', trainer, '--', '-e', '2']) == 0
    assert 'all 1 run finished' in capsys.readouterr().out
    assert _exit_status(['run', '--presets', 'BN-2', '--seeds', '0', '-o',
                         out, '--trainer', trainer, '--', '--seed',
                         '1']) == 2
    assert 'trainer flag --seed' in _one_error_line(capsys)
    assert _exit_status(['run', '--presets', 'BN-2', '--seeds', '0', '-o',
                         out, '--launcher', "'unclosed"]) == 2
    assert '--launcher' in _one_error_line(capsys)


def _study_process(out, fake, *flags):
    return subprocess.Popen(
        [sys.executable, '-m', 'mn_chainer.study', 'run', '--presets',
         'BN-2', '--seeds', '0', '-o', str(out), '--trainer',
         ' '.join(fake.command), '--'] + list(flags),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path, timeout=60):
    deadline = time.time() + timeout
    while not os.path.exists(str(path)):
        assert time.time() < deadline, 'no {}'.format(path)
        time.sleep(0.05)


def _gone(pid, timeout=5):
    """Whether process ``pid`` ends (or is a zombie) within ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open('/proc/{}/stat'.format(pid)) as f:
                if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize('signum, status', [
    (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -9)])
def test_run_stopped_study_stops_its_runs(tmp_path, fake, monkeypatch,
                                          signum, status):
    # 1 s per epoch: the run would outlive the checks below by far.
    monkeypatch.setenv('FAKE_SLEEP', '1')
    out = tmp_path / 'study'
    proc = _study_process(out, fake, '-e', '20')
    _wait_for(out / 'BN-2' / 'seed0' / 'snapshot_epoch_1')
    proc.send_signal(signum)
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == status
    if signum == signal.SIGTERM:
        assert (b'stopped BN-2/seed0; run the same command to resume'
                in stdout)
    call, = fake.calls()
    assert _gone(call['pid'])
    # The next invocation resumes the stopped run from its last snapshot.
    monkeypatch.setenv('FAKE_SLEEP', '0')
    fake.reset()
    assert run_study(out, fake, presets=('BN-2',), seeds=(0,),
                     flags=('-e', '20')) == 0
    assert '--resume' in fake.calls()[0]['argv']
    assert _epochs(out / 'BN-2' / 'seed0') == list(range(1, 21))


# ---------------------------------------------------------------------------
# mn-study run with the real trainer

SHARED_CIFAR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            '..', '..', 'shared', 'data', 'cifar10.npz')


def _npz_head(path, key, n):
    """The first ``n`` rows of one array of an npz, read without
    decompressing the rest (the shared copy is LZMA-compressed)."""
    with zipfile.ZipFile(path) as z, z.open(key + '.npy') as f:
        version = numpy.lib.format.read_magic(f)
        read_header = (numpy.lib.format.read_array_header_1_0
                       if version == (1, 0)
                       else numpy.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(f)
        assert not fortran_order
        row = int(numpy.prod(shape[1:], dtype=numpy.int64))
        data = f.read(n * row * dtype.itemsize)
    return numpy.frombuffer(data, dtype).reshape((n,) + tuple(shape[1:]))


@pytest.fixture(scope='module')
def tiny_cifar(tmp_path_factory):
    """48 training and 16 test images: the first of the shared CIFAR-10
    copy when there is one, else random ones."""
    path = str(tmp_path_factory.mktemp('data') / 'tiny_cifar.npz')
    if os.path.isfile(SHARED_CIFAR):
        arrays = {k: _npz_head(SHARED_CIFAR, k, n) for k, n in (
            ('x_train', 48), ('y_train', 48), ('x_test', 16),
            ('y_test', 16))}
    else:
        rng = numpy.random.RandomState(0)
        arrays = dict(
            x_train=rng.randint(0, 256, (48, 32, 32, 3)).astype(numpy.uint8),
            y_train=rng.randint(0, 10, 48),
            x_test=rng.randint(0, 256, (16, 32, 32, 3)).astype(numpy.uint8),
            y_test=rng.randint(0, 10, 16))
    numpy.savez(path, **arrays)
    return path


def _strip_times(log):
    return [{k: v for k, v in e.items() if k != 'elapsed_time'}
            for e in log]


def test_run_real_trainer_skips_and_resumes(tmp_path, tiny_cifar):
    out = tmp_path / 'study'
    flags = ['--data', tiny_cifar, '--widths', '4,4,8,8', '-b', '16',
             '--train-subset', '32', '--test-subset', '16', '-e', '2']

    def run(jobs):
        # One BLAS thread in every run: the float sums of a resumed run
        # then equal those of the uninterrupted one (other thread counts
        # sum in other orders).
        stdout = io.StringIO()
        status = study.StudyRunner(
            str(out), ['BN-2', 'MN-2'], [0, 1], flags, jobs=jobs, threads=1,
            stdout=stdout, poll=0.05).run()
        return status, stdout.getvalue()

    status, text = run(jobs=2)
    assert status == 0, text
    assert text.count('finished in') == 4
    logs = {}
    for row in ('BN-2', 'MN-2'):
        for seed in (0, 1):
            path = str(out / row / 'seed{}'.format(seed))
            with open(os.path.join(path, 'args.json')) as f:
                args = json.load(f)
            assert (args['row'], args['seed']) == (row, seed)
            logs[row, seed] = _strip_times(mn_chainer.logs.load_log(path))
            assert [e['epoch'] for e in logs[row, seed]] == [1, 2]
    # Interrupted after epoch 1 (the epoch-2 snapshot and log entry lost).
    run_dir = out / 'MN-2' / 'seed1'
    os.remove(str(run_dir / 'snapshot_epoch_2'))
    with open(str(run_dir / 'log')) as f:
        log = json.load(f)
    with open(str(run_dir / 'log'), 'w') as f:
        json.dump(log[:1], f)

    status, text = run(jobs=1)
    assert status == 0, text
    assert ('3 finished, 1 to resume: MN-2/seed1 (epoch 1), 0 to start'
            in text)
    assert text.count('finished before, skipped') == 3
    assert '[4/4] MN-2/seed1: finished in' in text
    with open(str(run_dir) + '.out') as f:
        headers = [line for line in f if line.startswith('# mn-study')]
    assert len(headers) == 2
    assert headers[1].rstrip().endswith('--resume {}'.format(
        run_dir / 'snapshot_epoch_1'))
    # The resumed run logs what the uninterrupted one logged.
    assert _strip_times(mn_chainer.logs.load_log(str(run_dir))) == \
        logs['MN-2', 1]
    report = study_report.report([str(out)])
    assert 'BN-2       2  0 1' in report and 'MN-2       2  0 1' in report


def test_run_under_mpiexec(tmp_path, tiny_cifar):
    mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        pytest.skip('mpiexec not found')
    pytest.importorskip('mpi4py')
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1',
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMPI_MCA_rmaps_base_oversubscribe='1')
    out = tmp_path / 'study'
    argv = [sys.executable, '-m', 'mn_chainer.study', 'run', '--presets',
            'BN-2', '--seeds', '3', '-o', str(out), '--threads', '1',
            '--launcher', '{} -n 2'.format(mpiexec), '--',
            '--communicator', 'naive', '--data', tiny_cifar, '--widths',
            '4,4,8,8', '-b', '8', '--train-subset', '32', '--test-subset',
            '16', '-e', '1']
    # In a subprocess with a time limit: a hung run cannot hang the tests
    # (killing mn-study stops its runs).
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=300,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout
    with open(str(out / 'BN-2' / 'seed3' / 'args.json')) as f:
        args = json.load(f)
    assert (args['n_workers'], args['seed'], args['epoch']) == (2, 3, 1)
    assert '[1/1] BN-2/seed3: finished in' in result.stdout
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=300,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout
    assert 'finished before, skipped' in result.stdout
