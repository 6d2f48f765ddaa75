"""Multi-seed studies: rows x seeds of CIFAR runs, and their statistics.

Usage::

    mn-study run --presets BN-2 MN-2 --seeds 0 1 2 3 4 -o result/study \\
        [-j N] [--threads T] [--launcher 'mpiexec -n 2'] [--keep-going] \\
        -- <train_cifar.py flags>
    mn-study report RUN_DIR [RUN_DIR ...] | STUDY_DIR
        [--format {text,markdown,csv}] [--window 3] [--baseline ROW]
        [--skip-incomplete] [--plot curves.png]

(also ``python -m mn_chainer.study``).

``run`` trains every preset (a row of the paper's tables, see
:mod:`mn_chainer.presets`) with every seed, each as an ordinary
``train_cifar.py`` run directory ``<out>/<row>/seed<k>`` (a ``:`` in the
preset name becomes ``_``); the flags after ``--`` go to every run, and
``mn-study`` adds ``--preset``, ``--seed``, ``--out``, ``--no-progress`` and,
for an interrupted run, ``--resume``. A run's console output goes to
``<out>/<row>/seed<k>.out``. The command is resumable: run it again and

* a finished run (its ``log`` reaches the planned epochs of its
  ``args.json``) is skipped;
* an interrupted run resumes from its last ``snapshot_epoch_<n>``;
* an interrupted run without a snapshot (stopped in its first epoch) is
  moved aside into ``<out>/.aside/`` (never deleted) and starts again.

``<out>/study.json`` records the trainer flags; running again into the same
directory with other trainer flags is refused (add presets or seeds freely).
One ``mn-study run`` at a time may use a directory (a lock file). Runs go one
after another; ``-j N`` runs ``N`` at once and gives each
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` = cores / N
(``--threads`` sets it). After each run one line reports it and the study's
ETA (from the epochs trained so far in this invocation). The first failed
run stops the study (running ones finish) unless ``--keep-going``.

ChainerMN: give the MPI prefix with ``--launcher`` and the communicator among
the trainer flags; each run is then ``<launcher> <trainer> ...``::

    mn-study run --presets BN-2 MN-2 --seeds 0 1 2 -o result/study_mn \\
        --launcher 'mpiexec -n 2' -- --communicator naive --data cifar10.npz

``--trainer`` replaces the trainer command (default: ``python -m
train_cifar``); it must accept ``train_cifar.py``'s flags.

``report`` reads run directories (or every run directory under a study
directory), groups them by the ``row`` of their ``args.json`` and prints,
over the seeds of each group: test accuracy per evaluation (mean +/- standard
error), the windowed metric (mean of each run's last ``--window``
evaluations), the best accuracy; for every other group against the BN group,
the paired difference over the seeds both ran (mean, SE, 95% Student-t
interval) of the windowed and best accuracies; and the gradient updates each
run needs to first reach the BN group's mean best accuracy, as the paper's
Table III (mean +/- SE over the runs that reach it, how many never do, and
the reduction against BN). Runs of one group must share every setting but
the ones in :data:`RUN_SPECIFIC_SETTINGS`; mismatched or incomplete runs are
errors naming the setting or the run, never averaged.

Exit status: 0 on success, 2 for usage errors, 1 for data errors (bad or
mismatched runs, a failed training run).
"""
import argparse
import collections
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy

import mn_chainer.compare
import mn_chainer.logs
import mn_chainer.paper
import mn_chainer.plot
import mn_chainer.presets
import mn_chainer.stats


#: Log key of the test accuracy (a fraction).
ACCURACY_KEY = mn_chainer.logs.ACCURACY_KEY

#: ``args.json`` settings that may differ between the runs of one group:
#: the seed (and what it draws: the data subset and so its pixel
#: statistics), where and on what a run ran, and how it was started.
RUN_SPECIFIC_SETTINGS = frozenset([
    'seed', 'pixel_mean', 'pixel_std', 'out', 'data', 'device',
    'loaderjob', 'communicator', 'resume', 'resumed_from', 'argv',
])

#: Settings that make a group what it is (its normalization and paper row):
#: they differ between groups and are not listed as differences.
GROUP_SETTINGS = frozenset([
    'preset', 'row', 'norm', 'mn_layers', 'mn_norms', 'n_components',
    'em_iter', 'mn_relu',
])

#: Flags ``mn-study run`` gives every run itself.
RESERVED_FLAGS = ('--preset', '--seed', '--out', '-o', '--resume', '-r',
                  '--list-presets')

#: Environment variables that size the thread pools of a run.
THREAD_VARIABLES = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
                    'MKL_NUM_THREADS')

_SNAPSHOT = re.compile(r'^snapshot_epoch_(\d+)$')

# Exit statuses (argparse's convention for usage errors).
EXIT_DATA = 1
EXIT_USAGE = 2


class StudyError(Exception):

    """An error to report as one line, with the exit status to use."""

    def __init__(self, message, status=EXIT_DATA):
        super(StudyError, self).__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# Runs as the report sees them


class StudyRun(object):

    """One finished (or interrupted) run: settings and test accuracies.

    Attributes:
        path (str): Run directory.
        args (dict): Its ``args.json``.
        group (str): Group label: the paper row, else the normalization.
        seed: The run's seed.
        epochs (numpy.ndarray): Epoch of each evaluation.
        iterations (numpy.ndarray): Updates done at each evaluation.
        accuracy (numpy.ndarray): Test accuracy (fraction) at each one.
        planned_epochs (int or None): ``args.json``'s ``epoch``.

    """

    def __init__(self, path, args, log, key=ACCURACY_KEY):
        self.path = path
        self.args = args
        self.log = log
        self.group = group_label(args)
        self.seed = args.get('seed')
        self.epochs, self.iterations, self.accuracy = (
            mn_chainer.compare.accuracy_series(log, key))
        self.planned_epochs = args.get('epoch')

    @property
    def last_epoch(self):
        return int(self.epochs[-1]) if len(self.epochs) else 0

    @property
    def complete(self):
        return (self.planned_epochs is not None
                and self.last_epoch >= self.planned_epochs)

    @property
    def is_bn(self):
        return self.args.get('norm') == 'bn' or not self.args.get(
            'mn_layers')

    def describe(self):
        return '{} (seed {}, {})'.format(self.group, self.seed, self.path)


