"""Test accuracy of finished CIFAR runs with queue and population inference.

Usage::

    mn-evaluate RUN_DIR [RUN_DIR ...] \\
        [--inference queue population] [--snapshot FILE] \\
        [--finetune-batches N] [-b BATCH] [-d DEVICE] [--data FILE] \\
        [--json FILE]

For every run directory (written by ``train_cifar.py``: ``args.json`` and
``snapshot_epoch_<n>`` files) the model is rebuilt from ``args.json``, its
latest snapshot (or ``--snapshot``) is loaded, and the test split the run
used is classified in test mode with each inference rule:

* ``queue``: the trained state as it is: MN's inference rule over its queue
  of the last ``L`` mixtures (paper Eqs. 38-39), BN's running averages;
* ``population``: after :func:`mn_chainer.links.finetune` over the run's
  training split (augmented as in training, one pass by default): MN's
  population mixture (Eqs. 38-39 with one entry), BN's population mean and
  variance.

It prints, per run and rule, the test accuracy and loss and the inference
time (forward passes only, device synchronised; ms per image), the
fine-tuning time, and with several runs (seeds) the mean and standard
deviation over runs; ``--json`` also writes them.  Errors end with one line
on stderr (:mod:`mn_chainer.cli`). ``mn-evaluate`` is also ``python -m
mn_chainer.evaluate``.

The population rule fine-tunes with the batches
:func:`finetune_population` draws from the run's seed. A run trained with
``train_cifar.py --finetune-batches N`` recorded the same evaluation in its
``finetuned.json`` (:func:`mn_chainer.logs.load_finetuned`): for a
single-process run, ``--inference population --finetune-batches N`` (and the
run's batch size) gives that record's accuracy and loss again. A run of
several ChainerMN workers fine-tuned each worker's share of the training
split (each worker's BN statistics its own, MN's population mixture fitted
over all of them), which one process cannot repeat: its numbers here differ.
"""
import argparse
import sys
import time
import zipfile

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

from mn_chainer import cli
import mn_chainer.datasets
import mn_chainer.links
from mn_chainer import logs
from mn_chainer import rundir
import models


#: Program name of the messages.
PROG = 'mn-evaluate'

#: Inference rules, in the order they run (queue first: fine-tuning
#: replaces BN's running averages).
INFERENCE = ('queue', 'population')

#: Where the trainer's snapshot keeps the classifier.
MODEL_PATH = 'updater/model:main/'


def get_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Test accuracy and inference time of finished CIFAR '
        'runs with the queue (paper Eqs. 38-39) and with population '
        'statistics (fine-tuning).', formatter_class=cli.HelpFormatter)
    parser.add_argument('runs', nargs='+', metavar='RUN_DIR',
                        help='run directories written by train_cifar.py')
    parser.add_argument('--inference', nargs='+', choices=INFERENCE,
                        default=list(INFERENCE),
                        help='inference rules to evaluate (default: both)')
    parser.add_argument('--snapshot', default=None,
                        help='snapshot file to load (only with one run; '
                        'default: the run\'s latest snapshot_epoch_<n>)')
    parser.add_argument('--finetune-batches', type=cli.positive(int),
                        default=None,
                        help='training batches for the population '
                        'statistics (default: one pass over the run\'s '
                        'training split)')
    parser.add_argument('--batchsize', '-b', type=cli.positive(int),
                        default=None,
                        help='batch size of fine-tuning and evaluation '
                        '(default: the run\'s)')
    parser.add_argument('--device', '-d', default='-1',
                        help='Chainer device specifier: -1 or @numpy (CPU), '
                        '0 or @cupy:0 (GPU 0)')
    parser.add_argument('--data', default=None,
                        help='CIFAR .npz file (default: the run\'s)')
    parser.add_argument('--json', default=None, metavar='FILE',
                        help='also write the results to this JSON file')
    cli.add_debug_flag(parser)
    return parser


def latest_snapshot(run_dir):
    """Path of the run's snapshot with the highest epoch (or iteration).

    Raises:
        ~mn_chainer.cli.CommandError: The directory has no snapshot.
    """
    latest = rundir.latest_snapshot(run_dir)
    if latest is None:
        raise cli.CommandError('{}: no snapshot_epoch_<n> file: not a '
                               'finished train_cifar.py run'.format(run_dir))
    return latest


