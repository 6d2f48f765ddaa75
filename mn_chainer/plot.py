"""Figures of the paper's analysis from training logs and mixture dumps.

Usage::

    python -m mn_chainer.plot curves RUN_DIR [RUN_DIR ...] [-o curves.png]
        [--labels ...] [--window 10] [--group-by row | --groups ...]
    python -m mn_chainer.plot effective-k RUN_DIR [RUN_DIR ...]
        [-o effective_k.png] [--layers ...]
    python -m mn_chainer.plot mixture RUN_DIR_OR_NPZ [--layer NAME]
        [-o mixture.png] [--channels 4] [--seed 0]

* ``curves``: test error (%) vs epoch of several runs, each with a shaded
  band of one standard deviation computed within a sliding window of 10
  epochs around each epoch (paper Fig. 2); with ``--group-by row`` (or
  ``--groups``) the runs of a group (the seeds of a row) become one mean
  curve with a band of one standard error over the seeds.
* ``effective-k``: the effective number of mixture components of every MN
  layer over training, from the ``mn/<name>/effective_k`` log keys written
  by :class:`mn_chainer.extensions.MixtureMonitor` (paper Fig. 9).
* ``mixture``: the evolution of one MN layer's mixture from the
  ``MixtureMonitor`` npz dump: for a random subset of channels, the
  weighted component densities :math:`\\lambda_k \\mathcal{N}(x; \\mu_{kc},
  \\sigma^2_{kc})` and their sum at each dumped fraction of training
  (20/40/60/80/100%), plus the distribution of the component weights
  (paper Fig. 8).

Figures are drawn with matplotlib's Agg canvas (no display needed) and
saved as PNG.
"""
import argparse
import collections
import os
import sys
import zipfile
import zlib

import matplotlib.ticker
import numpy

import mn_chainer.cli
import mn_chainer.logs
import mn_chainer.stats
from mn_chainer.logs import ACCURACY_KEY
from mn_chainer.logs import load_log  # NOQA: F401 (part of this API)
from mn_chainer.logs import LogError


def _figure(figsize):
    # Agg canvas without pyplot: no global backend state is touched.
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    fig = matplotlib.figure.Figure(figsize=figsize)
    matplotlib.backends.backend_agg.FigureCanvasAgg(fig)
    return fig


def _save(fig, path, dpi=100):
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format='png')
    return path


def sliding_mean_std(values, window=10):
    """Mean and standard deviation of ``values`` within a sliding window.

    The window of ``window`` entries is centred on each entry (entries
    ``i - window // 2`` to ``i + (window - 1) // 2``) and truncated at the
    ends of the series; the standard deviation is the population one
    (``ddof=0``).

    Args:
        values (array-like of shape (n,)): The series.
        window (int): Window length in entries (epochs).

    Returns:
        tuple of numpy.ndarray: ``(mean, std)``, each of shape ``(n,)``.

    """
    values = numpy.asarray(values, dtype=numpy.float64)
    if window < 1:
        raise ValueError('window must be >= 1, got {}'.format(window))
    n = len(values)
    mean = numpy.empty(n)
    std = numpy.empty(n)
    before, after = window // 2, (window - 1) // 2
    for i in range(n):
        chunk = values[max(0, i - before):i + after + 1]
        mean[i] = chunk.mean()
        std[i] = chunk.std()
    return mean, std


def error_series(log, key=ACCURACY_KEY):
    """``(epochs, test error in %)`` of the log entries that have ``key``."""
    entries = [e for e in log if e.get(key) is not None]
    epochs = numpy.array([e['epoch'] for e in entries], dtype=numpy.float64)
    error = 100.0 * (1.0 - numpy.array([e[key] for e in entries],
                                       dtype=numpy.float64))
    return epochs, error