def group_label(args):
    """The group of a run: its paper row, else ``bn`` or ``mn:<layers>``."""
    if args.get('row'):
        return str(args['row'])
    layers = args.get('mn_layers')
    if args.get('norm') == 'bn' or not layers:
        return 'bn'
    return 'mn:' + ','.join(layers)


def _is_run_dir(path):
    return (os.path.isfile(os.path.join(path, 'args.json'))
            or os.path.isfile(os.path.join(path, 'log')))


def find_run_dirs(paths):
    """Run directories among ``paths`` and below them.

    A path holding ``args.json`` or ``log`` is a run directory; any other
    directory is searched (hidden directories, such as a study's
    ``.aside``, are not).

    Raises:
        StudyError: For a path that is not a directory or holds no run.

    """
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise StudyError('{}: not a directory'.format(path), EXIT_USAGE)
        if _is_run_dir(path):
            found.append(path)
            continue
        below = []
        for root, dirs, _ in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            if root != path and _is_run_dir(root):
                below.append(root)
                dirs[:] = []
        if not below:
            raise StudyError('{}: no run directories (with args.json or '
                             'log) in it'.format(path))
        found.extend(below)
    return found


def load_study_run(path, key=ACCURACY_KEY):
    """Reads a run directory into a :class:`StudyRun`.

    A run without a ``log`` yet (stopped in its first epoch) has no
    evaluations.

    Raises:
        StudyError: For a missing or unreadable ``args.json`` or ``log``,
            or ``args.json`` without a seed.

    """
    try:
        args = mn_chainer.logs.load_args(path)
        log = (mn_chainer.logs.load_log(path)
               if os.path.isfile(os.path.join(path, 'log')) else [])
    except (OSError, ValueError) as e:
        raise StudyError(str(e))
    if args is None:
        raise StudyError('{}: no args.json (the report groups runs by the '
                         'settings in it)'.format(path))
    if args.get('seed') is None:
        raise StudyError('{}: args.json has no "seed"'.format(
            os.path.join(path, 'args.json')))
    return StudyRun(path, args, log, key=key)


# ---------------------------------------------------------------------------
# Groups


def _differing_settings(runs, ignore):
    """``{setting: [(value, [runs])]}`` for settings that differ."""
    keys = sorted(set().union(*(r.args for r in runs)) - ignore)
    out = collections.OrderedDict()
    for k in keys:
        values = []
        for run in runs:
            value = run.args.get(k)
            for v, members in values:
                if v == value:
                    members.append(run)
                    break
            else:
                values.append((value, [run]))
        if len(values) > 1:
            out[k] = values
    return out


def _check_group(name, runs):
    """Refuses a group whose runs differ in a setting, seed or length."""
    diffs = _differing_settings(runs, RUN_SPECIFIC_SETTINGS)
    if diffs:
        setting, values = next(iter(diffs.items()))
        raise StudyError(
            'group {}: its runs differ in setting {!r}: {}{}'.format(
                name, setting, '; '.join(
                    '{} in {}'.format(json.dumps(v), ', '.join(
                        r.path for r in members)) for v, members in values),
                ' (and in {})'.format(', '.join(list(diffs)[1:]))
                if len(diffs) > 1 else ''))
    seen = {}
    for run in runs:
        if run.seed in seen:
            raise StudyError('group {}: seed {} twice: {} and {}'.format(
                name, run.seed, seen[run.seed].path, run.path))
        seen[run.seed] = run
    first = runs[0]
    for run in runs[1:]:
        if (len(run.iterations) != len(first.iterations)
                or (run.iterations != first.iterations).any()
                or (run.epochs != first.epochs).any()):
            raise StudyError(
                'group {}: runs of different lengths: {} has {} '
                'evaluations (epochs {}), {} has {} (epochs {})'.format(
                    name, first.path, len(first.epochs),
                    _span(first.epochs), run.path, len(run.epochs),
                    _span(run.epochs)))


def _span(epochs):
    if not len(epochs):
        return 'none'
    return '{:g}..{:g}'.format(epochs[0], epochs[-1])


def group_runs(runs, skip_incomplete=False):
    """Groups runs by :func:`group_label` and checks each group.

    Args:
        runs (list of StudyRun): The runs.
        skip_incomplete (bool): Leave out runs whose log ends before their
            planned epochs instead of refusing them.

    Returns:
        tuple: ``(groups, skipped)``: an ordered dict label -> runs sorted
        by seed (groups in order of first appearance), and the runs left
        out.

    Raises:
        StudyError: For an incomplete run (unless skipped), or a group whose
            runs differ in a setting (:data:`RUN_SPECIFIC_SETTINGS` may
            differ), repeat a seed or differ in length.

    """
    skipped = []
    groups = collections.OrderedDict()
    for run in runs:
        if not run.complete:
            if skip_incomplete:
                skipped.append(run)
                continue
            raise StudyError(
                '{}: incomplete: its log ends at epoch {} of {} (resume it '
                'with mn-study run, or leave it out with --skip-incomplete)'
                .format(run.path, run.last_epoch,
                        run.planned_epochs if run.planned_epochs is not None
                        else '? (no "epoch" in args.json)'))
        groups.setdefault(run.group, []).append(run)
    if not groups:
        raise StudyError('no complete runs')
    for name, members in groups.items():
        members.sort(key=lambda r: (str(type(r.seed)), r.seed))
        _check_group(name, members)
    return groups, skipped


# ---------------------------------------------------------------------------
# Statistics of a study


