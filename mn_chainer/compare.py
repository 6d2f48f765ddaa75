"""Side-by-side comparison of training runs with the paper's tables.

Usage::

    python -m mn_chainer.compare RUN_DIR [RUN_DIR ...] [--table table2]
        [--dataset cifar10] [--rows BN-2 MN-2] [--baseline RUN_DIR]
        [--format {text,markdown,csv}] [--form {all,accuracy,steps,error}]

Each run directory holds the LogReport ``log`` (a JSON list, one entry per
epoch) and ``args.json`` (the run's resolved settings). The paper table,
dataset and row of each run are read from ``args.json`` (``table``,
``dataset``, ``row``) unless given on the command line.

Three forms of the paper's results are printed:

* the Table II/IV form: maximum test accuracy reached by 25/50/75/100% of
  the run's epochs, ours next to the paper's row;
* the Table III/V/VI form: gradient updates (x1e4) each run needs to first
  reach the BN run's maximum test accuracy, the reduction in % relative to
  the BN run, and each run's maximum accuracy (paper §4, "acceleration");
* the DenseNet form: best test error.

Runs shorter than the paper's (fewer epochs, a subset of the training set,
another batch size) are compared at the same *fraction* of training, and
every such row is labelled. The paper's numbers are shown as stored in
``mn_chainer/data/paper_results.json``.
"""
import argparse
import csv
import io
import math
import os
import sys

import numpy

import mn_chainer.cli
from mn_chainer.logs import ACCURACY_KEY
import mn_chainer.logs
import mn_chainer.paper
import mn_chainer.presets

#: Size of the CIFAR-10/100 training set the paper trained on.
PAPER_N_TRAIN = mn_chainer.presets.PAPER_N_TRAIN

#: Marks a run that never reached the target accuracy (the paper's "–").
NOT_REACHED = 'not reached'

#: The paper's Table II/IV checkpoints, as fractions of training.
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def paper_results():
    """Returns the paper's tables (``mn_chainer/data/paper_results.json``)."""
    return mn_chainer.paper.load_paper_results()


def resolve_table(name):
    """Returns the experiment of a table id (``'table2'``, ``'table3_...'``).

    The experiments are :data:`mn_chainer.presets.EXPERIMENTS`.

    Raises:
        ValueError: for an unknown table id.

    """
    return mn_chainer.presets.experiment_of_table(name)


def _experiment(family):
    return mn_chainer.presets.EXPERIMENTS[family]


# ---------------------------------------------------------------------------
# Metrics on a LogReport log


def accuracy_series(log, key=ACCURACY_KEY):
    """Returns ``(epochs, iterations, accuracies)`` of entries with ``key``.

    Args:
        log (list of dict): LogReport entries.
        key (str): Accuracy key (values are fractions).

    Returns:
        tuple of numpy.ndarray: Epoch and iteration counts at each entry and
        the accuracies, in log order.

    """
    entries = [e for e in log if e.get(key) is not None]
    return (numpy.array([e['epoch'] for e in entries], dtype=numpy.float64),
            numpy.array([e['iteration'] for e in entries], dtype=numpy.int64),
            numpy.array([e[key] for e in entries], dtype=numpy.float64))


def max_accuracy_by_epoch(log, epoch, key=ACCURACY_KEY):
    """Maximum accuracy of the entries logged at or before ``epoch``.

    Returns:
        float or None: ``None`` when no entry is that early.

    """
    epochs, _, acc = accuracy_series(log, key)
    mask = epochs <= epoch + 1e-9
    if not mask.any():
        return None
    return float(acc[mask].max())


def max_accuracy(log, key=ACCURACY_KEY):
    """Maximum accuracy over the whole log (``None`` for an empty log)."""
    _, _, acc = accuracy_series(log, key)
    return float(acc.max()) if len(acc) else None


def steps_to_reach(log, target, key=ACCURACY_KEY):
    """Iteration count of the first entry whose accuracy is >= ``target``.

    This is the paper's acceleration metric (Tables III, V, VI): gradient
    updates needed to first reach the target accuracy, at the resolution
    of the log (one entry per epoch).

    Returns:
        int or None: ``None`` when the target is never reached.

    """
    _, iterations, acc = accuracy_series(log, key)
    reached = numpy.nonzero(acc >= target)[0]
    if not len(reached):
        return None
    return int(iterations[reached[0]])


