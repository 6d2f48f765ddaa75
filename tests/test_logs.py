"""mn_chainer.logs: the one reader of run logs and settings."""
import json
import os

import pytest

from mn_chainer import logs


def _write(path, text):
    with open(str(path), 'w') as f:
        f.write(text)
    return str(path)


def test_accuracy_key_is_the_evaluator_key():
    assert logs.ACCURACY_KEY == 'validation/main/accuracy'


def test_load_log_from_directory_and_file(tmp_path):
    entries = [{'epoch': 1, 'iteration': 4, 'main/loss': 2.5},
               {'epoch': 2, 'iteration': 8, 'main/loss': 2.0}]
    _write(tmp_path / 'log', json.dumps(entries, indent=4))
    assert logs.load_log(str(tmp_path)) == entries
    assert logs.load_log(str(tmp_path / 'log')) == entries
    _write(tmp_path / 'log', '[]')
    assert logs.load_log(str(tmp_path)) == []


@pytest.mark.parametrize('text,problem', [
    ('', 'empty file'),
    ('  \n', 'empty file'),
    ('[{"epoch": 1, "iteration": 4}, {"epo', 'truncated or invalid JSON'),
    ('{"epoch": 1}', 'expected a JSON list'),
    ('[1, 2]', 'entry 0 is not a JSON object'),
    ('[{"epoch": 1, "iteration": 4}, {"iteration": 8}]',
     'entry 1 has no numeric "epoch"'),
    ('[{"epoch": 1, "iteration": "4"}]', 'entry 0 has no numeric'),
    ('[{"epoch": true, "iteration": 4}]', 'entry 0 has no numeric'),
])
def test_bad_logs_name_the_file_and_problem(tmp_path, text, problem):
    _check_error(logs.load_log, tmp_path, 'log', text, problem)


def _check_error(load, run_dir, name, text, problem):
    path = _write(run_dir / name, text)
    with pytest.raises(logs.LogError) as info:
        load(str(run_dir))
    assert str(info.value).startswith(path + ': ')
    assert problem in str(info.value)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)


def test_binary_log(tmp_path):
    with open(str(tmp_path / 'log'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n\xff\xfe')
    with pytest.raises(logs.LogError, match='invalid UTF-8'):
        logs.load_log(str(tmp_path))


def test_missing_log(tmp_path):
    with pytest.raises(logs.LogError, match='no such run directory'):
        logs.load_log(str(tmp_path / 'nowhere'))
    with pytest.raises(logs.LogError) as info:
        logs.load_log(str(tmp_path))
    assert info.value.path == os.path.join(str(tmp_path), 'log')
    assert 'no such file' in str(info.value)


def test_log_that_is_a_directory(tmp_path):
    (tmp_path / 'log').mkdir()
    with pytest.raises(logs.LogError, match='is a directory'):
        logs.load_log(str(tmp_path))


def test_load_args(tmp_path):
    assert logs.load_args(str(tmp_path)) is None
    _write(tmp_path / 'args.json', json.dumps({'lr': 0.01, 'mn_layers': []}))
    assert logs.load_args(str(tmp_path)) == {'lr': 0.01, 'mn_layers': []}


@pytest.mark.parametrize('text,problem', [
    ('', 'empty file'),
    ('{"lr": 0.0', 'truncated or invalid JSON'),
    ('[1]', 'expected a JSON object, got a JSON list'),
])
def test_bad_args(tmp_path, text, problem):
    _check_error(logs.load_args, tmp_path, 'args.json', text, problem)


def test_dangling_args_link_is_an_error(tmp_path):
    os.symlink(str(tmp_path / 'gone.json'), str(tmp_path / 'args.json'))
    with pytest.raises(logs.LogError, match='no such file'):
        logs.load_args(str(tmp_path))