class GroupSummary(object):

    """Per-seed metrics of one group and their mean +/- SE.

    Attributes:
        name (str): Group label.
        runs (list of StudyRun): Its runs, by seed.
        seeds (list): Their seeds.
        windowed (dict): Seed -> mean accuracy of the last ``window``
            evaluations.
        best (dict): Seed -> best accuracy.
        curve_mean, curve_se (numpy.ndarray or None): Mean and standard
            error over seeds at each evaluation (``curve_se`` is ``None``
            for one seed).

    """

    def __init__(self, name, runs, window):
        self.name = name
        self.runs = runs
        self.seeds = [r.seed for r in runs]
        self.windowed = {r.seed: mn_chainer.stats.windowed_mean(
            r.accuracy, window) for r in runs}
        self.best = {r.seed: float(r.accuracy.max()) for r in runs}
        self.curve_mean, self.curve_se = mn_chainer.stats.mean_se_columns(
            numpy.stack([r.accuracy for r in runs]))

    @property
    def n(self):
        return len(self.runs)

    @property
    def epochs(self):
        return self.runs[0].epochs

    @property
    def iterations(self):
        return self.runs[0].iterations

    @property
    def args(self):
        return self.runs[0].args

    def estimate(self, metric):
        values = getattr(self, metric)
        return mn_chainer.stats.mean_se([values[s] for s in self.seeds])


class Comparison(object):

    """One group against the baseline group.

    Attributes:
        group, baseline (GroupSummary): The two groups.
        windowed, best (mn_chainer.stats.PairedDifference): Paired
            differences (group - baseline) over shared seeds.
        target (float): The baseline's mean best accuracy.
        reach (dict): Seed -> updates to first reach ``target`` (``None``
            when never), for the group.

    """

    def __init__(self, group, baseline, target, confidence):
        self.group = group
        self.baseline = baseline
        self.windowed = mn_chainer.stats.paired_difference(
            group.windowed, baseline.windowed, confidence)
        self.best = mn_chainer.stats.paired_difference(
            group.best, baseline.best, confidence)
        self.target = target
        self.reach = reach_updates(group, target)


def reach_updates(group, target):
    """Seed -> updates each run of ``group`` needs to reach ``target``."""
    return {r.seed: mn_chainer.stats.first_reach(
        r.iterations, r.accuracy, target) for r in group.runs}


def reach_estimate(reach):
    """Mean +/- SE of the updates over the runs that reach the target.

    Returns:
        tuple: ``(Estimate, n_never)``.

    """
    reached = [v for v in reach.values() if v is not None]
    return mn_chainer.stats.mean_se(reached), len(reach) - len(reached)


def _choose_baseline(summaries, baseline):
    if baseline is not None:
        if baseline not in summaries:
            raise StudyError('--baseline {}: no such group; groups: {}'
                             .format(baseline, ', '.join(summaries)),
                             EXIT_USAGE)
        return summaries[baseline]
    bns = [s for s in summaries.values() if s.runs[0].is_bn]
    if len(bns) > 1:
        raise StudyError('several BN groups ({}): give --baseline ROW'
                         .format(', '.join(s.name for s in bns)), EXIT_USAGE)
    return bns[0] if bns else None


class StudySummary(object):

    """All statistics of a study (what ``mn-study report`` prints).

    Args:
        groups (dict): Label -> runs, from :func:`group_runs`.
        window (int): Evaluations of the windowed metric.
        baseline (str or None): Label of the baseline group (default: the
            only BN group).
        confidence (float): Level of the paired t-intervals.

    Attributes:
        groups (dict): Label -> :class:`GroupSummary`.
        baseline (GroupSummary or None): The BN group.
        comparisons (list of Comparison): Every other group against it.
        baseline_reach (dict or None): Seed -> updates the baseline's runs
            need to reach their own mean best accuracy.

    """

    def __init__(self, groups, window=3, baseline=None, confidence=0.95):
        self.window = window
        self.confidence = confidence
        self.groups = collections.OrderedDict(
            (name, GroupSummary(name, runs, window))
            for name, runs in groups.items())
        self.baseline = _choose_baseline(self.groups, baseline)
        self.comparisons = []
        self.baseline_reach = None
        if self.baseline is None:
            return
        target = self.baseline.estimate('best').mean
        self.target = target
        self.baseline_reach = reach_updates(self.baseline, target)
        for group in self.groups.values():
            if group is not self.baseline:
                self.comparisons.append(
                    Comparison(group, self.baseline, target, confidence))


# ---------------------------------------------------------------------------
# Tables

_NA = 'n/a'


def _pct_text(value, signed=False):
    return ('{:+.2f}' if signed else '{:.2f}').format(100.0 * value)


def _estimate_text(est, percent=True):
    if est.mean is None:
        return '–'
    fmt = _pct_text if percent else (lambda v: '{:.0f}'.format(v))
    return '{} ± {}'.format(fmt(est.mean),
                            _NA if est.se is None else fmt(est.se))


def _interval_text(diff):
    if diff.low is None:
        return _NA
    return '[{}, {}]'.format(_pct_text(diff.low, True),
                             _pct_text(diff.high, True))


class _Cells(object):

    """Builds a row for text (``mean ± SE`` strings) or CSV (split)."""

    def __init__(self, csv):
        self.csv = csv
        self.columns = []
        self._keys = set()

    def _column(self, key, header, kind):
        if key not in self._keys:
            self._keys.add(key)
            self.columns.append((key, header, kind))

    def text(self, row, key, header, value):
        self._column(key, header, 'text')
        row[key] = value

    def number(self, row, key, header, value, kind='acc'):
        self._column(key, header, kind)
        row[key] = value

    def estimate(self, row, key, header, est, percent=True):
        if not self.csv:
            self.text(row, key, header, _estimate_text(est, percent))
            return
        scale = 100.0 if percent else 1.0
        for part, value in (('mean', est.mean), ('se', est.se)):
            self.number(row, '{}_{}'.format(key, part), None,
                        None if value is None else scale * value)

    def difference(self, row, diff):
        if not self.csv:
            self.text(row, 'pairs', 'pairs', str(diff.n))
            self.text(row, 'diff', 'mean diff (points)',
                      '–' if diff.mean is None else _pct_text(diff.mean,
                                                              True))
            self.text(row, 'se', 'SE', _NA if diff.se is None
                      else _pct_text(diff.se))
            self.text(row, 'ci', '{:g}% t-interval'.format(
                100 * diff.confidence), _interval_text(diff))
            return
        self.number(row, 'pairs', None, diff.n, 'int')
        for key in ('mean', 'se', 'low', 'high'):
            value = getattr(diff, key)
            self.number(row, 'diff_' + key, None,
                        None if value is None else 100.0 * value)