def checkpoint_epoch(total_epochs, fraction):
    """The last whole epoch within ``fraction`` of ``total_epochs``."""
    return int(math.floor(fraction * total_epochs + 1e-9))


def total_iterations(epochs, n_train, batchsize):
    """Updates of a run of ``epochs`` epochs (Chainer's epoch trigger)."""
    return int(math.ceil(epochs * n_train / float(batchsize) - 1e-9))


# ---------------------------------------------------------------------------
# Runs


class Run(object):

    """One training run: its log, settings and paper table/row.

    Attributes:
        path (str): Run directory.
        label (str): Name shown in the tables.
        log (list of dict): LogReport entries.
        args (dict): The run's ``args.json`` (empty when missing).
        family (str or None): The paper's experiment (a key of
            :data:`mn_chainer.presets.EXPERIMENTS`).
        dataset (str or None): ``cifar10``/``cifar100`` (the Table VI
            schedule key for the ``nesterov`` family).
        row (str or None): Paper row (e.g. ``'MN-2'``).
        epochs (int): Planned epochs (``args.json``'s ``epoch``, else the
            last logged epoch).
        n_train (int or None): Training images used per epoch.
        batchsize (int or None): Minibatch size.

    """

    def __init__(self, path, log, args, key=ACCURACY_KEY):
        self.path = path
        self.label = os.path.basename(os.path.normpath(path))
        self.log = log
        self.args = args
        self.key = key
        self.family = None
        self.dataset = args.get('dataset')
        self.row = args.get('row')
        table = args.get('table')
        if table:
            try:
                self.family = resolve_table(table)
            except ValueError:
                self.family = None
        if self.family is None:
            self.family = mn_chainer.presets.experiment_of_model(
                args.get('model'))
        epochs, iterations, _ = accuracy_series(log, key)
        self.last_epoch = int(epochs[-1]) if len(epochs) else 0
        self.last_iteration = int(iterations[-1]) if len(iterations) else 0
        self.epochs = int(args.get('epoch') or self.last_epoch)
        self.n_train = args.get('n_train')
        self.batchsize = args.get('batchsize')
        self.seed = args.get('seed')

    @property
    def is_bn(self):
        """Whether this is a BN (baseline) run."""
        if self.row:
            return str(self.row).upper().startswith('BN') or (
                str(self.row).upper().endswith('_BN'))
        return not self.args.get('mn_layers')

    @property
    def complete(self):
        return self.last_epoch >= self.epochs

    @property
    def iterations(self):
        """Planned number of updates of the whole run."""
        if self.n_train and self.batchsize:
            return total_iterations(self.epochs, self.n_train, self.batchsize)
        if self.last_epoch:
            return int(round(
                self.last_iteration * self.epochs / float(self.last_epoch)))
        return 0

    def is_short(self, family):
        """Whether the run differs in length from the paper's protocol."""
        spec = _experiment(family)
        return (self.epochs != spec.epoch
                or (self.n_train or PAPER_N_TRAIN) != PAPER_N_TRAIN
                or (self.batchsize or spec.batchsize) != spec.batchsize)

    def describe_length(self):
        parts = ['{} epochs'.format(self.epochs)]
        if self.n_train:
            parts.append('{:,} training images'.format(self.n_train))
        if self.batchsize:
            parts.append('batch {}'.format(self.batchsize))
        return ', '.join(parts)


def load_run(path, key=ACCURACY_KEY):
    """Reads ``<path>/log`` and ``<path>/args.json`` into a :class:`Run`.

    Raises:
        mn_chainer.logs.LogError: If the log is missing or unreadable, or
            ``args.json`` exists but is unreadable (the message names the
            file).

    """
    log = mn_chainer.logs.load_log(path)
    args = mn_chainer.logs.load_args(path) or {}
    return Run(path, log, args, key=key)


def _paper_length(family):
    spec = _experiment(family)
    return spec.epoch, total_iterations(
        spec.epoch, PAPER_N_TRAIN, spec.batchsize)


