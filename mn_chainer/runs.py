"""Starting and resuming a training run: the steps both trainers share.

``train_cifar.py`` (:mod:`mn_chainer.train`) and ``train_dcgan.py`` start a
run the same way:

1. With ``--resume``, :func:`recorded_settings` reads the settings the
   snapshot's run recorded (:class:`~mn_chainer.extensions.RunRecord`) and
   fills in the flags left out; :func:`resume_changes` then applies the
   settings a resume may change and refuses a flag that contradicts the
   snapshot.
2. :func:`mn_chainer.rundir.check` refuses a run directory that holds
   another run, before anything is built.
3. :func:`start` loads the snapshot, and only then claims the directory
   (moves an old run aside with ``--overwrite``, removes the temporaries of
   a killed write, locks it) and writes ``args.json`` atomically, with the
   resume recorded under ``resumes``. A failed resume leaves the directory
   as it was.

Under ChainerMN worker 0 owns the directory; its errors reach every worker
(:func:`mn_chainer.cli.on_main_worker`).
"""
import json
import os
import zipfile
import zlib

import numpy

import chainer

from mn_chainer import cli
import mn_chainer.extensions
import mn_chainer.logs
from mn_chainer import rundir


def snapshot_path(path):
    """The snapshot file of ``--resume``: the file, or the latest snapshot
    of a run directory.

    Raises:
        mn_chainer.cli.CommandError: If there is no such file or snapshot.

    """
    if os.path.isdir(path):
        latest = rundir.latest_snapshot(path)
        if latest is None:
            raise cli.CommandError('--resume {}: the directory holds no '
                                   'snapshot'.format(path))
        return latest
    if not os.path.isfile(path):
        raise cli.CommandError('--resume {}: no such snapshot file'.format(
            path))
    return path


def add_mixture_options(group, default_prefix=''):
    """Adds the trainers' shared Mixture Normalization options to a group.

    ``--n-components`` (K, default 3) and ``--em-iter`` (the paper's "EM
    iter.", default 2), with the old spellings ``--n_components`` and
    ``--em_iter`` as hidden aliases, and ``--dump-mixtures LAYERS`` (paper
    Fig. 8).

    Args:
        group: An argparse parser or argument group.
        default_prefix (str): Text before the defaults in the help
            (``'preset, else '``).

    """
    cli.add_option(group, '--n-components', aliases=('--n_components',),
                   type=cli.positive(int), metavar='K',
                   help='mixture components K (default: {}3)'.format(
                       default_prefix))
    cli.add_option(group, '--em-iter', aliases=('--em_iter',),
                   type=cli.positive(int), metavar='N',
                   help='the paper\'s "EM iter." (K-means + EM; default: '
                   '{}2)'.format(default_prefix))
    group.add_argument('--dump-mixtures', type=cli.name_list,
                       metavar='LAYERS',
                       help='write the mixtures of these MN layers into '
                       '<out>/mixtures.npz (paper Fig. 8; mn-plot mixture '
                       'draws it)')


def add_run_options(parser, default_out):
    """Adds the options of a run's directory, devices and errors.

    ``--out``, ``--resume``, ``--overwrite``, ``--device``,
    ``--communicator`` and ``--debug``, in a group ``run``.

    Args:
        parser (argparse.ArgumentParser): The trainer's parser.
        default_out (str): The run directory of a new run by default.

    Returns:
        The argument group, for more options of the same kind.

    """
    group = parser.add_argument_group('run')
    group.add_argument('--out', '-o',
                       help='run directory (default: the directory of '
                       '--resume, else {})'.format(default_out))
    group.add_argument('--resume', '-r', metavar='SNAPSHOT',
                       help='snapshot to resume from, or a run directory '
                       '(its latest snapshot); flags left out take the '
                       'snapshot\'s values')
    group.add_argument('--overwrite', action='store_true',
                       help='move a run found in --out aside to '
                       '<out>.old<N> (nothing is deleted)')
    group.add_argument('--device', '-d',
                       help='Chainer device specifier: -1 or @numpy (CPU), '
                       '0 or @cupy:0 (GPU 0), ... (default: -1)')
    group.add_argument('--communicator',
                       help='ChainerMN communicator (e.g. naive, '
                       'pure_nccl): data-parallel training under mpiexec, '
                       'MN fitted over the global batch')
    cli.add_debug_flag(group)
    return group