def _seed_list(seeds):
    return ' '.join(str(s) for s in seeds) or 'none'


def summary_table(summary, csv=False):
    """Per group: seeds, length, windowed and best accuracy (mean +/- SE)."""
    cells = _Cells(csv)
    rows = []
    for g in summary.groups.values():
        row = {}
        cells.text(row, 'group', 'group', g.name)
        cells.number(row, 'seeds', 'seeds', g.n, 'int')
        cells.text(row, 'seed_list', 'seed list', _seed_list(g.seeds))
        cells.number(row, 'epochs', 'epochs', int(g.epochs[-1]), 'int')
        cells.number(row, 'updates', 'updates', int(g.iterations[-1]),
                     'int')
        cells.estimate(row, 'windowed', 'last {} evals %'.format(
            summary.window), g.estimate('windowed'))
        cells.estimate(row, 'best', 'best %', g.estimate('best'))
        rows.append(row)
    notes = ['mean ± standard error over seeds (SE = sample std / '
             'sqrt(seeds)); "last {} evals" = mean of each run\'s last {} '
             'test evaluations (the windowed metric)'.format(
                 summary.window, summary.window)]
    notes.extend(_group_notes(summary))
    return mn_chainer.compare.Table(
        'Test accuracy over seeds', cells.columns, rows, notes)


def _group_notes(summary):
    notes = []
    for g in summary.groups.values():
        if g.n == 1:
            notes.append('{}: one seed: standard errors and intervals are '
                         'undefined (n/a)'.format(g.name))
        n_evals = len(g.epochs)
        if n_evals < summary.window:
            notes.append('{}: {} evaluations, fewer than the window of {}: '
                         'its windowed metric averages all of them'.format(
                             g.name, n_evals, summary.window))
    groups = list(summary.groups.values())
    diffs = _differing_settings([g.runs[0] for g in groups],
                                RUN_SPECIFIC_SETTINGS | GROUP_SETTINGS)
    for setting, values in diffs.items():
        by_group = []
        for value, members in values:
            names = [g.name for g in groups if g.runs[0] in members]
            by_group.append('{} in {}'.format(json.dumps(value),
                                              ', '.join(names)))
        notes.append('the groups differ in {!r}: {}'.format(
            setting, '; '.join(by_group)))
    return notes


def curve_table(summary, csv=False):
    """Test accuracy per evaluation: one mean +/- SE column per group."""
    cells = _Cells(csv)
    groups = list(summary.groups.values())
    epochs = sorted(set().union(*(g.epochs.tolist() for g in groups)))
    same_updates = all(
        len(g.epochs) == len(groups[0].epochs)
        and (g.iterations == groups[0].iterations).all() for g in groups)
    rows = []
    for epoch in epochs:
        row = {}
        cells.number(row, 'epoch', 'epoch', epoch, 'int')
        if same_updates:
            i = groups[0].epochs.tolist().index(epoch)
            cells.number(row, 'updates', 'updates',
                         int(groups[0].iterations[i]), 'int')
        for g in groups:
            where = g.epochs.tolist()
            est = mn_chainer.stats.Estimate(None, None, 0)
            if epoch in where:
                i = where.index(epoch)
                est = mn_chainer.stats.Estimate(
                    g.curve_mean[i],
                    None if g.curve_se is None else g.curve_se[i], g.n)
            cells.estimate(row, g.name, '{} % ({} seeds)'.format(
                g.name, g.n), est)
        rows.append(row)
    notes = [] if same_updates else [
        'the groups are evaluated at different updates; each group\'s '
        'updates per epoch: ' + ', '.join(
            '{} {}'.format(g.name, int(g.iterations[0] / g.epochs[0]))
            for g in groups)]
    return mn_chainer.compare.Table(
        'Test accuracy per evaluation (mean ± SE over seeds)',
        cells.columns, rows, notes)


def paired_table(summary, csv=False):
    """Paired differences against the baseline over shared seeds."""
    cells = _Cells(csv)
    rows, notes = [], []
    for c in summary.comparisons:
        for metric, label in (('windowed', 'last {} evals'.format(
                summary.window)), ('best', 'best')):
            diff = getattr(c, metric)
            row = {}
            cells.text(row, 'group', 'group', c.group.name)
            cells.text(row, 'baseline', 'vs', c.baseline.name)
            cells.text(row, 'metric', 'metric', label)
            cells.difference(row, diff)
            cells.text(row, 'shared_seeds', 'shared seeds',
                       _seed_list(diff.seeds))
            rows.append(row)
        diff = c.windowed
        left = ['{} only: {}'.format(name, _seed_list(seeds))
                for name, seeds in ((c.group.name, diff.only_a),
                                    (c.baseline.name, diff.only_b))
                if seeds]
        if left:
            notes.append('{} vs {}: only shared seeds are paired; left out: '
                         '{}'.format(c.group.name, c.baseline.name,
                                     '; '.join(left)))
        if diff.n == 0:
            notes.append('{} vs {}: no shared seeds, no paired difference'
                         .format(c.group.name, c.baseline.name))
        elif diff.n == 1:
            notes.append('{} vs {}: one pair: SE and interval undefined '
                         '(n/a)'.format(c.group.name, c.baseline.name))
    notes.append('difference = group - baseline in accuracy points, per '
                 'shared seed; SE = sample std of the differences / '
                 'sqrt(pairs); interval: Student t with pairs - 1 degrees '
                 'of freedom')
    return mn_chainer.compare.Table(
        'Paired difference against {} (same seeds)'.format(
            summary.baseline.name), cells.columns, rows, notes)