def _length_notes(runs, family, checkpoints=False):
    """Labels of the runs shorter than the paper's, one per run length."""
    spec = _experiment(family)
    paper_epochs, paper_iters = _paper_length(family)
    groups = {}
    for run in runs:
        if not run.is_short(family):
            continue
        key = (run.epochs, run.n_train, run.batchsize)
        groups.setdefault(key, []).append(run)
    notes = []
    for group in groups.values():
        run = group[0]
        if checkpoints:
            ours = ', '.join(str(checkpoint_epoch(run.epochs, f))
                             for f in FRACTIONS)
            theirs = ', '.join(str(checkpoint_epoch(paper_epochs, f))
                               for f in FRACTIONS)
            what = ('ours at 25/50/75/100% of {} (up to epochs {}) vs paper '
                    'at 25/50/75/100% of {} epochs, {:,} training images, '
                    'batch {} (epochs {})'.format(
                        run.describe_length(), ours, paper_epochs,
                        PAPER_N_TRAIN, spec.batchsize, theirs))
        else:
            what = ('ours {} = {:,} updates vs paper {} epochs, {:,} '
                    'training images, batch {} = {:,} updates'.format(
                        run.describe_length(), run.iterations, paper_epochs,
                        PAPER_N_TRAIN, spec.batchsize, paper_iters))
        notes.append('{}: {}: same fraction of training, not the same '
                     'number of epochs'.format(
                         ', '.join(r.label for r in group), what))
    for run in runs:
        if not run.complete:
            notes.append('{}: incomplete, the log ends at epoch {} of {}'
                         .format(run.label, run.last_epoch, run.epochs))
    return notes


# ---------------------------------------------------------------------------
# Tables


class Table(object):

    """A result table: columns ``(key, header, kind)`` and row dicts.

    ``kind`` selects the cell format: ``text``, ``acc`` (percent, ours),
    ``paper`` (a paper number, shown as stored), ``steps`` (x1e4),
    ``int``, ``pct`` (a percentage with one decimal).
    """

    def __init__(self, title, columns, rows, notes=()):
        self.title = title
        self.columns = columns
        self.rows = rows
        self.notes = list(notes)


def _format_cell(value, kind):
    if value is None:
        return '–'
    if value == NOT_REACHED:
        return NOT_REACHED
    if kind == 'text':
        return str(value)
    if kind == 'paper':
        return '{:.2f}'.format(value)
    if kind == 'acc':
        return '{:.2f}'.format(value)
    if kind == 'steps':
        return '{:.3g}'.format(value)
    if kind == 'int':
        return '{:d}'.format(int(value))
    if kind == 'pct':
        return '{:.1f}'.format(value)
    raise ValueError(kind)


def _csv_cell(value, kind):
    if value is None:
        return ''
    if value == NOT_REACHED or kind == 'text':
        return str(value)
    if kind == 'int':
        return str(int(value))
    if kind == 'paper':
        return repr(value)
    return '{:.6g}'.format(value)


def render_text(tables):
    out = []
    for table in tables:
        out.append(table.title)
        headers = [c[1] for c in table.columns]
        cells = [[_format_cell(row.get(c[0]), c[2]) for c in table.columns]
                 for row in table.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells])
                  for i, h in enumerate(headers)]

        def line(values):
            parts = []
            for (key, _, kind), value, width in zip(
                    table.columns, values, widths):
                if kind == 'text':
                    parts.append(value.ljust(width))
                else:
                    parts.append(value.rjust(width))
            return '  '.join(parts).rstrip()
        out.append(line(headers))
        out.append('  '.join('-' * w for w in widths))
        out.extend(line(r) for r in cells)
        for note in table.notes:
            out.append('  * ' + note)
        out.append('')
    return '\n'.join(out)


def render_markdown(tables):
    out = []
    for table in tables:
        out.append('**{}**'.format(table.title))
        out.append('')
        out.append('| ' + ' | '.join(c[1] for c in table.columns) + ' |')
        out.append('|' + '|'.join(
            ':---' if c[2] == 'text' else '---:' for c in table.columns)
            + '|')
        for row in table.rows:
            out.append('| ' + ' | '.join(
                _format_cell(row.get(c[0]), c[2]).replace('|', '\\|')
                for c in table.columns) + ' |')
        out.append('')
        for note in table.notes:
            out.append('- ' + note)
        if table.notes:
            out.append('')
    return '\n'.join(out)