def flag_destinations(flags, exclude=()):
    """argparse destination -> settings key, for :func:`recorded_settings`.

    Args:
        flags (dict): Settings key -> its long option (``'--learnrate'``).
        exclude (tuple of str): Settings keys a resume does not take from
            the snapshot through their flag.

    """
    return {flag.lstrip('-').replace('-', '_'): key
            for key, flag in flags.items()
            if flag.startswith('--') and key not in exclude}


def recorded_settings(args, destinations, program):
    """Reads the settings of ``args.resume``'s run into the flags left out.

    ``args.resume`` becomes the snapshot file (:func:`snapshot_path`); every
    argument in ``destinations`` that is None takes the snapshot's value.

    Args:
        args (argparse.Namespace): Parsed arguments, changed in place.
        destinations (dict): argparse destination -> settings key.
        program (str): The resuming program; a snapshot recorded by another
            (``settings['program']``) is refused.

    Returns:
        dict or None: The snapshot's settings (None without ``--resume`` or
        for a snapshot written before settings were recorded, whose flags
        are then taken as given).

    Raises:
        mn_chainer.cli.CommandError: If the snapshot is missing, unreadable
            or written by another program.

    """
    if args.resume is None:
        return None
    args.resume = snapshot_path(args.resume)
    recorded = read_recorded_settings(args.resume)
    if recorded is not None:
        if recorded.get('program', program) != program:
            raise cli.CommandError(
                '--resume {}: a snapshot of {}, not of {}'.format(
                    args.resume, recorded['program'], program))
        fill_from_record(args, recorded, destinations)
    return recorded


def read_recorded_settings(snapshot):
    """The settings recorded in a snapshot (None for an old snapshot).

    Raises:
        mn_chainer.cli.CommandError: If the file is not a readable
            snapshot.

    """
    try:
        return mn_chainer.extensions.RunRecord.read(snapshot)
    except ValueError as e:
        raise cli.CommandError('--resume {}'.format(e))


def fill_from_record(args, recorded, destinations):
    """Sets each argument left out (None) to the snapshot's setting.

    Args:
        args (argparse.Namespace): Parsed arguments, changed in place.
        recorded (dict): The snapshot's settings.
        destinations (dict): argparse destination -> settings key.

    """
    for dest, key in destinations.items():
        if getattr(args, dest, None) is None and recorded.get(key) \
                is not None:
            value = recorded[key]
            setattr(args, dest, tuple(value) if isinstance(value, list)
                    and dest == 'widths' else value)


def resume_changes(settings, recorded, may_change, flags):
    """Compares a resumed run's settings with its snapshot's.

    Returns:
        dict: Key -> ``[snapshot's value, new value]`` of the settings in
        ``may_change`` that differ (applied; the caller records them).

    Raises:
        mn_chainer.cli.UsageError: For a setting outside ``may_change``
            that differs; the message names the flag and both values.

    """
    changes = {}
    for key, flag in flags.items():
        if key not in recorded or recorded[key] == settings.get(key):
            continue
        if key in may_change:
            changes[key] = [recorded[key], settings.get(key)]
            continue
        value = settings.get(key)
        given = flag if isinstance(value, bool) else '{} {}'.format(
            flag, _show(value))
        raise cli.UsageError(
            '{} contradicts the snapshot\'s run ({}: {}); a resumed run '
            'keeps its settings: leave {} out, or start a new run with '
            'another --out'.format(given, key, _show(recorded[key]), flag))
    return changes


def _show(value):
    if isinstance(value, (list, tuple)):
        return ','.join(str(v) for v in value) or '(none)'
    return str(value)


def load_snapshot(path, trainer):
    """Loads a trainer snapshot; any failure is a one-line error.

    Raises:
        mn_chainer.cli.CommandError: If the file is not a readable
            snapshot or does not match the trainer (another model or
            settings).

    """
    try:
        chainer.serializers.load_npz(path, trainer)
    except KeyError as e:
        missing = str(e.args[0] if e.args else e).split(' ')[0].strip("'")
        raise cli.CommandError(
            '--resume {}: the snapshot does not match this run: it has no '
            '{} (written by another model, layer set or script?)'.format(
                path, missing))
    except (ValueError, TypeError) as e:
        raise cli.CommandError(
            '--resume {}: the snapshot does not match this run or is '
            'corrupt ({})'.format(path, ' '.join(str(e).split())))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise cli.CommandError(
            '--resume {}: not a readable snapshot ({}: {})'.format(
                path, type(e).__name__, e))