def _paper_reduction(args, baseline_args):
    """The paper's reduction (%) of a row's updates against the BN row.

    From the paper's Table III/V/VI (steps to reach BN's best accuracy), or
    ``None`` where the rows are not in one of them.
    """
    if baseline_args.get('table') != args.get('table'):
        return None
    try:
        experiment = mn_chainer.presets.EXPERIMENTS[
            mn_chainer.presets.experiment_of_table(args.get('table'))]
    except ValueError:
        return None
    if 'steps' not in experiment.results:
        return None
    key, _ = experiment.results['steps']
    rows = mn_chainer.paper.load_paper_results()[key].get(
        args.get('dataset'), {}).get('rows', {})
    ours = rows.get(args.get('row'), {}).get('steps')
    bn = rows.get(baseline_args.get('row'), {}).get('steps')
    if not ours or not bn:
        return None
    return 100.0 * (1.0 - ours / bn)


def reach_table(summary, csv=False):
    """Updates to first reach the baseline's mean best (Table III form)."""
    cells = _Cells(csv)
    base = summary.baseline
    base_est, _ = reach_estimate(summary.baseline_reach)
    rows = []
    entries = [(base, summary.baseline_reach)] + [
        (c.group, c.reach) for c in summary.comparisons]
    for group, reach in entries:
        est, never = reach_estimate(reach)
        row = {}
        cells.text(row, 'group', 'group', group.name)
        cells.number(row, 'reached', 'runs reaching', est.n, 'int')
        cells.number(row, 'never', 'never', never, 'int')
        cells.estimate(row, 'updates', 'updates', est, percent=False)
        steps = None if est.mean is None else est.mean / 1e4
        cells.number(row, 'steps', 'x1e4', steps, 'steps')
        reduction = None
        if group is not base and est.mean is not None and base_est.mean:
            reduction = 100.0 * (1.0 - est.mean / base_est.mean)
        cells.number(row, 'reduction', 'reduction vs {} %'.format(
            base.name), reduction, 'pct')
        paper = None
        if group is not base:
            paper = _paper_reduction(group.args, base.args)
        cells.number(row, 'paper_reduction', 'paper reduction %', paper,
                     'pct')
        rows.append(row)
    notes = [
        'target: {}\'s mean best accuracy {:.2f}%; updates = iteration of '
        'the first evaluation at or above it (resolution: one evaluation)'
        .format(base.name, 100.0 * summary.target),
        'mean ± SE over the runs that reach the target; runs that never '
        'do are counted in "never" and left out of the mean (so the mean '
        'is optimistic when some never reach it)',
        'reduction = 1 - mean updates / {}\'s mean updates (Table III\'s '
        '"acceleration")'.format(base.name)]
    return mn_chainer.compare.Table(
        'Gradient updates to reach {}\'s mean best accuracy (Table III '
        'form)'.format(base.name), cells.columns, rows, notes)


def build_tables(summary, csv=False):
    """The report's tables; CSV splits mean and SE into columns."""
    tables = [summary_table(summary, csv), curve_table(summary, csv)]
    if summary.baseline is None:
        tables[0].notes.append('no BN group: no paired differences or '
                               'updates to reach (give --baseline ROW)')
    elif summary.comparisons:
        tables += [paired_table(summary, csv), reach_table(summary, csv)]
    return tables


def report(paths, fmt='text', window=3, baseline=None, confidence=0.95,
           skip_incomplete=False, key=ACCURACY_KEY, plot=None):
    """Reads runs, groups them and renders the report.

    Args:
        paths (list of str): Run or study directories.
        fmt (str): ``'text'``, ``'markdown'`` or ``'csv'``.
        window (int): Evaluations of the windowed metric.
        baseline (str or None): Group label of the baseline.
        confidence (float): Level of the paired t-intervals.
        skip_incomplete (bool): Leave out unfinished runs (named in a note).
        key (str): Log key of the test accuracy.
        plot (str or None): Also write the mean curves (+/- SE) here.

    Returns:
        str: The rendered report.

    Raises:
        StudyError: For unreadable, incomplete or mismatched runs.

    """
    if window < 1:
        raise StudyError('--window must be >= 1, got {}'.format(window),
                         EXIT_USAGE)
    runs = [load_study_run(p, key) for p in find_run_dirs(paths)]
    groups, skipped = group_runs(runs, skip_incomplete)
    summary = StudySummary(groups, window, baseline, confidence)
    tables = build_tables(summary, csv=(fmt == 'csv'))
    for run in skipped:
        tables[0].notes.append('left out (incomplete, log ends at epoch {} '
                               'of {}): {}'.format(
                                   run.last_epoch, run.planned_epochs,
                                   run.path))
    if plot is not None:
        members = [r for g in summary.groups.values() for r in g.runs]
        mn_chainer.plot.plot_curves(
            [(r.group, r.log) for r in members], plot,
            key=key, groups=[r.group for r in members])
    return mn_chainer.compare.RENDERERS[fmt](tables)


# ---------------------------------------------------------------------------
# Running a study


def row_directory(preset):
    """Directory name of a preset's runs (``table2:BN-2`` -> ``table2_BN-2``).
    """
    return re.sub(r'[:/\\]', '_', preset)


def _snapshots(path):
    """``[(epoch, path)]`` of the ``snapshot_epoch_<n>`` files, by epoch."""
    if not os.path.isdir(path):
        return []
    found = []
    for name in os.listdir(path):
        match = _SNAPSHOT.match(name)
        if match and os.path.isfile(os.path.join(path, name)):
            found.append((int(match.group(1)), os.path.join(path, name)))
    return sorted(found)


def _logged_epoch(path):
    """Last epoch with a test accuracy in a run's log (0 when unreadable)."""
    try:
        log = mn_chainer.logs.load_log(path)
    except (OSError, ValueError):
        return 0
    epochs, _, _ = mn_chainer.compare.accuracy_series(log)
    return int(epochs[-1]) if len(epochs) else 0


def _read_args(path):
    """A run's ``args.json``, or ``None`` when missing or unreadable."""
    try:
        return mn_chainer.logs.load_args(path)
    except (OSError, ValueError):
        return None