def render_csv(tables):
    """CSV blocks, one per table, separated by an empty line.

    Each block has a header row; its first column ``table`` repeats the
    table title and its last column ``note`` carries the row's label for
    runs compared at a fraction of the paper's training.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    for i, table in enumerate(tables):
        if i:
            writer.writerow([])
        writer.writerow(['table'] + [c[0] for c in table.columns] + ['note'])
        for row in table.rows:
            writer.writerow(
                [table.title]
                + [_csv_cell(row.get(c[0]), c[2]) for c in table.columns]
                + [row.get('note', '')])
    return buf.getvalue()


RENDERERS = {'text': render_text, 'markdown': render_markdown,
             'csv': render_csv}


def _pct(fraction):
    return None if fraction is None else 100.0 * fraction


def _paper_section(paper, family, form, dataset):
    key, title = _experiment(family).results[form]
    section = paper[key]
    if dataset is None or dataset not in section:
        return title, None
    return title, section[dataset]


def _dataset_label(dataset):
    return {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100'}.get(
        dataset, dataset or 'dataset unknown')


def _mean_rows(rows, keys, label_key='run'):
    """Adds a "mean of N" row after each row group with several runs."""
    out = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and rows[j].get('row') == rows[i].get('row') \
                and rows[i].get('row'):
            j += 1
        j = max(j, i + 1)
        out.extend(rows[i:j])
        if j - i > 1:
            mean = dict(rows[i])
            mean[label_key] = 'mean of {}'.format(j - i)
            mean['note'] = ''
            for key in keys:
                values = [r.get(key) for r in rows[i:j]]
                values = [v for v in values
                          if v is not None and v != NOT_REACHED]
                mean[key] = (float(numpy.mean(values))
                             if len(values) == j - i else None)
            out.append(mean)
        i = j
    return out


def _sorted_runs(runs):
    return sorted(runs, key=lambda r: (not r.is_bn, str(r.row or ''),
                                       str(r.seed), r.label))


def accuracy_table(runs, family, dataset, paper):
    """The Table II/IV form for runs of one family and dataset."""
    title, section = _paper_section(paper, family, 'accuracy', dataset)
    paper_epochs, _ = _paper_length(family)
    pcts = [int(round(100 * f)) for f in FRACTIONS]
    columns = [('run', 'run', 'text'), ('row', 'row', 'text'),
               ('epochs', 'epochs ours/paper', 'text')]
    for p in pcts:
        columns.append(('acc_{}_ours'.format(p), 'ours {}%'.format(p),
                        'acc'))
        columns.append(('acc_{}_paper'.format(p), 'paper {}%'.format(p),
                        'paper'))
    rows, notes = [], []
    for run in _sorted_runs(runs):
        row = {'run': run.label, 'row': run.row,
               'epochs': '{}/{}'.format(run.epochs, paper_epochs)}
        paper_row = (section or {}).get(run.row) if run.row else None
        ours_epochs = []
        for p, fraction in zip(pcts, FRACTIONS):
            epoch = checkpoint_epoch(run.epochs, fraction)
            ours_epochs.append(epoch)
            value = None
            if epoch >= 1 and epoch <= run.last_epoch:
                value = _pct(max_accuracy_by_epoch(run.log, epoch, run.key))
            row['acc_{}_ours'.format(p)] = value
            row['acc_{}_paper'.format(p)] = (
                paper_row['acc'][pcts.index(p)] if paper_row else None)
        if run.is_short(family):
            row['note'] = (
                'ours at 25/50/75/100% of {} (max up to epochs {}) vs paper '
                'at 25/50/75/100% of {} epochs'.format(
                    run.describe_length(),
                    ', '.join(str(e) for e in ours_epochs), paper_epochs))
        rows.append(row)
    spec = _experiment(family)
    checkpoints = paper[spec.results['accuracy'][0]]['checkpoints_epochs']
    heading = ('{} ({}), {}: max test accuracy (%) reached by 25/50/75/100% '
               'of training (paper: epochs {})'.format(
                   title, spec.title, _dataset_label(dataset),
                   ', '.join(str(e) for e in checkpoints)))
    notes.extend(_length_notes(runs, family, checkpoints=True))
    for run in runs:
        if run.row and section is not None and run.row not in section:
            notes.append('{}: row {} is not in {} for {}'.format(
                run.label, run.row, title, _dataset_label(dataset)))
    if section is None:
        notes.append('no paper numbers: dataset {!r} is not in {}'.format(
            dataset, title))
    keys = ['acc_{}_ours'.format(p) for p in pcts]
    return Table(heading, columns, _mean_rows(rows, keys), notes)


def _baselines(runs, baseline_path):
    """Maps each run to its BN baseline run (or None) and returns notes."""
    notes = []
    if baseline_path is not None:
        real = os.path.realpath(baseline_path)
        bns = [r for r in runs if os.path.realpath(r.path) == real]
    else:
        bns = [r for r in runs if r.is_bn]
    mapping = {}
    for run in runs:
        if run in bns:
            mapping[run] = run
        elif not bns:
            mapping[run] = None
        elif len(bns) == 1:
            mapping[run] = bns[0]
        else:
            same_seed = [b for b in bns if b.seed == run.seed]
            mapping[run] = same_seed[0] if same_seed else bns[0]
            if not same_seed:
                notes.append('{}: no BN run with seed {}; target from {}'
                             .format(run.label, run.seed, bns[0].label))
    if len(bns) > 1:
        notes.append('several BN runs: each run is compared with the BN run '
                     'of its seed')
    if not bns:
        notes.append('no BN run among these runs (give --baseline DIR): '
                     'no target accuracy')
    return mapping, notes


def steps_table(runs, family, dataset, paper, baseline_path=None):
    """The Table III/V/VI form for runs of one family and dataset."""
    title, section = _paper_section(paper, family, 'steps', dataset)
    paper_epochs, paper_iters = _paper_length(family)
    mapping, notes = _baselines(runs, baseline_path)
    any_short = any(r.is_short(family) for r in runs)
    columns = [('run', 'run', 'text'), ('row', 'row', 'text'),
               ('target_ours', 'target', 'acc'),
               ('updates_ours', 'updates', 'int'),
               ('steps_ours', 'ours x1e4', 'steps')]
    if any_short:
        columns.append(('steps_scaled', 'ours scaled x1e4', 'steps'))
    columns += [('steps_paper', 'paper x1e4', 'paper'),
                ('train_pct_ours', 'ours % of training', 'pct'),
                ('train_pct_paper', 'paper % of training', 'pct'),
                ('reduction_ours', 'ours reduction %', 'pct'),
                ('reduction_paper', 'paper reduction %', 'pct'),
                ('max_acc_ours', 'ours max acc', 'acc'),
                ('max_acc_paper', 'paper max acc', 'paper'),
                ('target_paper', 'paper target', 'paper')]
    paper_rows = (section or {}).get('rows', {})
    paper_bn = [v['steps'] for k, v in paper_rows.items()
                if k.upper().startswith('BN')]
    paper_bn_steps = paper_bn[0] if paper_bn else None
    rows = []
    fractions = {}
    ordered = _sorted_runs(runs)
    for run in ordered:
        row = {'run': run.label, 'row': run.row,
               'max_acc_ours': _pct(max_accuracy(run.log, run.key))}
        base = mapping.get(run)
        target = max_accuracy(base.log, base.key) if base else None
        row['target_ours'] = _pct(target)
        if target is not None:
            updates = steps_to_reach(run.log, target, run.key)
            if updates is None:
                # The paper's "–"; the derived columns stay empty.
                row['updates_ours'] = row['steps_ours'] = NOT_REACHED
            else:
                row['updates_ours'] = updates
                row['steps_ours'] = updates / 1e4
                fraction = updates / float(run.iterations or updates)
                fractions[run] = fraction
                row['train_pct_ours'] = 100.0 * fraction
                row['steps_scaled'] = fraction * paper_iters / 1e4
        paper_row = paper_rows.get(run.row) if run.row else None
        if paper_row is not None:
            row['target_paper'] = section['target']
            row['max_acc_paper'] = paper_row['max_acc']
            steps = paper_row['steps']
            if steps is None:
                row['steps_paper'] = NOT_REACHED
            else:
                row['steps_paper'] = steps
                row['train_pct_paper'] = 100.0 * steps * 1e4 / paper_iters
                if paper_bn_steps:
                    row['reduction_paper'] = 100.0 * (
                        1.0 - steps / paper_bn_steps)
        if run.is_short(family):
            row['note'] = (
                'ours: {} ({} updates); scaled steps = fraction of our '
                'training x paper\'s {:,} updates ({} epochs)'.format(
                    run.describe_length(), run.iterations, paper_iters,
                    paper_epochs))
        rows.append(row)
    # Reductions need the baseline's own steps (to its own maximum).
    for row, run in zip(rows, ordered):
        base = mapping.get(run)
        if run in fractions and base in fractions:
            row['reduction_ours'] = 100.0 * (
                1.0 - fractions[run] / fractions[base])
    heading = ('{} ({}), {}: gradient updates to first reach the BN run\'s '
               'max test accuracy ("target", %{})'.format(
                   title, _experiment(family).title, _dataset_label(dataset),
                   '' if section is None else
                   '; paper target {:.2f}'.format(section['target'])))
    if any_short:
        notes.insert(0, 'runs shorter than the paper\'s are compared at the '
                        'same fraction of training: "% of training" and '
                        '"ours scaled x1e4" (our fraction x the paper\'s '
                        '{:,} updates); reductions are computed from '
                        'fractions of training'.format(paper_iters))
    notes.extend(_length_notes(runs, family))
    if paper_bn_steps:
        notes.append('paper reduction % = 1 - steps / BN steps, computed '
                     'here from the paper\'s steps')
    notes.append('resolution of our steps: one log entry (usually one '
                 'epoch)')
    for run in ordered:
        if run.row and section is not None and run.row not in paper_rows:
            notes.append('{}: row {} is not in {} for {}'.format(
                run.label, run.row, title, _dataset_label(dataset)))
    if section is None:
        notes.append('no paper numbers for {!r} in {}'.format(
            dataset, title))
    keys = ['max_acc_ours', 'steps_ours', 'steps_scaled', 'train_pct_ours',
            'updates_ours', 'reduction_ours']
    return Table(heading, columns, _mean_rows(rows, keys), notes)


def error_table(runs, family, dataset, paper):
    """The DenseNet form: best test error (%) ours next to the paper's."""
    key, title = _experiment(family).results['error']
    paper_rows = paper[key]['best_test_error_percent']
    paper_epochs, _ = _paper_length(family)
    columns = [('run', 'run', 'text'), ('row', 'row', 'text'),
               ('epochs', 'epochs ours/paper', 'text'),
               ('error_ours', 'best test error % ours', 'acc'),
               ('error_paper', 'best test error % paper', 'paper')]
    rows, notes = [], []
    for run in _sorted_runs(runs):
        best = max_accuracy(run.log, run.key)
        row = {'run': run.label, 'row': run.row,
               'epochs': '{}/{}'.format(run.epochs, paper_epochs),
               'error_ours': None if best is None else 100.0 * (1 - best),
               'error_paper': paper_rows.get(run.row) if run.row else None}
        if run.is_short(family):
            row['note'] = 'ours after {} vs paper after {} epochs'.format(
                run.describe_length(), paper_epochs)
        rows.append(row)
    notes.extend(_length_notes(runs, family))
    heading = '{} ({}): best test error (%)'.format(
        title, _experiment(family).title)
    return Table(heading, columns, _mean_rows(rows, ['error_ours']), notes)


