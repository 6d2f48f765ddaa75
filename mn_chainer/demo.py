"""Short BN-2 vs MN-2 comparison on CIFAR-10 (the README's main command).

Trains the CIFAR CNN of the paper's Table II twice, with the settings of
rows BN-2 and MN-2 (RMSprop, lr 0.01, weight decay 2e-5, lr x0.93 every 2
epochs; MN-2 puts Mixture Normalization with K=3 and EM iter 2 at
``conv3``), on the same seeded random subset of CIFAR-10 with the same seed,
and prints their test accuracies per epoch side by side::

    python -m mn_chainer.demo --data ../shared/data/cifar10.npz

Without ``--data`` the images come from Chainer's CIFAR-10 download. The
defaults (a few thousand training images, a few epochs, batch 128) are
chosen so that both runs take about 10 minutes on 2 CPU cores; the paper
trains 100 epochs on all 50,000 images with batch 256, so these numbers are
far from its Table II (quoted in the output for context). A single short run
is also noisier than the BN/MN difference: compare several seeds
(``--seed``) before concluding anything.

The two runs are written to ``<out>/bn2`` and ``<out>/mn2`` (LogReport
``log``, ``args.json``, plots, snapshots), so
``mn-compare <out>/bn2 <out>/mn2`` and ``mn-plot`` can read them. Like a
training run, the demo does not write over an earlier demo: ``--resume``
continues it (each run from its latest snapshot; finished runs are read
back; with no demo in ``--out`` it starts one, so ``make`` always passes
it) and ``--overwrite`` moves it aside to ``<out>.old<N>``.
"""
import argparse
import os
import time

from mn_chainer import cli
from mn_chainer.logs import ACCURACY_KEY
import mn_chainer.logs
import mn_chainer.presets
from mn_chainer import rundir
import mn_chainer.train


#: Program name of the messages.
PROG = 'python -m mn_chainer.demo'

#: Rows compared, in table order.
ROWS = ('BN-2', 'MN-2')


