"""Conventions shared by the package's command-line programs.

Every program (``train_cifar.py``, ``train_dcgan.py``, ``mn-compare``,
``mn-plot``, the demo) ends a failure with one line on stderr,
``<program>: error: <what is wrong>``, naming the file, layer or flag
concerned, and exits with

* status 2 for a usage error (argparse's convention: the command line
  cannot work, e.g. ``--mn-layers conv9`` or a batch larger than the
  training set), raised as :class:`UsageError`;
* status 1 for a data or environment error (a missing or corrupt file, no
  usable GPU, a run directory that already holds a run, a full disk).

The traceback is printed only when asked for, with ``--debug`` or the
environment variable ``MN_CHAINER_DEBUG=1``.

Programs write their own ``main(argv)`` (which raises, so that it can be
called and tested in-process) and let :func:`run` turn what it raises into
the line and the exit status.
"""
import argparse
import os
import sys


#: Environment variable that makes :func:`run` show tracebacks.
DEBUG_ENV = 'MN_CHAINER_DEBUG'


class CommandError(Exception):

    """A data or environment error of a command (exit status 1).

    The message is the whole explanation shown to the user: it names the
    file, layer or flag and the problem, and says what to do where that is
    not obvious.
    """

    exit_status = 1


class UsageError(CommandError, ValueError):

    """A command line that cannot work (exit status 2, as argparse's)."""

    exit_status = 2


def debug_requested(argv=None):
    """Whether ``--debug`` is in ``argv`` or ``MN_CHAINER_DEBUG`` is set."""
    if os.environ.get(DEBUG_ENV, '') not in ('', '0'):
        return True
    argv = sys.argv[1:] if argv is None else argv
    return '--debug' in argv


def add_debug_flag(parser):
    """Adds ``--debug`` (show tracebacks) to a parser."""
    parser.add_argument('--debug', action='store_true',
                        help='show the traceback of an error (also: '
                        '{}=1)'.format(DEBUG_ENV))


