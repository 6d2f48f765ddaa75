"""Run directories: one directory holds one run.

A training run (``train_cifar.py``, ``train_dcgan.py``) writes everything
into its directory (``--out``): the settings ``args.json``, the LogReport
``log``, snapshots ``snapshot_epoch_<n>`` / ``snapshot_iter_<n>``, plots,
``mixtures.npz`` and ``finetuned.json``. Mixing two runs there would be
silent data loss (a log of one run labelled with the settings of another, a
stale snapshot of a longer run beside a newer one), so the trainers follow
these rules:

* a new run goes into a directory that holds no run (:func:`run_files`);
  otherwise it is refused with a message that says how to resume the run
  found there or where else to write, unless ``--overwrite`` asks to move
  the old run aside (:func:`move_aside`: renamed, never deleted);
* a resume continues the run of the directory from its latest snapshot, or
  starts a new directory from a snapshot found elsewhere;
* nothing is written before the run can start (a snapshot that fails to
  load leaves the directory as it was), files are replaced atomically
  (:func:`write_json`), and a lock (:class:`RunLock`) keeps a second process
  out of a directory in use;
* the temporary folders of a snapshot or log write interrupted by a kill
  are removed at the next start (:func:`remove_temporaries`).

This module uses only the standard library (no Chainer import).
"""
import errno
import json
import os
import re
import shutil

from mn_chainer.cli import CommandError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None


#: Files of a run directory that show it holds a run.
RUN_MARKERS = ('args.json', 'log', 'mixtures.npz', 'finetuned.json')

#: Snapshot file names of the trainers: ``snapshot_epoch_<n>`` (CIFAR) and
#: ``snapshot_iter_<n>`` (DCGAN).
SNAPSHOT_PATTERN = re.compile(r'^snapshot_(epoch|iter)_(\d+)$')

#: Temporary folders of Chainer's writers: the snapshot writer's
#: ``tmp<file name><8 random characters>`` and LogReport's
#: ``log<8 random characters>``, each holding at most the file being
#: written.
_TEMPORARY_PATTERN = re.compile(
    r'^(?:tmp(?P<file>(?:snapshot_(?:epoch|iter)_\d+|gen_iter_\d+\.npz))'
    r'|log)[a-z0-9_]{8}$')

#: Temporary files of :func:`write_json` and :func:`write_npz` in a run
#: directory.
_ATOMIC_TEMPORARIES = ('args.json.tmp', 'mixtures.npz.tmp',
                       'finetuned.json.tmp')

#: Name of the lock file in a run directory.
LOCK_FILE = '.lock'


class RunDirError(CommandError):

    """A run directory that cannot be used as asked.

    The message says what is in the way and what to do (resume, another
    ``--out``, ``--overwrite``). :mod:`mn_chainer.cli` reports it with exit
    status 1.
    """


def snapshots(path):
    """The trainer snapshots in a directory, oldest first.

    Returns:
        list of str: File names, ordered by the epoch or iteration number in
        their name.

    """
    found = []
    for name in _listdir(path):
        match = SNAPSHOT_PATTERN.match(name)
        if match and os.path.isfile(os.path.join(path, name)):
            found.append((int(match.group(2)), name))
    return [name for _, name in sorted(found)]


def latest_snapshot(path):
    """Path of the newest snapshot of a run directory, or None."""
    names = snapshots(path)
    return os.path.join(path, names[-1]) if names else None


def run_files(path):
    """Files showing that a directory holds a run (empty if it holds none).

    Returns:
        list of str: Names among :data:`RUN_MARKERS` and the snapshots.

    """
    names = set(_listdir(path))
    return [n for n in RUN_MARKERS if n in names] + snapshots(path)


def _listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def remove_temporaries(path):
    """Removes the temporaries an interrupted write left in ``path``.

    Only folders named as Chainer's snapshot and log writers name them,
    holding nothing but the file being written, and the temporary files of
    :func:`write_json` and :func:`write_npz` are removed.

    Returns:
        list of str: The names removed.

    """
    removed = []
    for name in sorted(_listdir(path)):
        full = os.path.join(path, name)
        if name in _ATOMIC_TEMPORARIES and os.path.isfile(full):
            os.remove(full)
            removed.append(name)
            continue
        match = _TEMPORARY_PATTERN.match(name)
        if not match or os.path.islink(full) or not os.path.isdir(full):
            continue
        expected = match.group('file') or 'log.json'
        if set(os.listdir(full)) <= {expected}:
            shutil.rmtree(full)
            removed.append(name)
    return removed


def move_aside(path):
    """Renames a run directory to the first free ``<path>.old<N>``.

    Nothing is deleted: the old run stays readable (and resumable) there.

    Returns:
        str: The new path.

    """
    target = '{}.old{}'.format(os.path.normpath(path), _next_old(path))
    os.rename(path, target)
    return target


def _next_old(path):
    n = 1
    while os.path.lexists('{}.old{}'.format(os.path.normpath(path), n)):
        n += 1
    return n