def prepare(args, program, destinations, flags, may_change, resolve,
            default_out):
    """Steps 1 and 2: the settings of a run, checked against its snapshot
    and its directory, before anything is built.

    Args:
        args (argparse.Namespace): Parsed arguments (changed in place).
        program (str): The trainer's name.
        destinations (dict): argparse destination -> settings key of the
            flags a resume takes from the snapshot.
        flags (dict): Settings key -> flag, for the checks of a resume.
        may_change (tuple of str): Settings a resume may change.
        resolve (callable): ``resolve(args, recorded)`` -> the settings.
        default_out (str): Run directory of a new run without ``--out``.

    Returns:
        tuple: ``(settings, recorded, changes, comm)``: the settings (with
        ``program``, ``n_workers`` and ``out``), the snapshot's settings
        (or None), what the resume changes and the ChainerMN communicator
        (or None).

    Raises:
        mn_chainer.cli.CommandError: See :func:`recorded_settings`,
            :func:`resume_changes` and :func:`mn_chainer.rundir.check`.

    """
    comm = None if args.communicator is None else cli.create_communicator(
        args.communicator)
    recorded = recorded_settings(args, destinations, program)
    settings = resolve(args, recorded)
    settings.update(program=program,
                    n_workers=1 if comm is None else comm.size)
    changes = {} if recorded is None else resume_changes(
        settings, recorded, may_change, flags)
    settings['out'] = args.out or (
        os.path.dirname(args.resume) if args.resume else default_out)
    cli.on_main_worker(comm, lambda: rundir.check(
        settings['out'], args.resume, args.overwrite))
    return settings, recorded, changes, comm


def train(trainer, settings, recorded, changes, argv, overwrite, comm,
          print_header, finish=None):
    """Step 3 and the training: :func:`start`, then ``trainer.run()``.

    Args:
        print_header (callable): ``print_header(moved_to)`` prints the run's
            header on worker 0 (``moved_to``: see :func:`start`).
        finish (callable or None): ``finish(trainer)``, called on every
            worker once the training has ended without an error, while the
            run directory is still locked (e.g. a final evaluation that
            writes into it).
        Others: as :func:`start`.

    Returns:
        list of dict: The LogReport log on worker 0, an empty list on the
        others.

    """
    lock, moved = start(trainer, settings, recorded, changes, argv,
                        overwrite, comm)
    main_worker = comm is None or comm.rank == 0
    try:
        if main_worker:
            print_header(moved)
        trainer.run(show_loop_exception_msg=cli.debug_requested(argv))
        if finish is not None:
            finish(trainer)
    finally:
        if lock is not None:
            lock.release()
    if not main_worker:
        return []
    return list(trainer.get_extension('LogReport').log)


def start(trainer, settings, recorded, changes, argv, overwrite=False,
          comm=None):
    """Loads the snapshot, claims the run directory and writes args.json.

    Args:
        trainer (chainer.training.Trainer): The run's trainer, with every
            extension; ``trainer.out`` is the run directory.
        settings (dict): The run's settings; ``settings['resume']`` is the
            snapshot to load or None. ``resume``, ``resumes`` and ``argv``
            are set here.
        recorded (dict or None): The snapshot's settings.
        changes (dict): What the resume changed (:func:`resume_changes`).
        argv (list of str): This command's arguments.
        overwrite (bool): Move a run found in the directory aside.
        comm: ChainerMN communicator or None.

    Returns:
        tuple: ``(lock, moved_to)`` on worker 0 (release the
        :class:`~mn_chainer.rundir.RunLock` when the run ends; ``moved_to``
        is where an old run went, or None), ``(None, None)`` elsewhere.

    Raises:
        mn_chainer.cli.CommandError: If the snapshot cannot be loaded (the
            directory is left as it was) or the directory cannot be
            claimed.

    """
    out = trainer.out
    snapshot = settings['resume']
    if snapshot is not None:
        load_snapshot(snapshot, trainer)
        if comm is not None:
            _keep_loaded_parameters(trainer)
    claimed = cli.on_main_worker(
        comm, lambda: rundir.claim(out, overwrite, snapshot))
    lock, moved = claimed if claimed is not None else (None, None)
    if snapshot is not None:
        if moved is not None and _in_directory(snapshot, out):
            # The snapshot moved aside with the run it belongs to.
            snapshot = os.path.join(moved, os.path.basename(snapshot))
            monitor = _mixture_monitor(trainer)
            if monitor is not None:
                monitor.previous_dump = os.path.join(moved, 'mixtures.npz')
        updater = trainer.updater
        settings['resume'] = snapshot
        settings['resumes'] = list((recorded or {}).get('resumes', [])) + [
            {'snapshot': snapshot, 'epoch': updater.epoch,
             'iteration': updater.iteration, 'argv': list(argv),
             'changed': changes}]
    settings['argv'] = (recorded or {}).get('argv', list(argv))
    if lock is not None:
        rundir.write_json(os.path.join(out, 'args.json'), settings)
        if snapshot is not None:
            _rewrite_log(trainer)
    return lock, moved