def describe(error):
    """One line telling what went wrong, for :func:`run`."""
    if isinstance(error, CommandError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        if error.filename is not None:
            return '{}: {}'.format(error.filename, error.strerror)
        return error.strerror
    if isinstance(error, (ValueError, FileNotFoundError)):
        # Raised with a message for the user (a file and its problem).
        return str(error)
    text = str(error).strip().splitlines()
    return '{}{} (--debug shows the traceback)'.format(
        type(error).__name__, ': ' + text[0] if text else '')


def _worker_rank():
    """This process's rank under mpiexec (0 outside of MPI)."""
    for name in ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 0


def run(main, argv=None, prog=None):
    """Runs ``main(argv)`` the way a command should end.

    Args:
        main (callable): Takes the argument list and returns a value (the
            exit status when it is an ``int``, else ignored) or raises.
        argv (list of str or None): Arguments (default: ``sys.argv[1:]``).
        prog (str or None): Program name of the error line (default: the
            script's name).

    Returns:
        What ``main`` returned.

    Raises:
        SystemExit: On any error of ``main``, after writing
            ``<prog>: error: <message>`` to stderr (only on worker 0 under
            ``mpiexec`` for the errors every worker raises alike): status 2
            for a :class:`UsageError`, 1 otherwise, 130 on Ctrl-C. With
            :func:`debug_requested`, the error propagates instead.

    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or os.path.basename(sys.argv[0])
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug_requested(argv):
            raise
        sys.stderr.write('{}: interrupted\n'.format(prog))
        raise SystemExit(130)
    except Exception as e:
        if debug_requested(argv):
            raise
        rank = _worker_rank()
        if rank == 0 or not isinstance(e, CommandError):
            where = '' if rank == 0 else ' (worker {})'.format(rank)
            sys.stderr.write('{}: error{}: {}\n'.format(
                prog, where, describe(e)))
            sys.stderr.flush()
        raise SystemExit(getattr(e, 'exit_status', 1))


class HelpFormatter(argparse.HelpFormatter):

    """Shows each option's default once.

    Like :class:`argparse.ArgumentDefaultsHelpFormatter`, but it adds
    ``(default: X)`` only where the help does not already state a default
    and the default is a value (not ``None`` or ``False``, which mean "not
    given").
    """

    def _get_help_string(self, action):
        text = action.help or ''
        if ('default' in text or action.default is None
                or action.default is False
                or action.default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        return text + ' (default: %(default)s)'


def add_option(container, *flags, **kwargs):
    """Adds an option and hidden aliases of its other spellings.

    The option's help shows the first spelling of ``flags`` and the short
    one; ``aliases`` (a keyword) lists older spellings that still parse,
    e.g. ``add_option(group, '--n-components', aliases=('--n_components',),
    type=int)``. They do not appear in ``--help``.

    Returns:
        argparse.Action: The visible option's action.

    """
    aliases = kwargs.pop('aliases', ())
    action = container.add_argument(*flags, **kwargs)
    for alias in aliases:
        hidden = dict(kwargs, dest=action.dest, help=argparse.SUPPRESS,
                      default=argparse.SUPPRESS)
        hidden.pop('metavar', None)
        container.add_argument(alias, **hidden)
    return action


def name_list(text):
    """argparse type: ``'conv2, conv3'`` -> ``['conv2', 'conv3']``.

    Empty names are dropped, so ``','`` gives an empty list; the program
    reports that with the valid names (which depend on the model).
    """
    return [s for s in (t.strip() for t in text.split(',')) if s]


def checked(convert, test, requirement):
    """argparse type: ``convert(text)``, for which ``test(value)`` holds.

    Args:
        convert (callable): ``int``, ``float``, ...
        test (callable): Value -> bool.
        requirement (str): What ``test`` asks, for messages (``'must be
            positive'``).

    """
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError('expected {}, got {!r}'.format(
                _type_name(convert), text))
        if not test(value):
            raise argparse.ArgumentTypeError('{}, got {}'.format(
                requirement, text))
        return value
    parse.__name__ = _type_name(convert)
    return parse


def positive(convert):
    """argparse type: ``convert(text)``, which must be positive."""
    return checked(convert, lambda value: value > 0, 'must be positive')


def non_negative(convert):
    """argparse type: ``convert(text)``, which must be >= 0."""
    return checked(convert, lambda value: value >= 0, 'must be >= 0')


def _type_name(convert):
    return {int: 'an integer', float: 'a number'}.get(
        convert, getattr(convert, '__name__', 'a value'))


def get_device(spec, flag='--device'):
    """Chainer's device for ``spec``, or a clear error.

    Args:
        spec (str): A Chainer device specifier: ``-1``/``@numpy`` (CPU),
            ``0``/``@cupy:0`` (GPU 0), ...
        flag (str): The option that gave it, for messages.

    Returns:
        chainer.backend.Device: The device (not yet in use).

    Raises:
        UsageError: For a malformed specifier.
        CommandError: For a GPU on a machine where CuPy cannot use one;
            the message says what is missing and suggests ``-d -1``.

    """
    import chainer
    from chainer.backends import cuda
    text = str(spec).strip()
    is_id = text.lstrip('-').isdigit()
    if not (is_id or text.startswith('@')):
        raise UsageError('{} {!r}: not a device specifier; use -1 or @numpy '
                         'for the CPU, 0 or @cupy:0 for GPU 0'.format(
                             flag, text))
    wants_gpu = text.startswith('@cupy') or (is_id and int(text) >= 0)
    if wants_gpu and not cuda.available:
        error = getattr(cuda, '_resolution_error', None)
        if isinstance(error, ImportError) and 'cupy' in str(error):
            reason = 'CuPy is not installed'
        else:
            lines = str(error or 'CuPy cannot use CUDA').strip().splitlines()
            reason = 'CuPy cannot use CUDA ({})'.format(lines[-1])
        raise CommandError('{} {}: no usable GPU: {}; use -d -1 to run on the '
                           'CPU'.format(flag, text, reason))
    try:
        device = chainer.get_device(int(text) if is_id else text)
    except (ValueError, TypeError) as e:
        raise UsageError('{} {!r}: not a device specifier ({})'.format(
            flag, text, e))
    except RuntimeError as e:
        raise CommandError('{} {}: {}'.format(
            flag, text, ' '.join(str(e).split())))
    if wants_gpu:
        try:
            device.use()
        except Exception as e:  # CUDA errors have no common base class
            raise CommandError('{} {}: no usable GPU ({}); use -d -1 to run '
                               'on the CPU'.format(flag, text, e))
    return device


# ---------------------------------------------------------------------------
# Checks of the trainers' flags against their models, data and workers.


def on_main_worker(comm, function):
    """Runs ``function`` on worker 0 only; every worker raises its error.

    A :class:`CommandError` of worker 0 is broadcast, so
    that all workers stop with the same error instead of waiting for it.

    Returns:
        What ``function`` returned on worker 0, None on the others.

    """
    if comm is None:
        return function()
    result = error = None
    if comm.rank == 0:
        try:
            result = function()
        except CommandError as e:
            error = e
    # ChainerMN's root sends an object, never None; the others pass None.
    error, = comm.bcast_obj((error,) if comm.rank == 0 else None)
    if error is not None:
        raise error
    return result


def create_communicator(name):
    """ChainerMN's communicator ``name``, or a one-line error."""
    try:
        import chainermn
    except ImportError as e:
        raise CommandError('--communicator {}: ChainerMN cannot be imported '
                           '({}; install mpi4py and run under mpiexec)'
                           .format(name, e))
    try:
        return chainermn.create_communicator(name)
    except ValueError as e:
        raise UsageError('--communicator {}: {}'.format(name, e))
    except Exception as e:  # MPI and NCCL errors have no common base
        raise CommandError('--communicator {}: {}'.format(name, e))


def worker_device(spec, comm):
    """The device of this worker: ``spec``, or with ``comm`` and a GPU
    specifier, the GPU of the worker's rank within its node."""
    if comm is not None and str(spec) not in ('-1', '@numpy'):
        spec = '@cupy:{}'.format(comm.intra_rank)
    device = get_device(spec)
    device.use()
    return device


def check_batchsize(batchsize, n_images, n_workers, flag='--batchsize'):
    """Refuses a batch larger than a worker's share of the training set
    (one update would count as several epochs)."""
    if batchsize > n_images:
        share = ('the {} training images'.format(n_images) if n_workers == 1
                 else 'the {} training images of each of {} workers'.format(
                     n_images, n_workers))
        raise UsageError('{} {} exceeds {}; use a smaller batch or more '
                         'images'.format(flag, batchsize, share))


def check_norm_layers(model, names, flag='--mn-layers'):
    """Expands layer names on a model; unknown ones are usage errors.

    Returns:
        list of str: The model's norm names they expand to.

    """
    expanded = []
    for name in names:
        try:
            expanded.extend(model.expand_norm_layer(name))
        except ValueError as e:
            raise UsageError('{} {}: {}'.format(flag, name, e))
    return expanded