def _nesterov_setting(run, paper, setting):
    section = paper[_experiment('nesterov').results['steps'][0]]
    keys = [k for k in section if k.startswith('decay_')]
    if setting is not None:
        return setting
    for value in (run.dataset, run.args.get('setting'), run.row,
                  run.args.get('preset'), run.args.get('lr_schedule')):
        for k in keys:
            if value and k in str(value):
                return k
    return run.dataset


def build_tables(runs, paper, form='all', baseline=None, setting=None):
    """Groups runs by family and dataset and builds the requested tables."""
    groups = {}
    for run in runs:
        if run.family is None:
            raise ValueError(
                '{}: unknown paper table (no "table" or known "model" in '
                'args.json); give --table'.format(run.path))
        dataset = run.dataset
        if run.family == 'nesterov':
            dataset = _nesterov_setting(run, paper, setting)
        groups.setdefault((run.family, dataset), []).append(run)
    tables = []
    for (family, dataset), group in groups.items():
        results = _experiment(family).results
        if 'accuracy' in results and form in ('all', 'accuracy'):
            tables.append(accuracy_table(group, family, dataset, paper))
        if 'steps' in results and form in ('all', 'steps'):
            tables.append(steps_table(group, family, dataset, paper,
                                      baseline_path=baseline))
        if 'error' in results and form in ('all', 'error'):
            tables.append(error_table(group, family, dataset, paper))
    return tables


