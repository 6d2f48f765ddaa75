"""``mn-study``: multi-seed studies, rows x seeds of CIFAR runs (issue 17).

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
  ``args.json`` and, for a run with ``--finetune-batches``, its
  ``finetuned.json`` holds the evaluation of its last epoch) is skipped;
* a run stopped while fine-tuning resumes from its last snapshot (it only
  fine-tunes);
* an interrupted run resumes from its last ``snapshot_epoch_<n>``;
* an interrupted run without a snapshot (stopped in its first epoch) is
  moved aside into ``<out>/.aside/`` (never deleted) and starts again.

``<out>/study.json`` records the trainer flags; running again into the same
directory with other trainer flags is refused (add presets or seeds freely).
One ``mn-study run`` at a time may use a directory (a lock file). Runs go one
after another, seed by seed (every preset of seed 0, then of seed 1, ...: a
study stopped early holds pairs); ``-j N`` runs ``N`` at once and gives each
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` = cores / N
(``--threads`` sets it). After each run one line reports it and the study's
ETA (from the epochs trained so far in this invocation). The first failed
run stops the study (running ones finish) unless ``--keep-going``.

ChainerMN: give the MPI prefix with ``--launcher`` and the communicator among
the trainer flags; each run is then ``<launcher> <trainer> ...``::

    mn-study run --presets BN-2 MN-2 --seeds 0 1 2 -o result/study_mn \\
        --launcher 'mpiexec -n 2' -- --communicator naive --data cifar10.npz

``--trainer`` replaces the trainer command (default: ``python
<path of train_cifar.py>``); it must accept ``train_cifar.py``'s flags.

``report`` reads run directories (or every run directory under a study
directory) and prints, over the seeds of each group of runs (a paper row):
test accuracy per evaluation, the windowed metric and the best accuracy as
mean +/- standard error, paired differences against the BN group with 95%
t-intervals, and the updates to reach the BN group's mean best accuracy (the
paper's Table III); see :mod:`mn_chainer.study_report`. ``--plot`` also
draws the mean test error +/- SE of each group (Fig. 2 with seeds, as
``mn-plot curves --group-by row``).

Exit status: 0 on success, 2 for usage errors, 1 for data errors (bad or
mismatched runs, a failed training run).
"""
import argparse
import collections
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import mn_chainer.cli
import mn_chainer.compare
import mn_chainer.logs
import mn_chainer.rundir
import mn_chainer.stats
import mn_chainer.study_report


#: Flags ``mn-study run`` gives every run itself.
RESERVED_FLAGS = ('--preset', '--seed', '--out', '-o', '--resume', '-r',
                  '--list-presets')

#: Environment variables that size the thread pools of a run.
THREAD_VARIABLES = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS',
                    'MKL_NUM_THREADS')

# ---------------------------------------------------------------------------
# Running a study


def row_directory(preset):
    """Directory name of a preset's runs (``table2:BN-2`` -> ``table2_BN-2``).
    """
    return re.sub(r'[:/\\]', '_', preset)


def _snapshots(path):
    """``[(epoch, path)]`` of the ``snapshot_epoch_<n>`` files, by epoch."""
    found = []
    for name in mn_chainer.rundir.snapshots(path):
        kind, number = mn_chainer.rundir.SNAPSHOT_PATTERN.match(name).groups()
        if kind == 'epoch':
            found.append((int(number), os.path.join(path, name)))
    return found


def _test_accuracies(path):
    """``(epochs, accuracies)`` of a run's log (empty when unreadable)."""
    try:
        log = mn_chainer.logs.load_log(path)
    except (OSError, ValueError):
        log = []
    epochs, _, accuracy = mn_chainer.compare.accuracy_series(log)
    return epochs, accuracy


def _logged_epoch(path):
    """Last epoch with a test accuracy in a run's log (0 when none)."""
    epochs, _ = _test_accuracies(path)
    return int(epochs[-1]) if len(epochs) else 0


def _read_args(path):
    """A run's ``args.json``, or ``None`` when missing or unreadable."""
    try:
        return mn_chainer.logs.load_args(path)
    except (OSError, ValueError):
        return None


