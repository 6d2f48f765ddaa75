"""mn_chainer.cli: one-line errors, exit statuses, help and flag helpers."""
import argparse
import errno
import re

import pytest

from mn_chainer import cli


def _run(main, argv, capsys):
    """Runs ``cli.run`` and returns (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as info:
        cli.run(main, argv, prog='prog')
    return info.value.code, capsys.readouterr().err.splitlines()


def _raise(error):
    def main(argv):
        raise error
    return main


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    for name in ('OMPI_COMM_WORLD_RANK', 'PMI_RANK', 'PMIX_RANK'):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize('error,status,line', [
    (cli.UsageError('--mn-layers conv9: unknown'), 2,
     'prog: error: --mn-layers conv9: unknown'),
    (cli.CommandError('--out r already holds a run'), 1,
     'prog: error: --out r already holds a run'),
    (ValueError('data.npz lacks the key(s) y_test'), 1,
     'prog: error: data.npz lacks the key(s) y_test'),
    (FileNotFoundError('CIFAR data file x.npz does not exist'), 1,
     'prog: error: CIFAR data file x.npz does not exist'),
    (OSError(errno.ENOSPC, 'No space left on device', 'r/snapshot_epoch_2'),
     1, 'prog: error: r/snapshot_epoch_2: No space left on device'),
    (KeyError('internal'), 1,
     "prog: error: KeyError: 'internal' (--debug shows the traceback)"),
])
def test_errors_end_with_one_line(capsys, error, status, line):
    assert _run(_raise(error), [], capsys) == (status, [line])


def test_success_returns_what_main_returns(capsys):
    assert cli.run(lambda argv: ['log'], ['-x'], prog='p') == ['log']
    assert capsys.readouterr().err == ''


def test_multi_line_message_is_cut_to_its_first_line(capsys):
    status, err = _run(_raise(RuntimeError('first\nsecond\nthird')), [],
                       capsys)
    assert (status, err) == (1, [
        'prog: error: RuntimeError: first (--debug shows the traceback)'])


def test_debug_flag_and_environment_show_the_traceback(capsys, monkeypatch):
    with pytest.raises(cli.UsageError):
        cli.run(_raise(cli.UsageError('bad')), ['--debug'], prog='p')
    monkeypatch.setenv(cli.DEBUG_ENV, '1')
    with pytest.raises(KeyError):
        cli.run(_raise(KeyError('k')), [], prog='p')
    monkeypatch.setenv(cli.DEBUG_ENV, '0')
    assert _run(_raise(KeyError('k')), [], capsys)[0] == 1


def test_keyboard_interrupt(capsys):
    assert _run(_raise(KeyboardInterrupt()), [], capsys) == (
        130, ['prog: interrupted'])


def test_other_workers_keep_expected_errors_quiet(capsys, monkeypatch):
    monkeypatch.setenv('OMPI_COMM_WORLD_RANK', '1')
    assert _run(_raise(cli.UsageError('bad')), [], capsys) == (2, [])
    status, err = _run(_raise(RuntimeError('boom')), [], capsys)
    assert status == 1
    assert err == ['prog: error (worker 1): RuntimeError: boom (--debug '
                   'shows the traceback)']


def _help(parser):
    return parser.format_help()


def test_help_formatter_shows_each_default_once():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument('--epoch', type=int, default=3, help='epochs')
    parser.add_argument('--lr', type=float, help='lr (default: preset)')
    parser.add_argument('--flag', action='store_true', help='a switch')
    parser.add_argument('--seed', type=int, default=0,
                        help='the seed (default: 0)')
    text = ' '.join(_help(parser).split())
    assert 'epochs (default: 3)' in text
    assert 'lr (default: preset)' in text
    assert 'default: None' not in text and 'default: False' not in text
    assert text.count('(default: 0)') == 1


def test_add_option_hides_old_spellings():
    parser = argparse.ArgumentParser()
    cli.add_option(parser, '--n-components', aliases=('--n_components',),
                   type=int, metavar='K', help='components')
    assert parser.parse_args(['--n_components', '5']).n_components == 5
    assert parser.parse_args(['--n-components', '4']).n_components == 4
    assert parser.parse_args([]).n_components is None
    text = _help(parser)
    assert '--n-components K' in text and '--n_components' not in text


def test_name_list():
    assert cli.name_list('conv2, conv3,') == ['conv2', 'conv3']
    assert cli.name_list(',') == []


@pytest.mark.parametrize('convert,text,ok', [
    (int, '3', True), (int, '0', False), (int, '-2', False),
    (int, 'x', False), (float, '1e-3', True), (float, 'nan', False),
])
def test_positive(convert, text, ok):
    parse = cli.positive(convert)
    if ok:
        assert parse(text) == convert(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_non_negative():
    assert cli.non_negative(int)('0') == 0
    with pytest.raises(argparse.ArgumentTypeError, match='>= 0'):
        cli.non_negative(float)('-1')


def test_check_batchsize():
    cli.check_batchsize(48, 48, 1)
    with pytest.raises(cli.UsageError,
                       match=r'--batchsize 64 exceeds the 48 training'):
        cli.check_batchsize(64, 48, 1)
    with pytest.raises(cli.UsageError, match='each of 2 workers'):
        cli.check_batchsize(64, 24, 2)


def test_cpu_devices_and_malformed_specifiers():
    assert cli.get_device('-1').xp.__name__ == 'numpy'
    assert cli.get_device('@numpy').xp.__name__ == 'numpy'
    for spec in ('foo', 'cpu', '1.5'):
        with pytest.raises(cli.UsageError, match='not a device specifier'):
            cli.get_device(spec)


def test_gpu_without_cuda_says_what_is_missing():
    from chainer.backends import cuda
    if cuda.available:
        pytest.skip('this machine has CUDA')
    for spec in ('0', '@cupy:0'):
        with pytest.raises(cli.CommandError) as info:
            cli.get_device(spec)
        message = str(info.value)
        assert re.match(r'--device {}: no usable GPU: '.format(
            re.escape(spec)), message)
        assert message.endswith('use -d -1 to run on the CPU')
        assert '\n' not in message


def test_help_formatter_shows_zero_defaults():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument('--seed', type=int, default=0, help='the seed')
    assert 'the seed (default: 0)' in ' '.join(_help(parser).split())