class PlannedRun(object):

    """One run of a study: a preset and a seed, and its state on disk.

    Attributes:
        preset (str): Preset name given to ``--preset``.
        seed (int): Its ``--seed``.
        name (str): ``<row>/seed<k>``.
        path (str): Run directory ``<out>/<row>/seed<k>``.
        output (str): File of the run's console output.
        state (str): ``'finished'``, ``'resume'`` (from ``snapshot``),
            ``'restart'`` (interrupted before its first snapshot) or
            ``'new'``.
        snapshot (str or None): Snapshot to resume from.
        start_epoch (int): Epochs already trained when this invocation
            starts it.
        planned_epochs (int or None): ``args.json``'s ``epoch`` once known.

    """

    def __init__(self, out, preset, seed):
        self.preset = preset
        self.seed = seed
        self.name = '{}/seed{}'.format(row_directory(preset), seed)
        self.path = os.path.join(out, row_directory(preset),
                                 'seed{}'.format(seed))
        self.output = self.path + '.out'
        self.snapshot = None
        self.start_epoch = 0
        self.planned_epochs = None
        self.state = self._inspect()

    def _check_identity(self, args):
        preset = str(args.get('preset'))
        if args.get('seed') != self.seed or not (
                preset == self.preset or preset.endswith(':' + self.preset)
                or str(args.get('row')) == self.preset):
            raise StudyError(
                '{}: holds a run of preset {} seed {}, not {} seed {}; '
                'move it away'.format(self.path, args.get('preset'),
                                      args.get('seed'), self.preset,
                                      self.seed))

    def _inspect(self):
        if not os.path.isdir(self.path) or not os.listdir(self.path):
            return 'new'
        args = _read_args(self.path)
        if args is not None:
            self._check_identity(args)
            self.planned_epochs = args.get('epoch')
        done = _logged_epoch(self.path)
        if self.planned_epochs is not None and done >= self.planned_epochs:
            self.start_epoch = done
            return 'finished'
        snapshots = _snapshots(self.path)
        if snapshots:
            self.start_epoch, self.snapshot = snapshots[-1]
            return 'resume'
        return 'restart'

    def current_epoch(self, started):
        """Epochs trained so far (read from the log once started)."""
        if not started or self.state == 'finished':
            return self.start_epoch
        return max(self.start_epoch, _logged_epoch(self.path))

    def refresh_planned_epochs(self):
        args = _read_args(self.path)
        if args is not None and args.get('epoch') is not None:
            self.planned_epochs = int(args['epoch'])
        return self.planned_epochs


def _move_aside(run, out):
    """Moves an interrupted run without snapshot to ``<out>/.aside/``."""
    aside = os.path.join(out, '.aside')
    os.makedirs(aside, exist_ok=True)
    base = '{}-seed{}'.format(row_directory(run.preset), run.seed)
    n = 1
    while os.path.exists(os.path.join(aside, '{}-{}'.format(base, n))):
        n += 1
    target = os.path.join(aside, '{}-{}'.format(base, n))
    os.rename(run.path, target)
    return target