def _write_atomically(path, write, mode):
    """Writes ``path`` through ``<path>.tmp``, flushed and renamed."""
    tmp = path + '.tmp'
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, obj):
    """Writes ``obj`` as JSON to ``path`` atomically.

    The text goes to ``<path>.tmp``, is flushed to disk and renamed over
    ``path``: a reader sees the old or the new file, never a torn one.
    """
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically (see :func:`write_json`)."""
    _write_atomically(path, lambda f: f.write(text), 'w')


def write_npz(path, arrays):
    """Writes ``numpy.savez(path, **arrays)`` atomically (see
    :func:`write_json`); the directory is created if needed."""
    import numpy
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    _write_atomically(path, lambda f: numpy.savez(f, **arrays), 'wb')


class RunLock(object):

    """An exclusive lock on a run directory while a process writes it.

    The lock is an advisory ``flock`` on ``<dir>/.lock`` holding the
    owner's process id; the kernel releases it when the process ends,
    however it ends, so a killed run never leaves a directory locked.
    (Without ``fcntl``, i.e. not on POSIX, it does nothing.) Other
    directories written by one process at a time lock the same way in a
    subclass that names its own :attr:`file_name` and :attr:`in_use`
    message (:class:`mn_chainer.study.StudyLock`).

    Args:
        path (str): The directory (it must exist).

    Raises:
        RunDirError: If another process holds the lock.

    """

    #: Name of the lock file in the directory.
    file_name = LOCK_FILE

    #: Message of the error when the lock is held (``{path}``: the
    #: directory, ``{owner}``: the holder's process id).
    in_use = ('{path} is in use by another run (process {owner}); wait for '
              'it or write elsewhere with --out')

    def __init__(self, path):
        self.path = os.path.join(path, self.file_name)
        self._file = None
        if fcntl is None:
            return
        f = open(self.path, 'a+')
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            owner = f.read().strip() or 'unknown'
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(self.in_use.format(path=path, owner=owner))
            raise
        f.seek(0)
        f.truncate()
        f.write('{}\n'.format(os.getpid()))
        f.flush()
        self._file = f

    def release(self):
        """Releases the lock (the file stays)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def is_locked(path):
    """Whether the :class:`RunLock` of ``path`` is held (by another
    process, or by another lock object of this one)."""
    if fcntl is None or not os.path.exists(os.path.join(path, LOCK_FILE)):
        return False
    try:
        RunLock(path).release()
    except RunDirError:
        return True
    return False


def _same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def _continues(out, resume):
    """Whether ``resume`` is the latest snapshot of the run in ``out``."""
    latest = latest_snapshot(out)
    return resume is not None and latest is not None and _same_path(
        resume, latest)


def check(out, resume=None, overwrite=False):
    """Checks that a run may write into ``out``; changes nothing.

    Args:
        out (str): The run directory (``--out``).
        resume (str or None): The snapshot a resumed run starts from.
        overwrite (bool): Whether a run found in ``out`` may be moved aside.

    Returns:
        str or None: The snapshot to load: ``resume`` (or None), or where it
        will lie once :func:`claim` has moved the old run aside (a resume
        from an older snapshot of ``out`` with ``overwrite``).

    Raises:
        RunDirError: If ``out`` is a file, is not writable, is in use, or
            holds a run that this one would mix with; the message says how
            to resume that run or where else to write.

    """
    parent = os.path.abspath(out)
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise RunDirError('--out {}: {} is a file, not a directory'
                              .format(out, parent))
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError('--out {}: {} is not writable'.format(
            out, parent))
    if is_locked(out):
        raise RunDirError('--out {} is in use by another run; wait for it '
                          'or write elsewhere with --out'.format(out))
    found = run_files(out)
    if not found or _continues(out, resume):
        return resume
    latest = latest_snapshot(out)
    in_place = resume is not None and _same_path(os.path.dirname(
        os.path.abspath(resume)), out)
    if overwrite:
        if in_place:
            return os.path.join('{}.old{}'.format(
                os.path.normpath(out), _next_old(out)),
                os.path.basename(resume))
        return resume
    if in_place:
        raise RunDirError(
            '--resume {}: {} has a later snapshot, {}; resume from it, or '
            'add --overwrite to move this run aside (to {}.old{}) and '
            'continue from {}'.format(
                resume, out, os.path.basename(latest or '?'),
                os.path.normpath(out), _next_old(out),
                os.path.basename(resume)))
    how = ('resume it with --resume {}'.format(latest) if latest
           else 'it has no snapshot to resume')
    raise RunDirError(
        '--out {} already holds a run ({}); {}, write elsewhere with --out, '
        'or add --overwrite to move it aside (to {}.old{})'.format(
            out, ', '.join(found[:3] + (['...'] if len(found) > 3 else [])),
            how, os.path.normpath(out), _next_old(out)))


def moves_aside(out, overwrite=False, resume=None):
    """Whether :func:`claim` moves a run found in ``out`` aside: with
    ``overwrite``, unless ``resume`` is that run's latest snapshot."""
    return bool(overwrite and run_files(out) and not _continues(out, resume))


def claim(out, overwrite=False, resume=None):
    """Makes ``out`` this run's: the writes of :func:`check`'s plan.

    Moves a run found there aside (with ``overwrite``, unless ``resume`` is
    its latest snapshot: that run continues), creates the directory,
    removes the temporaries of an interrupted write and takes the
    directory's lock. Call it once the run can start (its snapshot loaded).

    Returns:
        tuple: ``(lock, moved_to)``: the :class:`RunLock` to release when
        the run ends, and the path the old run was moved to (or None).

    Raises:
        RunDirError: If the directory cannot be created or is in use.

    """
    moved = None
    if moves_aside(out, overwrite, resume):
        moved = move_aside(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunDirError('--out {}: cannot create the directory ({})'.format(
            out, e.strerror or e))
    lock = RunLock(out)
    remove_temporaries(out)
    return lock, moved