def plot_curves(runs, path, window=10, key=ACCURACY_KEY, title=None,
                groups=None):
    """Test error vs epoch with a windowed one-std band (paper Fig. 2).

    Args:
        runs (list of (str, list)): ``(label, log)`` pairs.
        path (str): PNG file to write.
        window (int): Sliding window length in epochs.
        key (str): Log key of the test accuracy (a fraction).
        title (str or None): Figure title.
        groups (list of str or None): Group of each run (e.g. its paper
            row). Given, the runs of a group (its seeds) are drawn as one
            mean curve with a band of +/- one standard error over the runs
            (each run as a thin line), instead of one curve per run with
            its windowed band; ``window`` is not used. The runs of a group
            must be evaluated at the same epochs.

    Returns:
        str: ``path``.

    """
    if groups is not None:
        return _plot_group_curves(runs, groups, path, key, title)
    fig = _figure((7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, log) in enumerate(runs):
        epochs, error = error_series(log, key)
        if not len(epochs):
            raise ValueError('{}: no {!r} in the log'.format(label, key))
        mean, std = sliding_mean_std(error, window)
        color = 'C{}'.format(i % 10)
        ax.plot(epochs, error, color=color, alpha=0.35, linewidth=0.8)
        ax.plot(epochs, mean, color=color, linewidth=1.8,
                label='{} (min {:.2f}%)'.format(label, error.min()))
        ax.fill_between(epochs, mean - std, mean + std, color=color,
                        alpha=0.2, linewidth=0)
    ax.set_xlabel('epoch')
    ax.set_ylabel('test error (%)')
    ax.set_title(title or 'Test error ({}-epoch window mean +/- 1 std)'
                 .format(window))
    ax.grid(True, alpha=0.3)
    ax.legend(loc='upper right', fontsize='small')
    return _save(fig, path)


def group_error_curves(runs, groups, key=ACCURACY_KEY):
    """Mean test error and its standard error over the runs of each group.

    Args:
        runs (list of (str, list)): ``(label, log)`` pairs.
        groups (list of str): Group of each run.
        key (str): Log key of the test accuracy (a fraction).

    Returns:
        collections.OrderedDict: group -> ``(epochs, errors, mean, se)``
        in order of first appearance: the epochs, the ``(runs, epochs)``
        test errors in %, their mean over the runs and its standard error
        (``std(ddof=1) / sqrt(runs)``; ``None`` for a single run).

    Raises:
        ValueError: For a log without ``key`` or runs of one group
            evaluated at different epochs.

    """
    if len(groups) != len(runs):
        raise ValueError('groups: one group per run needed ({} runs, {} '
                         'groups)'.format(len(runs), len(groups)))
    members = collections.OrderedDict()
    for (label, log), group in zip(runs, groups):
        epochs, error = error_series(log, key)
        if not len(epochs):
            raise ValueError('{}: no {!r} in the log'.format(label, key))
        members.setdefault(group, []).append((label, epochs, error))
    curves = collections.OrderedDict()
    for group, series in members.items():
        first_label, epochs, _ = series[0]
        for label, other, _ in series[1:]:
            if len(other) != len(epochs) or (other != epochs).any():
                raise ValueError(
                    'group {}: its runs are evaluated at different epochs: '
                    '{} at {} epochs, {} at {}; plot them without groups'
                    .format(group, first_label, len(epochs), label,
                            len(other)))
        errors = numpy.stack([error for _, _, error in series])
        mean, se = mn_chainer.stats.mean_se_columns(errors)
        curves[group] = (epochs, errors, mean, se)
    return curves


def _plot_group_curves(runs, groups, path, key, title):
    """Mean test error +/- one SE over the runs of each group."""
    curves = group_error_curves(runs, groups, key)
    fig = _figure((7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for i, (group, (epochs, errors, mean, se)) in enumerate(curves.items()):
        color = 'C{}'.format(i % 10)
        for error in errors:
            ax.plot(epochs, error, color=color, alpha=0.3, linewidth=0.6)
        n = len(errors)
        ax.plot(epochs, mean, color=color, linewidth=1.8,
                label='{} ({} run{}, min of mean {:.2f}%{})'.format(
                    group, n, '' if n == 1 else 's', mean.min(),
                    '' if se is not None else ', no SE band'))
        if se is not None:
            ax.fill_between(epochs, mean - se, mean + se, color=color,
                            alpha=0.2, linewidth=0)
    ax.set_xlabel('epoch')
    ax.set_ylabel('test error (%)')
    ax.set_title(title or 'Test error: mean over seeds +/- 1 SE')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='upper right', fontsize='small')
    return _save(fig, path)


def effective_k_series(log):
    """Effective K of every MN layer in a log.

    Returns:
        dict: layer name -> ``(epochs, effective_k)`` arrays, in the order
        the layers first appear in the log.

    """
    names = []
    for entry in log:
        for key in entry:
            if key.startswith('mn/') and key.endswith('/effective_k'):
                name = key[len('mn/'):-len('/effective_k')]
                if name not in names:
                    names.append(name)
    series = {}
    for name in names:
        key = 'mn/{}/effective_k'.format(name)
        entries = [e for e in log if e.get(key) is not None]
        series[name] = (
            numpy.array([e['epoch'] for e in entries], dtype=numpy.float64),
            numpy.array([e[key] for e in entries], dtype=numpy.float64))
    return series


def plot_effective_k(runs, path, layers=None, title=None):
    """Effective K per MN layer over training (paper Fig. 9).

    Args:
        runs (list of (str, list)): ``(label, log)`` pairs; one panel each.
        path (str): PNG file to write.
        layers (list of str or None): Layers to draw (default: all).
        title (str or None): Figure title.

    Returns:
        str: ``path``.

    """
    fig = _figure((7, 3.2 * len(runs) + 0.6))
    for i, (label, log) in enumerate(runs):
        series = effective_k_series(log)
        if layers is not None:
            missing = [n for n in layers if n not in series]
            if missing:
                raise ValueError('{}: no effective K logged for {}; layers: '
                                 '{}'.format(label, ', '.join(missing),
                                             ', '.join(series) or 'none'))
            series = {n: series[n] for n in layers}
        if not series:
            raise ValueError('{}: no mn/<layer>/effective_k keys in the log '
                             '(was MixtureMonitor used?)'.format(label))
        ax = fig.add_subplot(len(runs), 1, i + 1)
        for j, (name, (epochs, k)) in enumerate(series.items()):
            ax.plot(epochs, k, marker='o', markersize=3, linewidth=1.2,
                    color='C{}'.format(j % 10), label=name)
        top = max(k.max() for _, k in series.values())
        ax.set_ylim(0, top + 0.5)
        ax.yaxis.set_major_locator(
            matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.set_ylabel('effective K')
        ax.set_title(label if len(runs) > 1 or title is None else title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc='lower right', fontsize='small',
                  ncol=max(1, len(series) // 6))
    if title is not None and len(runs) > 1:
        fig.suptitle(title)
    return _save(fig, path)


def load_mixtures(path):
    """Reads a :class:`~mn_chainer.extensions.MixtureMonitor` npz dump.

    Args:
        path (str): The npz file, or a run directory holding
            ``mixtures.npz``.

    Returns:
        dict: layer name -> {fraction (float) -> {field -> array}} with the
        fields ``weights``, ``means``, ``variances`` (and ``iteration``,
        ``epoch`` when present).

    """
    if os.path.isdir(path):
        path = os.path.join(path, 'mixtures.npz')
    if not os.path.isfile(path):
        raise LogError(path, 'no such file (train with --dump-mixtures '
                             'LAYERS to write it)')
    layers = {}
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                parts = key.rsplit('/', 2)
                if len(parts) != 3:
                    continue
                layer, fraction, field = parts
                layers.setdefault(layer, {}).setdefault(
                    float(fraction), {})[field] = npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile,
            zlib.error) as e:
        raise LogError(path, 'not a readable mixture dump ({}: {})'.format(
            type(e).__name__, e))
    for layer, dumps in layers.items():
        for fraction, fields in dumps.items():
            missing = [f for f in ('weights', 'means', 'variances')
                       if f not in fields]
            if missing:
                raise LogError(path, 'the dump of layer {} at {:g} lacks {}'
                               .format(layer, fraction, ', '.join(missing)))
    if not layers:
        raise LogError(path, 'holds no mixtures')
    return layers


def gaussian_densities(x, weights, means, variances):
    """Weighted component densities of one channel.

    Args:
        x (numpy.ndarray of shape (n,)): Points.
        weights, means, variances (numpy.ndarray of shape (K,)): The
            channel's mixture.

    Returns:
        numpy.ndarray of shape (K, n): :math:`\\lambda_k \\mathcal{N}(x;
        \\mu_k, \\sigma_k^2)`; their sum over ``k`` is the mixture density.

    """
    x = numpy.asarray(x, dtype=numpy.float64)[None, :]
    w = numpy.asarray(weights, dtype=numpy.float64)[:, None]
    mu = numpy.asarray(means, dtype=numpy.float64)[:, None]
    var = numpy.asarray(variances, dtype=numpy.float64)[:, None]
    return w * numpy.exp(-0.5 * (x - mu) ** 2 / var) / numpy.sqrt(
        2 * numpy.pi * var)


def select_fractions(fractions, n):
    """At most ``n`` of the dumped fractions of training, evenly spread.

    With more dumps than ``n`` (a run dumping every epoch), the ones
    nearest to ``1/n, 2/n, ..., 1`` of the last dump are kept: the paper's
    20/40/60/80/100% for ``n = 5``.
    """
    fractions = sorted(fractions)
    if len(fractions) <= n:
        return fractions
    chosen = {min(fractions, key=lambda f: abs(f - fractions[-1] * k / n))
              for k in range(1, n + 1)}
    return sorted(chosen)


def plot_mixture(mixtures, layer, path, n_channels=4, seed=0, title=None,
                 columns=5):
    """Mixture evolution of one MN layer (paper Fig. 8).

    One column per dumped fraction of training (at most ``columns``, see
    :func:`select_fractions`); one row per channel of a random subset
    (``n_channels`` channels drawn with ``seed``) showing the weighted
    component densities (thin) and the mixture density (thick); a last row
    with the component weights.

    Args:
        mixtures (dict): As returned by :func:`load_mixtures`.
        layer (str): Layer name (a key of ``mixtures``).
        path (str): PNG file to write.
        n_channels (int): Channels to draw.
        seed (int): Seed of the channel choice.
        title (str or None): Figure title.
        columns (int): Most dumps to draw.

    Returns:
        str: ``path``.

    """
    if layer not in mixtures:
        raise ValueError('no mixtures of layer {!r}; layers: {}'.format(
            layer, ', '.join(sorted(mixtures)) or 'none'))
    snapshots = mixtures[layer]
    fractions = select_fractions(snapshots, columns)
    n_total = snapshots[fractions[0]]['means'].shape[1]
    rng = numpy.random.RandomState(seed)
    channels = numpy.sort(rng.choice(
        n_total, min(n_channels, n_total), replace=False))
    n_rows, n_cols = len(channels) + 1, len(fractions)
    fig = _figure((2.6 * n_cols + 0.6, 1.9 * n_rows + 0.6))
    max_k = max(len(snapshots[f]['weights']) for f in fractions)
    for col, fraction in enumerate(fractions):
        snap = snapshots[fraction]
        weights = snap['weights']
        for row, c in enumerate(channels):
            ax = fig.add_subplot(n_rows, n_cols, row * n_cols + col + 1)
            means = snap['means'][:, c]
            std = numpy.sqrt(snap['variances'][:, c])
            x = numpy.linspace((means - 4 * std).min(),
                               (means + 4 * std).max(), 400)
            dens = gaussian_densities(x, weights, means, std ** 2)
            for k in range(len(weights)):
                ax.plot(x, dens[k], linewidth=0.9, linestyle='--',
                        color='C{}'.format(k % 10))
            ax.plot(x, dens.sum(axis=0), color='k', linewidth=1.5)
            ax.tick_params(labelsize='x-small')
            if row == 0:
                ax.set_title('{:g}% of training'.format(100 * fraction),
                             fontsize='small')
            if col == 0:
                ax.set_ylabel('channel {}'.format(c), fontsize='small')
        ax = fig.add_subplot(n_rows, n_cols, (n_rows - 1) * n_cols + col + 1)
        order = numpy.argsort(weights)[::-1]
        ax.bar(numpy.arange(len(weights)), weights[order],
               color=['C{}'.format(k % 10) for k in order])
        ax.set_xlim(-0.6, max_k - 0.4)
        ax.set_ylim(0, 1)
        ax.set_xticks(numpy.arange(max_k))
        ax.tick_params(labelsize='x-small')
        ax.set_xlabel('component (by weight)', fontsize='x-small')
        if col == 0:
            ax.set_ylabel('weight', fontsize='small')
    fig.suptitle(title or 'Mixture of layer {} over training'.format(layer))
    return _save(fig, path)


def _labels(paths, labels):
    if labels is None:
        return [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(labels) != len(paths):
        raise ValueError('--labels needs one label per run')
    return labels


def _groups(args):
    """Group of each run from ``--groups`` or ``--group-by`` (or None)."""
    if args.groups is not None:
        if len(args.groups) != len(args.runs):
            raise mn_chainer.cli.UsageError(
                '--groups needs one group per run ({} runs, {} groups)'
                .format(len(args.runs), len(args.groups)))
        return args.groups
    if args.group_by is None:
        return None
    groups = []
    for path in args.runs:
        settings = mn_chainer.logs.load_args(path)
        if settings is None or settings.get(args.group_by) is None:
            raise mn_chainer.cli.CommandError(
                '{}: no {!r} in its args.json to group by'.format(
                    path, args.group_by))
        groups.append(str(settings[args.group_by]))
    return groups


def _parser():
    parser = argparse.ArgumentParser(
        prog='mn-plot',
        description='Figures of Mixture Normalization runs (PNG).')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('curves', help='test error vs epoch with a '
                                      'windowed std band (Fig. 2)')
    p.add_argument('runs', nargs='+', metavar='RUN_DIR')
    p.add_argument('--labels', nargs='+', default=None)
    p.add_argument('--window', type=int, default=10,
                   help='sliding window in epochs (default 10)')
    p.add_argument('--key', default=ACCURACY_KEY)
    p.add_argument('--title', default=None)
    p.add_argument('-o', '--out', default='curves.png')
    grouping = p.add_mutually_exclusive_group()
    grouping.add_argument('--group-by', default=None, metavar='SETTING',
                          help='group the runs by this args.json setting '
                               '(e.g. row): one mean curve +/- SE over the '
                               'runs of each group')
    grouping.add_argument('--groups', nargs='+', default=None,
                          metavar='GROUP',
                          help='group of each run, in order (as --group-by)')

    p = sub.add_parser('effective-k', help='effective K per MN layer over '
                                           'training (Fig. 9)')
    p.add_argument('runs', nargs='+', metavar='RUN_DIR')
    p.add_argument('--labels', nargs='+', default=None)
    p.add_argument('--layers', nargs='+', default=None)
    p.add_argument('--title', default=None)
    p.add_argument('-o', '--out', default='effective_k.png')

    p = sub.add_parser('mixture', help='mixture evolution of one layer '
                                       '(Fig. 8)')
    p.add_argument('npz', metavar='RUN_DIR_OR_NPZ',
                   help='MixtureMonitor dump or a run directory holding '
                        'mixtures.npz')
    p.add_argument('--layer', default=None,
                   help='layer name (default: the only layer dumped)')
    p.add_argument('--channels', type=int, default=4,
                   help='number of random channels to draw')
    p.add_argument('--columns', type=mn_chainer.cli.positive(int),
                   default=5, help='most dumps to draw, evenly spread '
                   '(default 5: 20/40/60/80/100%%)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--title', default=None)
    p.add_argument('-o', '--out', default=None,
                   help='default: mixture_<layer>.png')
    return parser


def _main(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ('curves', 'effective-k'):
        try:
            labels = _labels(args.runs, args.labels)
        except ValueError as e:
            raise mn_chainer.cli.UsageError(str(e))
        runs = list(zip(labels, [load_log(p) for p in args.runs]))
        if args.command == 'curves':
            path = plot_curves(runs, args.out, window=args.window,
                               key=args.key, title=args.title,
                               groups=_groups(args))
        else:
            path = plot_effective_k(runs, args.out, layers=args.layers,
                                    title=args.title)
    else:
        mixtures = load_mixtures(args.npz)
        layer = args.layer
        if layer is None:
            if len(mixtures) != 1:
                raise mn_chainer.cli.UsageError(
                    '{} holds several layers: give --layer; layers: {}'
                    .format(args.npz, ', '.join(sorted(mixtures)) or 'none'))
            layer, = mixtures
        out = args.out or 'mixture_{}.png'.format(
            layer.strip('/').replace('/', '_'))
        path = plot_mixture(mixtures, layer, out, n_channels=args.channels,
                            seed=args.seed, title=args.title,
                            columns=args.columns)
    print('wrote {}'.format(path))
    return 0


def main(argv=None):
    """Command line entry point (``mn-plot``).

    Errors end with one line on stderr naming the run or file: exit status
    2 for usage errors, 1 for unreadable or unsuitable logs and dumps (see
    :mod:`mn_chainer.cli`).
    """
    return mn_chainer.cli.run(_main, argv, prog='mn-plot')


if __name__ == '__main__':
    sys.exit(main())
