"""Statistics of a multi-seed study: what ``mn-study report`` prints.

The runs (``train_cifar.py`` run directories) are grouped by the paper row
in their ``args.json``; over the seeds of each group the report gives the
test accuracy per evaluation (mean +/- standard error), the windowed metric
(mean of each run's last ``window`` evaluations, DESIGN.md §3), the best
accuracy; for every other group against the BN group, the paired difference
over the seeds both ran (mean, SE, Student-t interval) of the windowed and
best accuracies; and the gradient updates each run needs to first reach the
BN group's mean best accuracy, as the paper's Table III (mean +/- SE over
the runs that reach it, how many never do, and the reduction against BN).

Runs of one group must share every setting but the ones in
:data:`RUN_SPECIFIC_SETTINGS`, and be complete and evaluated at the same
updates: mismatched runs are an error naming the setting or the runs, never
averaged. The numbers come from :mod:`mn_chainer.stats`; the tables are
:class:`mn_chainer.compare.Table` objects rendered as text, markdown or CSV
(CSV splits each ``mean ± SE`` into two columns).
"""
import collections
import json
import os

import numpy

import mn_chainer.cli
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
#: statistics), where and on what a run ran (the path of its data file: the
#: same images may lie elsewhere), how it was started and resumed, and what
#: it dumped besides its log and what it evaluated after its training.
RUN_SPECIFIC_SETTINGS = frozenset([
    'seed', 'pixel_mean', 'pixel_std', 'out', 'data', 'device',
    'loaderjob', 'communicator', 'resume', 'resumes', 'argv',
    'dump_mixtures', 'dump_every', 'finetune_batches',
])

#: Settings that make a group what it is (its normalization and paper row):
#: they differ between groups and are not listed as differences.
GROUP_SETTINGS = frozenset([
    'preset', 'row', 'norm', 'mn_layers', 'mn_norms', 'n_components',
    'em_iter', 'mn_relu',
])


# ---------------------------------------------------------------------------
# Runs as the report sees them


class StudyRun(object):

    """One finished (or interrupted) run: settings and test accuracies.

    Attributes:
        path (str): Run directory.
        args (dict): Its ``args.json``.
        log (list of dict): Its LogReport entries.
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
        mn_chainer.cli.CommandError: For a path that is not a directory
            (a usage error) or holds no run.

    """
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise mn_chainer.cli.UsageError('{}: not a directory'.format(path))
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
            raise mn_chainer.cli.CommandError(
                '{}: no run directories (with args.json or log) in it'
                .format(path))
        found.extend(below)
    return found