def load_run(run_dir, snapshot=None, device=None):
    """The classifier of a run, with its snapshot loaded.

    Args:
        run_dir (str): The run directory (``args.json``).
        snapshot (str or None): Snapshot file (default: the latest).
        device: Device to send the model to.

    Returns:
        tuple: ``(model, settings, snapshot)``: a
        :class:`~chainer.links.Classifier`, the run's settings and the
        snapshot's path.
    """
    settings = logs.load_args(run_dir)
    if settings is None:
        raise cli.CommandError('{}: no {}: not a train_cifar.py run'.format(
            run_dir, logs.ARGS_FILE))
    missing = [key for key in ('model', 'n_class', 'dataset', 'seed',
                               'batchsize') if key not in settings]
    if missing:
        raise cli.CommandError('{}: {} lacks {}'.format(
            run_dir, logs.ARGS_FILE, ', '.join(missing)))
    snapshot = snapshot or latest_snapshot(run_dir)
    model = L.Classifier(models.get_model_from_settings(settings))
    try:
        chainer.serializers.load_npz(snapshot, model, path=MODEL_PATH)
    except (OSError, ValueError, KeyError, EOFError,
            zipfile.BadZipFile) as e:
        raise cli.CommandError('{}: cannot load the model ({}: {})'.format(
            snapshot, type(e).__name__, e))
    if device is not None:
        model.to_device(device)
    return model, settings, snapshot


def _synchronize(device):
    if device.xp is not numpy:
        device.device.synchronize()


def classify(predictor, dataset, batchsize, device):
    """Test-mode accuracy, loss and forward time over ``dataset``.

    The first batch is run once untimed before the timed pass (a warm-up:
    buffers, BLAS threads, kernel compilation), so that the rule evaluated
    first pays no more than the others; test mode changes no state.

    Returns:
        dict: ``accuracy``, ``loss`` (means over images), ``seconds`` (the
        forward passes, device synchronised) and ``n_images``.
    """
    iterator = chainer.iterators.SerialIterator(dataset, batchsize,
                                                repeat=False, shuffle=False)
    correct = loss = seconds = 0.0
    n = 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        x, _ = chainer.dataset.concat_examples(
            dataset[:min(batchsize, len(dataset))], device)
        predictor(x)
        _synchronize(device)
        for batch in iterator:
            x, t = chainer.dataset.concat_examples(batch, device)
            _synchronize(device)
            start = time.perf_counter()
            y = predictor(x)
            _synchronize(device)
            seconds += time.perf_counter() - start
            correct += float(F.accuracy(y, t).array) * len(t)
            loss += float(F.softmax_cross_entropy(y, t).array) * len(t)
            n += len(t)
    return {'accuracy': correct / n, 'loss': loss / n, 'seconds': seconds,
            'n_images': n}


def finetune_population(model, train, seed, batchsize, n_batches=None,
                        device=None, rank=0):
    """Population statistics of every BN and MN link from training batches.

    :func:`mn_chainer.links.finetune` over ``train`` (a run's augmented
    training split, or a worker's share of it) in the seeded order a run's
    fine-tuning uses: shuffled by ``numpy.random.RandomState(seed)`` (as the
    trainer's order), augmented with Python's :mod:`random` seeded as the
    training of worker ``rank`` starts
    (:func:`mn_chainer.datasets.seed_augmentation`). The batches depend on
    ``(seed, rank, batchsize, n_batches)`` and the split only, not on what
    ran before, so ``train_cifar.py --finetune-batches N`` and
    ``python -m mn_chainer.evaluate RUN --finetune-batches N`` fine-tune a
    single-process run with the same batches.

    Args:
        model (chainer.Link): The classifier (fine-tuned in place).
        train: The training dataset.
        seed (int): The run's seed.
        batchsize (int): Images per batch.
        n_batches (int or None): Batches to run (repeating the split as
            needed); None: one pass over the split.
        device: Device of the batches.
        rank (int): The worker (ChainerMN); every worker must call this with
            the same ``n_batches`` (MN's population fit communicates).

    Returns:
        dict: ``finetune_batches`` (the batches run) and
        ``finetune_seconds`` (device synchronised).
    """
    device = device or chainer.get_device('@numpy')
    mn_chainer.datasets.seed_augmentation(seed, rank)
    order = numpy.random.RandomState(seed)
    iterator = chainer.iterators.SerialIterator(
        train, batchsize, repeat=n_batches is not None,
        order_sampler=chainer.iterators.ShuffleOrderSampler(order))
    _synchronize(device)
    start = time.perf_counter()
    count = mn_chainer.links.finetune(model, iterator, n_batches,
                                      device=device)
    _synchronize(device)
    return {'finetune_batches': count,
            'finetune_seconds': time.perf_counter() - start}


