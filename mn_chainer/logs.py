"""Reading what a training run wrote: its LogReport ``log`` and ``args.json``.

A run directory of ``train_cifar.py`` or ``train_dcgan.py`` holds

* ``log``: Chainer's :class:`~chainer.training.extensions.LogReport` file, a
  JSON list with one object per report (per epoch for the CIFAR runs), each
  with at least ``epoch`` and ``iteration``;
* ``args.json``: a JSON object, the settings the run used (see
  :mod:`mn_chainer.train`);
* ``finetuned.json`` (CIFAR runs with ``--finetune-batches``): a JSON list,
  the test accuracy after fine-tuning (:func:`load_finetuned`).

This module is the one place that reads them (``mn-compare``, ``mn-plot``,
the demo and the study runner go through it), so that a missing, empty,
truncated or foreign file is reported the same way everywhere: as a
:class:`LogError` whose message names the file and the problem.
"""
import json
import numbers
import os


#: Log key of the test accuracy (a fraction in [0, 1]) of the CIFAR runs:
#: Chainer's ``Evaluator`` reports ``main/accuracy`` of the
#: ``L.Classifier`` under the ``validation`` prefix.
ACCURACY_KEY = 'validation/main/accuracy'

#: File name of the LogReport log in a run directory.
LOG_FILE = 'log'

#: File name of the run's settings in a run directory.
ARGS_FILE = 'args.json'

#: File name of the evaluations after fine-tuning (``train_cifar.py
#: --finetune-batches``) in a run directory.
FINETUNED_FILE = 'finetuned.json'


class LogError(ValueError):

    """A run's log or settings file that cannot be used.

    The message is ``'<path>: <problem>'``, e.g. ``'result/mn2/log: empty
    file (was the run killed before its first report?)'``.

    Attributes:
        path (str): The file (or directory) concerned.
        problem (str): What is wrong with it.

    """

    def __init__(self, path, problem):
        super(LogError, self).__init__('{}: {}'.format(path, problem))
        self.path = path
        self.problem = problem


def _read_json(path):
    """Parses a JSON file; every failure is a :class:`LogError`."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise LogError(path, 'no such file')
    except IsADirectoryError:
        raise LogError(path, 'is a directory, not a file')
    except OSError as e:
        raise LogError(path, 'cannot be read ({})'.format(
            e.strerror or e))
    if not data.strip():
        raise LogError(path, 'empty file (was the run stopped before it '
                             'wrote anything?)')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise LogError(path, 'not a text file (invalid UTF-8)')
    try:
        return json.loads(text)
    except ValueError as e:
        raise LogError(path, 'truncated or invalid JSON ({}; was the run '
                             'killed while writing it?)'.format(e))


def log_path(path):
    """The ``log`` file of a run directory, or ``path`` itself if a file."""
    if os.path.isdir(path):
        return os.path.join(path, LOG_FILE)
    return path


def load_log(path):
    """Reads the LogReport log of a run.

    Args:
        path (str): A run directory (its ``log`` file is read) or the log
            file itself.

    Returns:
        list of dict: The entries in the order they were logged (an empty
        list for a log without entries).

    Raises:
        LogError: If the file is missing, unreadable, empty, truncated or
            not JSON, or is not a list of objects that each have numeric
            ``epoch`` and ``iteration`` values. The message names the file.

    """
    if not os.path.exists(path):
        raise LogError(path, 'no such run directory or log file')
    path = log_path(path)
    if not os.path.exists(path):
        raise LogError(path, 'no such file (not a run directory, or the run '
                             'stopped before its first report)')
    return _entries(path, 'LogReport log', ('epoch', 'iteration'))


def _entries(path, what, keys):
    """Reads a JSON list of objects that each have numeric ``keys``."""
    entries = _read_json(path)
    if not isinstance(entries, list):
        raise LogError(path, 'not a {} (expected a JSON list of entries, got '
                             'a JSON {})'.format(what, type(entries).__name__))
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LogError(path, 'entry {} is not a JSON object'.format(i))
        for key in keys:
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(
                    value, numbers.Real):
                raise LogError(path, 'entry {} has no numeric "{}"'.format(
                    i, key))
    return entries


def load_finetuned(run_dir):
    """Reads the evaluations after fine-tuning of a run (``finetuned.json``).

    ``train_cifar.py --finetune-batches N`` fine-tunes every BN and MN layer
    after the training (population statistics) and classifies the test
    split once more (see :mod:`mn_chainer.train`). Each such evaluation is
    one entry: ``epoch`` and ``iteration`` of the trained state (its
    ``snapshot``), ``finetune_batches``, ``batchsize`` (per worker) and
    ``n_workers`` of the fine-tuning, and the test ``accuracy`` (a fraction
    of the images), ``loss``, ``n_images``, ``seconds`` (inference) and
    ``finetune_seconds``; oldest first, one entry per trained state and
    fine-tuning setting.

    Args:
        run_dir (str): The run directory.

    Returns:
        list of dict: The entries (empty when the run has no such file).

    Raises:
        LogError: If the file exists but is unreadable, empty, truncated,
            not JSON, or not a list of objects with numeric ``epoch``,
            ``iteration``, ``finetune_batches`` and ``accuracy``.

    """
    path = os.path.join(run_dir, FINETUNED_FILE)
    if not os.path.lexists(path):
        return []
    return _entries(path, 'record of fine-tuned evaluations', (
        'epoch', 'iteration', 'finetune_batches', 'accuracy'))


def load_args(run_dir):
    """Reads the settings (``args.json``) of a run directory.

    Args:
        run_dir (str): The run directory.

    Returns:
        dict or None: The settings; ``None`` when the directory has no
        ``args.json`` (logs written by other tools).

    Raises:
        LogError: If ``args.json`` exists but is unreadable, empty,
            truncated, not JSON or not a JSON object.

    """
    path = os.path.join(run_dir, ARGS_FILE)
    if not os.path.lexists(path):
        return None
    args = _read_json(path)
    if not isinstance(args, dict):
        raise LogError(path, 'not a settings file (expected a JSON object, '
                             'got a JSON {})'.format(type(args).__name__))
    return args