def load_study_run(path, key=ACCURACY_KEY):
    """Reads a run directory into a :class:`StudyRun`.

    A run without a ``log`` yet (stopped in its first epoch) has no
    evaluations.

    Raises:
        mn_chainer.cli.CommandError: For a missing or unreadable
            ``args.json`` or ``log``, or ``args.json`` without a seed.

    """
    try:
        args = mn_chainer.logs.load_args(path)
        log = (mn_chainer.logs.load_log(path)
               if os.path.isfile(os.path.join(path, 'log')) else [])
    except (OSError, ValueError) as e:
        raise mn_chainer.cli.CommandError(str(e))
    if args is None:
        raise mn_chainer.cli.CommandError(
            '{}: no args.json (the report groups runs by the settings in '
            'it)'.format(path))
    seed = args.get('seed')
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise mn_chainer.cli.CommandError('{}: "seed" is {}, not an integer'
                                          .format(os.path.join(
                                              path, 'args.json'),
                                              json.dumps(seed)))
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
        raise mn_chainer.cli.CommandError(
            'group {}: its runs differ in setting {!r}: {}{}'.format(
                name, setting, '; '.join(
                    '{} in {}'.format(json.dumps(v), ', '.join(
                        r.path for r in members)) for v, members in values),
                ' (and in {})'.format(', '.join(list(diffs)[1:]))
                if len(diffs) > 1 else ''))
    seen = {}
    for run in runs:
        if run.seed in seen:
            raise mn_chainer.cli.CommandError(
                'group {}: seed {} twice: {} and {}'.format(
                    name, run.seed, seen[run.seed].path, run.path))
        seen[run.seed] = run
    first = runs[0]
    for run in runs[1:]:
        if (len(run.iterations) != len(first.iterations)
                or (run.iterations != first.iterations).any()
                or (run.epochs != first.epochs).any()):
            raise mn_chainer.cli.CommandError(
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
        mn_chainer.cli.CommandError: For an incomplete run (unless
            skipped), or a group whose runs differ in a setting
            (:data:`RUN_SPECIFIC_SETTINGS` may differ), repeat a seed or
            differ in length.

    """
    skipped = []
    groups = collections.OrderedDict()
    for run in runs:
        if not run.complete:
            if skip_incomplete:
                skipped.append(run)
                continue
            raise mn_chainer.cli.CommandError(
                '{}: incomplete: its log ends at epoch {} of {} (resume it '
                'with mn-study run, or leave it out with --skip-incomplete)'
                .format(run.path, run.last_epoch,
                        run.planned_epochs if run.planned_epochs is not None
                        else '? (no "epoch" in args.json)'))
        groups.setdefault(run.group, []).append(run)
    if not groups:
        raise mn_chainer.cli.CommandError('no complete runs')
    for name, members in groups.items():
        members.sort(key=lambda r: r.seed)
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
        """Mean +/- SE over seeds of ``'windowed'`` or ``'best'``."""
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
            raise mn_chainer.cli.UsageError(
                '--baseline {}: no such group; groups: {}'.format(
                    baseline, ', '.join(summaries)))
        return summaries[baseline]
    bns = [s for s in summaries.values() if s.runs[0].is_bn]
    if len(bns) > 1:
        raise mn_chainer.cli.UsageError(
            'several BN groups ({}): give --baseline ROW'.format(
                ', '.join(s.name for s in bns)))
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
        target (float or None): The baseline's mean best accuracy, the
            target of the updates-to-reach metric.
        baseline_reach (dict or None): Seed -> updates the baseline's runs
            need to reach ``target``.

    """

    def __init__(self, groups, window=3, baseline=None, confidence=0.95):
        self.window = window
        self.confidence = confidence
        self.groups = collections.OrderedDict(
            (name, GroupSummary(name, runs, window))
            for name, runs in groups.items())
        self.baseline = _choose_baseline(self.groups, baseline)
        self.comparisons = []
        self.target = self.baseline_reach = None
        if self.baseline is None:
            return
        self.target = self.baseline.estimate('best').mean
        self.baseline_reach = reach_updates(self.baseline, self.target)
        for group in self.groups.values():
            if group is not self.baseline:
                self.comparisons.append(Comparison(
                    group, self.baseline, self.target, confidence))


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


def plural(n, noun):
    """``'1 seed'``, ``'2 seeds'``."""
    return '{} {}{}'.format(n, noun, '' if n == 1 else 's')


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
            notes.append('{}: {}, fewer than the window of {}: its '
                         'windowed metric averages all of them'.format(
                             g.name, plural(n_evals, 'evaluation'),
                             summary.window))
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
    updates = collections.defaultdict(set)   # epoch -> updates done by then
    for g in groups:
        for epoch, iteration in zip(g.epochs.tolist(), g.iterations):
            updates[epoch].add(int(iteration))
    same_updates = all(len(u) == 1 for u in updates.values())
    rows = []
    for epoch in sorted(updates):
        row = {}
        cells.number(row, 'epoch', 'epoch', epoch, 'int')
        if same_updates:
            cells.number(row, 'updates', 'updates', min(updates[epoch]),
                         'int')
        for g in groups:
            where = g.epochs.tolist()
            est = mn_chainer.stats.Estimate(None, None, 0)
            if epoch in where:
                i = where.index(epoch)
                est = mn_chainer.stats.Estimate(
                    g.curve_mean[i],
                    None if g.curve_se is None else g.curve_se[i], g.n)
            cells.estimate(row, g.name, '{} % ({})'.format(
                g.name, plural(g.n, 'seed')), est)
        rows.append(row)
    notes = [] if same_updates else [
        'the groups do different numbers of updates per epoch: ' + ', '.join(
            '{} {:g}'.format(g.name, g.iterations[-1] / g.epochs[-1])
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
        mn_chainer.cli.CommandError: For unreadable, incomplete or
            mismatched runs (:class:`~mn_chainer.cli.UsageError` for bad
            arguments).

    """
    if window < 1:
        raise mn_chainer.cli.UsageError(
            '--window must be >= 1, got {}'.format(window))
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