def _format_duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return '{}s'.format(seconds)
    if seconds < 3600:
        return '{}m{:02d}s'.format(seconds // 60, seconds % 60)
    return '{}h{:02d}m'.format(seconds // 3600, seconds % 3600 // 60)


class _Progress(object):

    """Study ETA from the epochs trained so far in this invocation."""

    def __init__(self, runs, clock=time.time):
        self.runs = runs
        self.clock = clock
        self.start = clock()
        self.started = set()
        self.closed = set()

    def eta(self):
        known = [r.planned_epochs for r in self.runs
                 if r.planned_epochs is not None]
        typical = max(known) if known else None
        done = remaining = 0
        for run in self.runs:
            current = run.current_epoch(run.name in self.started)
            done += current - run.start_epoch
            if run.name in self.closed or run.state == 'finished':
                continue
            planned = run.planned_epochs or typical
            if planned is None:
                return None
            remaining += max(0, planned - current)
        elapsed = self.clock() - self.start
        if remaining == 0:
            return 0.0
        if done <= 0 or elapsed <= 0:
            return None
        return remaining * elapsed / done

    def eta_text(self):
        left = sum(1 for r in self.runs if r.state != 'finished'
                   and r.name not in self.closed)
        eta = self.eta()
        return '{} run{} left, ETA {}'.format(
            left, '' if left == 1 else 's',
            'unknown' if eta is None else _format_duration(eta))


def _threads_per_run(jobs, threads):
    if threads is not None:
        return threads
    if jobs == 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def _set_parent_death_signal():
    # Linux: a run dies with mn-study (even on SIGKILL), so no orphan keeps
    # writing into a directory the next invocation resumes.
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def default_trainer():
    """``[python, <path of train_cifar.py>]``.

    Raises:
        StudyError: When ``train_cifar`` cannot be found.

    """
    import importlib.util
    spec = importlib.util.find_spec('train_cifar')
    if spec is None or not spec.origin:
        raise StudyError('cannot find train_cifar.py (install mn-chainer '
                         'with pip, run from its checkout, or give '
                         '--trainer)')
    return [sys.executable, spec.origin]


def _last_line(path):
    try:
        with open(path, 'rb') as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return ''
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else ''


class _Stopped(Exception):
    pass


def _raise_stopped(signum, frame):
    raise _Stopped()


class StudyLock(object):

    """An exclusive lock on a study directory (``<out>/.study.lock``)."""

    def __init__(self, out):
        self.path = os.path.join(out, '.study.lock')
        self._file = None

    def __enter__(self):
        self._file = open(self.path, 'a')
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise StudyError('{}: another mn-study run is using this '
                             'directory'.format(os.path.dirname(self.path)))
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _check_study_file(out, runs, trainer_flags):
    """Records the trainer flags in ``study.json``; refuses other flags."""
    path = os.path.join(out, 'study.json')
    recorded = {'trainer_flags': list(trainer_flags), 'runs': []}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                recorded = json.load(f)
            old = recorded['trainer_flags']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StudyError('{}: unreadable ({})'.format(path, e))
        if old != list(trainer_flags):
            raise StudyError(
                '{} was run with trainer flags "{}", this command gives "{}"'
                ': use the same flags or another -o'.format(
                    out, ' '.join(old), ' '.join(trainer_flags)),
                EXIT_USAGE)
    names = list(recorded.get('runs', []))
    names += [r.name for r in runs if r.name not in names]
    recorded['runs'] = names
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(recorded, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def _check_trainer_flags(flags):
    for flag in flags:
        name = flag.split('=', 1)[0]
        if name in RESERVED_FLAGS or (
                len(name) > 2 and name[:2] in ('-o', '-r')
                and not name.startswith('--')):
            raise StudyError(
                'trainer flag {}: mn-study sets --preset, --seed, --out and '
                '--resume of every run itself; remove it'.format(flag),
                EXIT_USAGE)


class StudyRunner(object):

    """Runs the rows x seeds of a study (``mn-study run``).

    Args:
        out (str): Study directory.
        presets (list of str): Presets (paper rows) to train.
        seeds (list of int): Seeds of every preset.
        trainer_flags (list of str): Flags given to every run.
        jobs (int): Runs at once.
        threads (int or None): Thread-pool size of every run (default: the
            cores shared by ``jobs`` runs; unset for ``jobs == 1``).
        launcher (list of str): Prefix of every run (e.g. ``['mpiexec',
            '-n', '2']``).
        trainer (list of str or None): Trainer command (default:
            :func:`default_trainer`).
        keep_going (bool): Start the remaining runs after a failure.
        stdout: Stream of the progress lines.
        poll (float): Seconds between checks of the running runs.

    """

    def __init__(self, out, presets, seeds, trainer_flags, jobs=1,
                 threads=None, launcher=(), trainer=None, keep_going=False,
                 stdout=None, poll=0.5):
        if jobs < 1:
            raise StudyError('-j must be >= 1, got {}'.format(jobs),
                             EXIT_USAGE)
        if threads is not None and threads < 1:
            raise StudyError('--threads must be >= 1, got {}'.format(
                threads), EXIT_USAGE)
        for what, values in (('--presets', presets), ('--seeds', seeds)):
            repeated = sorted(set(v for v in values if values.count(v) > 1))
            if repeated:
                raise StudyError('{} repeats {}'.format(
                    what, ', '.join(map(str, repeated))), EXIT_USAGE)
        dirs = [row_directory(p) for p in presets]
        if len(set(dirs)) != len(dirs):
            raise StudyError('--presets: two presets share a directory name '
                             '({})'.format(', '.join(dirs)), EXIT_USAGE)
        _check_trainer_flags(trainer_flags)
        self.out = out
        self.presets = list(presets)
        self.seeds = list(seeds)
        self.trainer_flags = list(trainer_flags)
        self.jobs = jobs
        self.threads = _threads_per_run(jobs, threads)
        self.command = list(launcher) + list(trainer or default_trainer())
        self.keep_going = keep_going
        self.stdout = stdout or sys.stdout
        self.poll = poll
        self.failures = []

    def _print(self, line):
        self.stdout.write(line + '\n')
        self.stdout.flush()

    def command_of(self, run):
        """The command line of ``run``."""
        cmd = self.command + [
            '--preset', run.preset, '--seed', str(run.seed), '--out',
            run.path, '--no-progress'] + self.trainer_flags
        if run.snapshot is not None:
            cmd += ['--resume', run.snapshot]
        return cmd

    def _environment(self):
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if self.threads is not None:
            env.update((v, str(self.threads)) for v in THREAD_VARIABLES)
        return env

    def _start(self, run):
        if run.state == 'restart':
            target = _move_aside(run, self.out)
            self._print('{}: interrupted before its first snapshot; moved '
                        'to {}, starting again'.format(run.name, target))
        os.makedirs(os.path.dirname(run.path), exist_ok=True)
        cmd = self.command_of(run)
        with open(run.output, 'a') as f:
            f.write('# mn-study {}: {}\n'.format(
                time.strftime('%Y-%m-%d %H:%M:%S'),
                ' '.join(shlex.quote(c) for c in cmd)))
            f.flush()
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._environment(),
                start_new_session=True, preexec_fn=_set_parent_death_signal)
        return proc, time.time()

    def _finish(self, run, returncode, seconds, index, total, progress):
        progress.closed.add(run.name)
        planned = run.refresh_planned_epochs()
        done = run.current_epoch(True)
        head = '[{}/{}] {}'.format(index, total, run.name)
        if returncode == 0 and planned is not None and done >= planned:
            log = mn_chainer.logs.load_log(run.path)
            _, _, acc = mn_chainer.compare.accuracy_series(log)
            self._print(
                '{}: finished in {} (epochs {}-{} of {}; best {:.2f}%, '
                'last 3 {:.2f}%); {}'.format(
                    head, _format_duration(seconds), run.start_epoch + 1,
                    done, planned, 100 * acc.max(),
                    100 * mn_chainer.stats.windowed_mean(acc, 3),
                    progress.eta_text()))
            return
        why = ('exited with status {}'.format(returncode) if returncode
               else 'exited but its log ends at epoch {} of {}'.format(
                   done, planned))
        self.failures.append((run, returncode))
        self._print('{}: FAILED after {}: {}: {} (output: {})'.format(
            head, _format_duration(seconds), why, _last_line(run.output),
            run.output))

    def run(self):
        """Runs what is left of the study.

        Returns:
            int: 0, or the exit status of the failure.

        """
        os.makedirs(self.out, exist_ok=True)
        with StudyLock(self.out):
            runs = [PlannedRun(self.out, p, s)
                    for p in self.presets for s in self.seeds]
            _check_study_file(self.out, runs, self.trainer_flags)
            return self._run(runs)

    def _plan_line(self, runs):
        counts = collections.Counter(r.state for r in runs)
        parts = ['{} finished'.format(counts['finished'])]
        resumed = ['{} (epoch {})'.format(r.name, r.start_epoch)
                   for r in runs if r.state == 'resume']
        if resumed:
            parts.append('{} to resume: {}'.format(len(resumed),
                                                   ', '.join(resumed)))
        parts.append('{} to start'.format(counts['new'] + counts['restart']))
        return ('study {}: {} runs ({} presets x {} seeds): {}; {} at a '
                'time{}'.format(
                    self.out, len(runs), len(self.presets), len(self.seeds),
                    ', '.join(parts), self.jobs,
                    '' if self.threads is None else
                    ', {} thread{} each'.format(
                        self.threads, '' if self.threads == 1 else 's')))

    def _run(self, runs):
        self._print(self._plan_line(runs))
        total = len(runs)
        for index, run in enumerate(runs, 1):
            if run.state == 'finished':
                self._print('[{}/{}] {}: finished before, skipped'.format(
                    index, total, run.name))
        pending = collections.deque(
            (i, r) for i, r in enumerate(runs, 1) if r.state != 'finished')
        progress = _Progress(runs)
        running = {}
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            while pending or running:
                while (pending and len(running) < self.jobs
                       and (self.keep_going or not self.failures)):
                    index, run = pending.popleft()
                    running[run.name] = (index, run) + self._start(run)
                    progress.started.add(run.name)
                if not running:
                    break
                time.sleep(self.poll)
                for name, (index, run, proc, t0) in list(running.items()):
                    if proc.poll() is not None:
                        del running[name]
                        self._finish(run, proc.returncode, time.time() - t0,
                                     index, total, progress)
        except (KeyboardInterrupt, _Stopped):
            for _, run, proc, _ in running.values():
                proc.terminate()
            for _, run, proc, _ in running.values():
                proc.wait()
            self._print('interrupted: stopped {}; run the same command to '
                        'resume'.format(', '.join(running) or 'nothing'))
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
        if self.failures:
            usage = all(code == EXIT_USAGE for _, code in self.failures)
            raise StudyError(
                '{} run{} failed: {}{}'.format(
                    len(self.failures),
                    '' if len(self.failures) == 1 else 's',
                    ', '.join(r.name for r, _ in self.failures),
                    '' if self.keep_going or not pending else
                    '; {} not started'.format(len(pending))),
                EXIT_USAGE if usage else EXIT_DATA)
        self._print('study {}: all {} runs finished; report: mn-study '
                    'report {}'.format(self.out, total,
                                       shlex.quote(self.out)))
        return 0


# ---------------------------------------------------------------------------
# Command line


def _parser():
    parser = argparse.ArgumentParser(
        prog='mn-study',
        description='Multi-seed BN/MN studies: run rows x seeds of '
                    'train_cifar.py, report mean ± SE and paired '
                    'differences.')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser(
        'run', help='train presets x seeds (resumable)',
        description='Trains every preset with every seed into '
                    '<out>/<row>/seed<k>; flags after "--" go to every '
                    'train_cifar.py run.')
    p.add_argument('--presets', nargs='+', required=True, metavar='ROW',
                   help='presets (paper rows), e.g. BN-2 MN-2')
    p.add_argument('--seeds', nargs='+', type=int, required=True,
                   metavar='SEED')
    p.add_argument('-o', '--out', required=True, help='study directory')
    p.add_argument('-j', '--jobs', type=int, default=1,
                   help='runs at once (default 1)')
    p.add_argument('--threads', type=int, default=None,
                   help='OMP/OpenBLAS/MKL threads per run (default: cores '
                        '/ jobs when -j > 1)')
    p.add_argument('--launcher', default='',
                   help='prefix of every run, e.g. "mpiexec -n 2" '
                        '(ChainerMN; add --communicator to the trainer '
                        'flags)')
    p.add_argument('--trainer', default=None,
                   help='trainer command (default: python train_cifar.py)')
    p.add_argument('--keep-going', action='store_true',
                   help='start the other runs after a failure')
    p.add_argument('trainer_flags', nargs=argparse.REMAINDER,
                   metavar='-- TRAINER_FLAGS')

    p = sub.add_parser(
        'report', help='statistics over seeds of run directories',
        description='Groups runs by the row in their args.json and '
                    'prints mean ± SE over seeds, paired differences '
                    'against the BN group and updates to reach its best '
                    'accuracy.')
    p.add_argument('paths', nargs='+', metavar='RUN_DIR|STUDY_DIR')
    p.add_argument('--format', choices=sorted(
        mn_chainer.compare.RENDERERS), default='text')
    p.add_argument('--window', type=int, default=3,
                   help='evaluations of the windowed metric (default 3)')
    p.add_argument('--baseline', default=None, metavar='ROW',
                   help='baseline group (default: the BN group)')
    p.add_argument('--confidence', type=float, default=0.95,
                   help='level of the paired t-intervals (default 0.95)')
    p.add_argument('--skip-incomplete', action='store_true',
                   help='leave out unfinished runs instead of refusing '
                        'them')
    p.add_argument('--key', default=ACCURACY_KEY,
                   help='log key of the test accuracy (a fraction)')
    p.add_argument('--plot', default=None, metavar='PNG',
                   help='also draw the mean test error +/- SE per group')
    return parser


def _split(parser, text, flag):
    try:
        return shlex.split(text)
    except ValueError as e:
        parser.error('{}: {}'.format(flag, e))


def main(argv=None):
    """Command line entry point (``mn-study``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == 'run':
            flags = list(args.trainer_flags)
            if flags and flags[0] == '--':
                flags = flags[1:]
            trainer = (None if args.trainer is None
                       else _split(parser, args.trainer, '--trainer'))
            if trainer == []:
                parser.error('--trainer: empty command')
            runner = StudyRunner(
                args.out, args.presets, args.seeds, flags, jobs=args.jobs,
                threads=args.threads,
                launcher=_split(parser, args.launcher, '--launcher'),
                trainer=trainer, keep_going=args.keep_going)
            return runner.run()
        if not 0 < args.confidence < 1:
            parser.error('--confidence must be in (0, 1), got {}'.format(
                args.confidence))
        sys.stdout.write(report(
            args.paths, fmt=args.format, window=args.window,
            baseline=args.baseline, confidence=args.confidence,
            skip_incomplete=args.skip_incomplete, key=args.key,
            plot=args.plot))
        return 0
    except StudyError as e:
        if args.debug:
            raise
        if e.status == EXIT_USAGE:
            parser.error(str(e))
        sys.stderr.write('mn-study: error: {}\n'.format(e))
        return e.status
    except (OSError, ValueError) as e:
        if args.debug:
            raise
        sys.stderr.write('mn-study: error: {}\n'.format(e))
        return EXIT_DATA


if __name__ == '__main__':
    sys.exit(main())