def _parser():
    parser = argparse.ArgumentParser(
        prog='mn-compare',
        description='Compare training runs (LogReport logs) with the '
                    'paper\'s tables II-VI and the DenseNet results.')
    parser.add_argument('runs', nargs='+', metavar='RUN_DIR',
                        help='run directories (each with "log" and '
                             '"args.json")')
    parser.add_argument('--table', default=None,
                        help='paper table of all runs: table2 (CIFAR CNN), '
                             'table3, table4 (Inception-V3), table5, table6 '
                             '(Nesterov), densenet; default: args.json')
    parser.add_argument('--dataset', default=None,
                        help='cifar10 or cifar100 (default: args.json)')
    parser.add_argument('--setting', default=None,
                        help='Table VI schedule: decay_0.1_at_0.5_0.75 or '
                             'decay_0.2_at_0.3_0.6_0.8')
    parser.add_argument('--rows', nargs='+', default=None,
                        help='paper row of each run, in order (default: '
                             'args.json "row")')
    parser.add_argument('--labels', nargs='+', default=None,
                        help='names of the runs in the tables (default: '
                             'directory names)')
    parser.add_argument('--baseline', default=None, metavar='RUN_DIR',
                        help='the BN run whose max accuracy is the target '
                             '(default: the run whose row starts with BN)')
    parser.add_argument('--format', choices=sorted(RENDERERS),
                        default='text', help='output format')
    parser.add_argument('--form', choices=('all', 'accuracy', 'steps',
                                           'error'),
                        default='all', help='which tables to print')
    parser.add_argument('--key', default=ACCURACY_KEY,
                        help='log key of the test accuracy (a fraction)')
    return parser