def evaluate_run(run_dir, inference=INFERENCE, snapshot=None,
                 finetune_batches=None, batchsize=None, device=None,
                 data=None):
    """Evaluate one run with each inference rule (see the module doc).

    Returns:
        dict: ``run``, ``snapshot``, ``norm``, ``mn_layers`` and, per rule,
        ``{rule: classify(...) result}``; the ``population`` entry adds
        ``finetune_seconds`` and ``finetune_batches``
        (:func:`finetune_population`).
    """
    device = device or chainer.get_device('@numpy')
    model, settings, snapshot = load_run(run_dir, snapshot, device)
    batchsize = batchsize or settings['batchsize']
    train, test, _ = mn_chainer.datasets.get_cifar(
        settings['dataset'], data or settings.get('data'),
        settings.get('train_subset'), settings.get('test_subset'),
        seed=settings['seed'])
    result = {'run': run_dir, 'snapshot': snapshot,
              'norm': settings.get('norm'),
              'mn_layers': settings.get('mn_layers') or []}
    for rule in (r for r in INFERENCE if r in inference):
        entry = {}
        if rule == 'queue':
            # Drops a population mixture saved with the snapshot, if any.
            mn_chainer.links.start_finetuning(model)
        else:
            entry.update(finetune_population(
                model, train, settings['seed'], batchsize, finetune_batches,
                device))
        entry.update(classify(model.predictor, test, batchsize, device))
        result[rule] = entry
    return result


def _mean_sd(values):
    values = numpy.asarray(values, dtype=numpy.float64)
    sd = values.std(ddof=1) if len(values) > 1 else float('nan')
    return float(values.mean()), float(sd)


def summarize(results, inference=INFERENCE):
    """Mean and standard deviation over runs, per rule.

    Returns:
        dict: ``{rule: {'accuracy': (mean, sd), 'ms_per_image': (mean,
        sd), 'n_runs': n}}``.
    """
    summary = {}
    for rule in (r for r in INFERENCE if r in inference):
        entries = [r[rule] for r in results]
        summary[rule] = {
            'accuracy': _mean_sd([e['accuracy'] for e in entries]),
            'ms_per_image': _mean_sd([1e3 * e['seconds'] / e['n_images']
                                      for e in entries]),
            'n_runs': len(entries)}
    return summary


def format_results(results, summary):
    """The table :func:`main` prints."""
    lines = ['{:<40s} {:<10s} {:>9s} {:>8s} {:>12s} {:>12s}'.format(
        'run', 'inference', 'accuracy', 'loss', 'ms/image', 'finetune s')]
    for result in results:
        for rule in INFERENCE:
            if rule not in result:
                continue
            e = result[rule]
            lines.append('{:<40s} {:<10s} {:>8.2f}% {:>8.4f} {:>12.3f} {:>12s}'
                         .format(result['run'][-40:], rule,
                                 100 * e['accuracy'], e['loss'],
                                 1e3 * e['seconds'] / e['n_images'],
                                 '{:.1f}'.format(e['finetune_seconds'])
                                 if 'finetune_seconds' in e else '-'))
    if len(results) > 1:
        lines.append('')
        for rule, s in summary.items():
            lines.append(
                '{} runs, {}: accuracy {:.2f} +- {:.2f}% (sd), {:.3f} +- '
                '{:.3f} ms/image'.format(
                    s['n_runs'], rule, 100 * s['accuracy'][0],
                    100 * s['accuracy'][1], *s['ms_per_image']))
    return '\n'.join(lines)


def run(argv=None):
    """Evaluates the runs of a command line and prints the table.

    Args:
        argv (list of str or None): The arguments (default:
            ``sys.argv[1:]``).

    Returns:
        tuple: ``(results, summary)``: :func:`evaluate_run`'s result per
        run and :func:`summarize`'s summary.

    Raises:
        mn_chainer.cli.CommandError: For runs, snapshots or devices that
            cannot be used (:class:`~mn_chainer.cli.UsageError` for flags).
    """
    args = get_parser().parse_args(argv)
    if args.snapshot is not None and len(args.runs) > 1:
        raise cli.UsageError('--snapshot {}: give one RUN_DIR with it, not '
                             '{}'.format(args.snapshot, len(args.runs)))
    device = cli.get_device(args.device)
    device.use()
    results = []
    for run_dir in args.runs:
        results.append(evaluate_run(
            run_dir, args.inference, args.snapshot, args.finetune_batches,
            args.batchsize, device, args.data))
    summary = summarize(results, args.inference)
    print(format_results(results, summary))
    if args.json is not None:
        rundir.write_json(args.json, {'runs': results, 'summary': summary,
                                      'device': str(device)})
    return results, summary


def main(argv=None):
    """Command line entry point (``mn-evaluate``).

    Errors end with one line on stderr: exit status 2 for usage errors, 1
    for runs, snapshots, data or devices that cannot be used (see
    :mod:`mn_chainer.cli`); ``--debug`` shows the traceback.

    Returns:
        int: 0 (the exit status).
    """
    cli.run(run, argv, prog=PROG)
    return 0


if __name__ == '__main__':
    sys.exit(main())