def get_parser():
    """The command line of the demo."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=cli.HelpFormatter,
        description='Short BN-2 vs MN-2 comparison on CIFAR-10 (paper '
        'Table II rows, reduced length)')
    positive = cli.positive(int)
    parser.add_argument('--data', metavar='PATH.npz',
                        help='CIFAR-10 .npz (uint8 NHWC x_train/y_train/'
                        'x_test/y_test; default: Chainer\'s download)')
    parser.add_argument('--epoch', '-e', type=positive, default=3,
                        help='training epochs of each run')
    parser.add_argument('--train-subset', type=positive, default=4096,
                        help='training images, a seeded random subset')
    parser.add_argument('--test-subset', type=positive, default=2000,
                        help='test images, a seeded random subset')
    parser.add_argument('--batchsize', '-b', type=positive, default=128,
                        help='mini-batch size; the paper\'s is 256')
    parser.add_argument('--widths',
                        help='CIFAR CNN widths (default: 64,128,256,256)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of both runs')
    parser.add_argument('--device', '-d', default='-1',
                        help='-1 (CPU), 0 (GPU 0), ...')
    parser.add_argument('--loaderjob', '-j', type=positive,
                        help='worker processes loading the images')
    parser.add_argument('--out', '-o', default=os.path.join('result', 'demo'),
                        help='directory of the two runs')
    parser.add_argument('--resume', action='store_true',
                        help='continue the demo found in --out (start one '
                        'where there is none; a finished demo is printed '
                        'again)')
    parser.add_argument('--overwrite', action='store_true',
                        help='move a demo found in --out aside to '
                        '<out>.old<N> (nothing is deleted)')
    parser.add_argument('--progress', action='store_true',
                        help='show the training progress bars')
    cli.add_debug_flag(parser)
    return parser


def _train_argv(args, row, out):
    argv = ['--preset', 'table2:' + row, '--dataset', 'cifar10',
            '--epoch', str(args.epoch), '--batchsize', str(args.batchsize),
            '--train-subset', str(args.train_subset),
            '--test-subset', str(args.test_subset),
            '--seed', str(args.seed), '--device', args.device,
            '--out', out]
    if args.data is not None:
        argv += ['--data', args.data]
    if args.widths is not None:
        argv += ['--widths', args.widths]
    if args.loaderjob:
        argv += ['--loaderjob', str(args.loaderjob)]
    if not args.progress:
        argv.append('--no-progress')
    return argv


def _pct(value):
    return '{:6.2f}'.format(100 * value) if value is not None else '     -'


def format_comparison(logs, rows=ROWS):
    """Returns the side-by-side table of test accuracy per epoch.

    Args:
        logs (dict): Row -> LogReport log (list of per-epoch dicts).

    """
    by_epoch = {row: {e['epoch']: e for e in logs[row]} for row in rows}
    epochs = sorted(set().union(*by_epoch.values()))
    lines = ['test accuracy (%) per epoch',
             'epoch ' + ''.join('{:>9}'.format(r) for r in rows) +
             '   MN-2 effective K']
    for epoch in epochs:
        cells = [_pct(by_epoch[r].get(epoch, {}).get(ACCURACY_KEY))
                 for r in rows]
        k = by_epoch['MN-2'].get(epoch, {}).get('mn/conv3/effective_k') \
            if 'MN-2' in by_epoch else None
        lines.append('{:5d} '.format(epoch) +
                     ''.join('{:>9}'.format(c) for c in cells) +
                     ('   {:g}'.format(k) if k is not None else ''))
    best = [max((e[ACCURACY_KEY] for e in logs[r]), default=None)
            for r in rows]
    lines.append(' best ' + ''.join('{:>9}'.format(_pct(b)) for b in best))
    return '\n'.join(lines)


def _paper_context(dataset='cifar10'):
    lines = ['paper, Table II ({}; 50,000 images, batch 256; max test '
             'accuracy after 25/50/75/100 epochs):'.format(dataset)]
    for row in ROWS:
        preset = mn_chainer.presets.get_preset('table2:' + row, dataset)
        lines.append('  {}: {}'.format(row, ' / '.join(
            '{:.2f}'.format(a) for a in preset.paper['acc'])))
    return '\n'.join(lines)


def _row_dir(out, row):
    return os.path.join(out, row.replace('-', '').lower())


def _prepare(args):
    """Checks (and with ``--overwrite`` clears) the demo's directory.

    Returns:
        dict: Row -> extra arguments of its training (``--resume``).

    """
    found = {row: rundir.run_files(_row_dir(args.out, row)) for row in ROWS}
    if any(found.values()) and not (args.resume or args.overwrite):
        raise rundir.RunDirError(
            '--out {} already holds a demo ({}); continue it with --resume, '
            'write elsewhere with --out, or add --overwrite to move it aside '
            '(to {}.old<N>)'.format(
                args.out, ', '.join(
                    '{}/{}'.format(os.path.basename(_row_dir('', r)),
                                   ','.join(f[:2]))
                    for r, f in found.items() if f),
                os.path.normpath(args.out)))
    if args.overwrite and any(found.values()):
        print('# the demo found in {} was moved to {}'.format(
            args.out, rundir.move_aside(args.out)))
        return {row: [] for row in ROWS}
    extra = {}
    for row in ROWS:
        out = _row_dir(args.out, row)
        snapshot = rundir.latest_snapshot(out)
        if snapshot is not None:
            extra[row] = ['--resume', snapshot]
        elif found[row]:
            # Stopped before its first snapshot: restarted, the old files
            # moved aside.
            extra[row] = ['--overwrite']
        else:
            extra[row] = []
    return extra


def main(argv=None):
    """Runs both trainings and prints the comparison; returns the logs."""
    args = get_parser().parse_args(argv)
    extra = _prepare(args)
    logs = {}
    times = {}
    for row in ROWS:
        out = _row_dir(args.out, row)
        print('=== {} -> {}'.format(row, out), flush=True)
        start = time.time()
        logs[row] = mn_chainer.train.main(
            _train_argv(args, row, out) + extra[row])
        times[row] = time.time() - start
    settings = mn_chainer.logs.load_args(_row_dir(args.out, 'MN-2'))
    updates = logs['MN-2'][-1]['iteration'] if logs['MN-2'] else 0
    preset = mn_chainer.presets.get_preset('table2:MN-2', 'cifar10')
    # Chainer's repeating iterator wraps around epochs: no partial batches.
    paper_updates = -(-preset.epoch * mn_chainer.presets.PAPER_N_TRAIN //
                      preset.batchsize)
    summary = '\n'.join([
        'CIFAR-10, {} training / {} test images, {} epochs, batch {}, '
        'seed {}'.format(settings['n_train'], settings['n_test'],
                         args.epoch, args.batchsize, args.seed),
        format_comparison(logs),
        'wall time{}: '.format(' (this invocation)' if args.resume else '')
        + ', '.join('{} {:.0f} s'.format(r, times[r]) for r in ROWS),
        '',
        _paper_context(),
        'this run: {} updates of batch {} on {} images; the paper: {} '
        'updates of batch {} on {:,} images'.format(
            updates, args.batchsize, settings['n_train'],
            paper_updates, preset.batchsize,
            mn_chainer.presets.PAPER_N_TRAIN),
        'A short CPU run on a subset is far from the paper\'s 100-epoch '
        'setting,',
        'and one seed is noisier than the BN/MN difference (repeat with '
        'other --seed values).',
    ])
    print('')
    print(summary)
    rundir.write_text(os.path.join(args.out, 'summary.txt'), summary + '\n')
    return logs


if __name__ == '__main__':
    cli.run(main, prog=PROG)