def _main(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rows is not None and len(args.rows) != len(args.runs):
        parser.error('--rows needs one row per run ({} runs, {} rows)'
                     .format(len(args.runs), len(args.rows)))
    if args.labels is not None and len(args.labels) != len(args.runs):
        parser.error('--labels needs one label per run')
    if args.table is not None:
        try:
            family = resolve_table(args.table)
        except ValueError as e:
            parser.error(str(e))
    if args.baseline is not None and not any(
            os.path.realpath(args.baseline) == os.path.realpath(r)
            for r in args.runs):
        args.runs.append(args.baseline)
        if args.rows is not None:
            args.rows.append(None)
        if args.labels is not None:
            args.labels.append(
                os.path.basename(os.path.normpath(args.baseline)))
    runs = []
    for i, path in enumerate(args.runs):
        run = load_run(path, key=args.key)
        if args.table is not None:
            run.family = family
        if args.dataset is not None:
            run.dataset = args.dataset
        if args.rows is not None and args.rows[i] is not None:
            run.row = args.rows[i]
        if args.labels is not None:
            run.label = args.labels[i]
        runs.append(run)
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = os.path.normpath(run.path)
    try:
        tables = build_tables(runs, paper_results(), form=args.form,
                              baseline=args.baseline, setting=args.setting)
    except ValueError as e:
        parser.error(str(e))
    sys.stdout.write(RENDERERS[args.format](tables))
    return 0


def main(argv=None):
    """Command line entry point (``mn-compare``).

    An unreadable run ends with one line on stderr naming its file and
    exit status 1; usage errors exit with status 2 (see
    :mod:`mn_chainer.cli`).
    """
    return mn_chainer.cli.run(_main, argv, prog='mn-compare')


if __name__ == '__main__':
    sys.exit(main())