def _finetuned(path, args, epoch):
    """Whether a run's ``--finetune-batches`` evaluation of ``epoch`` is
    recorded (True for a run without fine-tuning)."""
    n_batches = (args or {}).get('finetune_batches')
    if not n_batches:
        return True
    try:
        entries = mn_chainer.logs.load_finetuned(path)
    except (OSError, ValueError):
        return False
    return any(e['epoch'] == epoch and e['finetune_batches'] == n_batches
               for e in entries)


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
            raise mn_chainer.cli.CommandError(
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
        if (self.planned_epochs is not None and done >= self.planned_epochs
                and _finetuned(self.path, args, done)):
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
        return '{} left, ETA {}'.format(
            mn_chainer.study_report.plural(left, 'run'),
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
        mn_chainer.cli.CommandError: When ``train_cifar`` cannot be found.

    """
    import importlib.util
    spec = importlib.util.find_spec('train_cifar')
    if spec is None or not spec.origin:
        raise mn_chainer.cli.CommandError(
            'cannot find train_cifar.py (install mn-chainer with pip, run '
            'from its checkout, or give --trainer)')
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


class StudyLock(mn_chainer.rundir.RunLock):

    """An exclusive lock on a study directory while ``mn-study run`` uses it.

    The lock of a run directory (:class:`mn_chainer.rundir.RunLock`: a
    ``flock`` the kernel releases when the process ends) in its own file,
    ``<out>/.study.lock``: the study's runs lock their own directories
    below it while they train. Acquired when created; a context manager.

    Raises:
        mn_chainer.cli.CommandError: If another ``mn-study run`` holds it.
    """

    file_name = '.study.lock'
    in_use = '{path}: another mn-study run is using this directory ' \
        '(process {owner})'


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
            raise mn_chainer.cli.CommandError('{}: unreadable ({})'.format(
                path, e))
        if old != list(trainer_flags):
            raise mn_chainer.cli.UsageError(
                '{} was run with trainer flags "{}", this command gives "{}"'
                ': use the same flags or another -o'.format(
                    out, ' '.join(old), ' '.join(trainer_flags)))
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
            raise mn_chainer.cli.UsageError(
                'trainer flag {}: mn-study sets --preset, --seed, --out and '
                '--resume of every run itself; remove it'.format(flag))


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
            raise mn_chainer.cli.UsageError(
                '-j must be >= 1, got {}'.format(jobs))
        if threads is not None and threads < 1:
            raise mn_chainer.cli.UsageError(
                '--threads must be >= 1, got {}'.format(threads))
        for what, values in (('--presets', presets), ('--seeds', seeds)):
            repeated = sorted(set(v for v in values if values.count(v) > 1))
            if repeated:
                raise mn_chainer.cli.UsageError('{} repeats {}'.format(
                    what, ', '.join(map(str, repeated))))
        dirs = [row_directory(p) for p in presets]
        if len(set(dirs)) != len(dirs):
            raise mn_chainer.cli.UsageError(
                '--presets: two presets share a directory name ({})'.format(
                    ', '.join(dirs)))
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
            try:
                proc = subprocess.Popen(
                    cmd, stdout=f, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=self._environment(),
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal)
            except OSError as e:
                raise mn_chainer.cli.CommandError(
                    '{}: cannot start {} ({}); check --trainer and '
                    '--launcher'.format(run.name, cmd[0],
                                        e.strerror or e))
        return proc, time.time()

    def _finish(self, run, returncode, seconds, index, total, progress):
        progress.closed.add(run.name)
        planned = run.refresh_planned_epochs()
        epochs, accuracy = _test_accuracies(run.path)
        done = int(epochs[-1]) if len(epochs) else 0
        head = '[{}/{}] {}'.format(index, total, run.name)
        if returncode == 0 and planned is not None and done >= planned:
            self._print(
                '{}: finished in {} (epochs {}-{} of {}; best {:.2f}%, '
                'last 3 {:.2f}%); {}'.format(
                    head, _format_duration(seconds), run.start_epoch + 1,
                    done, planned, 100 * accuracy.max(),
                    100 * mn_chainer.stats.windowed_mean(accuracy, 3),
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
            int: 0 once every run has finished.

        Raises:
            mn_chainer.cli.CommandError: When a run failed (a
                :class:`~mn_chainer.cli.UsageError` when every failed run
                exited with status 2), the directory is locked or holds
                another run.
            KeyboardInterrupt: On Ctrl-C, after stopping the runs.
            SystemExit: On SIGTERM (status 143), after stopping the runs.

        """
        os.makedirs(self.out, exist_ok=True)
        with StudyLock(self.out):
            # Seed by seed, so that a study stopped early holds pairs.
            runs = [PlannedRun(self.out, p, s)
                    for s in self.seeds for p in self.presets]
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
        plural = mn_chainer.study_report.plural
        return 'study {}: {} ({} x {}): {}; {} at a time{}'.format(
            self.out, plural(len(runs), 'run'),
            plural(len(self.presets), 'preset'),
            plural(len(self.seeds), 'seed'), ', '.join(parts), self.jobs,
            '' if self.threads is None else ', {} each'.format(
                plural(self.threads, 'thread')))

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
        except BaseException as e:
            # Ctrl-C, SIGTERM or an error of mn-study itself: no run goes on
            # without it.
            for _, run, proc, _ in running.values():
                proc.terminate()
            for _, run, proc, _ in running.values():
                proc.wait()
            if running:
                self._print('stopped {}; run the same command to resume'
                            .format(', '.join(running)))
            if isinstance(e, _Stopped):
                raise SystemExit(128 + signal.SIGTERM)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        if self.failures:
            usage = all(code == mn_chainer.cli.UsageError.exit_status
                        for _, code in self.failures)
            error = (mn_chainer.cli.UsageError if usage
                     else mn_chainer.cli.CommandError)
            raise error('{} failed: {}{}'.format(
                mn_chainer.study_report.plural(len(self.failures), 'run'),
                ', '.join(r.name for r, _ in self.failures),
                '' if not pending else '; {} not started'.format(
                    len(pending))))
        self._print('study {}: all {} finished; report: mn-study report '
                    '{}'.format(self.out,
                                mn_chainer.study_report.plural(total, 'run'),
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
    mn_chainer.cli.add_debug_flag(parser)
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
    p.add_argument('--key', default=mn_chainer.logs.ACCURACY_KEY,
                   help='log key of the test accuracy (a fraction)')
    p.add_argument('--plot', default=None, metavar='PNG',
                   help='also draw the mean test error +/- SE per group')
    return parser


def _split(text, flag):
    try:
        return shlex.split(text)
    except ValueError as e:
        raise mn_chainer.cli.UsageError('{}: {}'.format(flag, e))


def _main(argv):
    args = _parser().parse_args(argv)
    if args.command == 'run':
        flags = list(args.trainer_flags)
        if flags and flags[0] == '--':
            flags = flags[1:]
        trainer = None
        if args.trainer is not None:
            trainer = _split(args.trainer, '--trainer')
            if not trainer:
                raise mn_chainer.cli.UsageError('--trainer: empty command')
        runner = StudyRunner(
            args.out, args.presets, args.seeds, flags, jobs=args.jobs,
            threads=args.threads, launcher=_split(args.launcher,
                                                  '--launcher'),
            trainer=trainer, keep_going=args.keep_going)
        return runner.run()
    if not 0 < args.confidence < 1:
        raise mn_chainer.cli.UsageError(
            '--confidence must be in (0, 1), got {}'.format(args.confidence))
    sys.stdout.write(mn_chainer.study_report.report(
        args.paths, fmt=args.format, window=args.window,
        baseline=args.baseline, confidence=args.confidence,
        skip_incomplete=args.skip_incomplete, key=args.key, plot=args.plot))
    return 0


def main(argv=None):
    """Command line entry point (``mn-study``).

    Errors end with one line on stderr: exit status 2 for usage errors, 1
    for data errors (see :mod:`mn_chainer.cli`); ``--debug`` shows the
    traceback.
    """
    return mn_chainer.cli.run(_main, argv, prog='mn-study')


if __name__ == '__main__':
    sys.exit(main())