def describe_start(settings, moved, flags):
    """Header lines on an old run moved aside and on what a resume
    continues and changed (none for a plain new run)."""
    lines = []
    if moved is not None:
        lines.append('# the run found in {} was moved to {}'.format(
            settings['out'], moved))
    if settings['resume'] is not None:
        entry = settings['resumes'][-1]
        lines.append('# resumed from {} at iteration {} (epoch {}){}'.format(
            entry['snapshot'], entry['iteration'], entry['epoch'], ''.join(
                ', {} {} -> {}'.format(flags.get(k, k), _show(a), _show(b))
                for k, (a, b) in sorted(entry['changed'].items()))))
    return lines


def mixture_monitor(model, settings, dump_layers, dump_trigger, **kwargs):
    """The :class:`~mn_chainer.extensions.MixtureMonitor` of a trainer.

    Args:
        model (chainer.Link): The model whose MN layers are monitored.
        settings (dict): The run's settings (``resume``: the snapshot
            loaded, whose run directory holds the dumps so far).
        dump_layers (list of str): Layers whose mixtures are dumped (none:
            no dumps).
        dump_trigger: When to dump.
        **kwargs: Other arguments of the extension.

    """
    if dump_layers:
        previous = None
        if settings['resume'] is not None:
            previous = os.path.join(os.path.dirname(settings['resume']),
                                    'mixtures.npz')
        kwargs.update(dump_trigger=dump_trigger, dump_layers=dump_layers,
                      previous_dump=previous)
    return mn_chainer.extensions.MixtureMonitor(model, **kwargs)


def check_same_data(settings, recorded, keys):
    """Refuses a resume on other images than the snapshot's run.

    Raises:
        mn_chainer.cli.CommandError: If a statistic of the data (``keys``,
            e.g. ``n_train`` and the pixel mean) differs from the
            snapshot's.

    """
    for key in keys:
        if key in recorded and not numpy.allclose(
                recorded[key], settings[key], rtol=1e-6, atol=0):
            raise cli.CommandError(
                '--data {}: these are not the images of the snapshot\'s run '
                '({} {} instead of {})'.format(
                    settings['data'] or '(Chainer\'s download)', key,
                    _show(settings[key]), _show(recorded[key])))


def check_mixture_layers(names, mn_norms, flag='--dump-mixtures'):
    """Refuses names of layers that are not Mixture Normalization layers."""
    unknown = [n for n in names if n not in mn_norms]
    if unknown:
        raise cli.UsageError(
            '{}: {} is not a Mixture Normalization layer of this run (its MN '
            'layers: {})'.format(flag, ', '.join(unknown),
                                 ', '.join(mn_norms) or 'none'))


def _rewrite_log(trainer):
    """Makes the ``log`` file the snapshot's log.

    A run killed after its last snapshot may have logged further entries;
    until the resumed run reports again (never, if it is already as long as
    asked), the file would hold the abandoned entries.
    """
    try:
        report = trainer.get_extension('LogReport')
    except ValueError:
        return
    # The trainers' LogReport writes the default file name.
    path = os.path.join(trainer.out, mn_chainer.logs.LOG_FILE)
    if os.path.exists(path):
        rundir.write_text(path, json.dumps(report.log, indent=4))


def _keep_loaded_parameters(trainer):
    """Makes ChainerMN's optimizers take the loaded parameters as theirs.

    ChainerMN's multi-node optimizer spends its first update on
    broadcasting worker 0's parameters (``is_changed``: the parameter set
    differs from the one it last saw), which a fresh run needs. After a
    resume every worker has loaded the same parameters; without this, the
    first update after the resume would be skipped and the run would
    diverge from an uninterrupted one.
    """
    for optimizer in trainer.updater.get_all_optimizers().values():
        is_changed = getattr(optimizer, 'is_changed', None)
        if is_changed is not None:
            is_changed(optimizer.target)  # records the current parameters


def _in_directory(path, directory):
    return os.path.realpath(os.path.dirname(os.path.abspath(path))) == \
        os.path.realpath(os.path.abspath(directory))


def _mixture_monitor(trainer):
    try:
        return trainer.get_extension('MixtureMonitor')
    except ValueError:
        return None
