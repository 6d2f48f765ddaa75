"""mn_chainer.rundir: one run per directory, atomic files, temporaries."""
import json
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

from mn_chainer import rundir


def _touch(path, text='x'):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), 'w') as f:
        f.write(text)
    return str(path)


def _listing(path):
    return sorted(os.listdir(str(path)))


def test_snapshots_in_numeric_order(tmp_path):
    for name in ('snapshot_epoch_10', 'snapshot_epoch_2', 'snapshot_epoch_1',
                 'snapshot_epoch_x', 'log'):
        _touch(tmp_path / name)
    (tmp_path / 'snapshot_epoch_3').mkdir()  # not a file
    assert rundir.snapshots(str(tmp_path)) == [
        'snapshot_epoch_1', 'snapshot_epoch_2', 'snapshot_epoch_10']
    assert rundir.latest_snapshot(str(tmp_path)) == str(
        tmp_path / 'snapshot_epoch_10')
    assert rundir.latest_snapshot(str(tmp_path / 'none')) is None


def test_run_files(tmp_path):
    assert rundir.run_files(str(tmp_path)) == []
    _touch(tmp_path / 'notes.txt')
    _touch(tmp_path / 'loss.png')
    assert rundir.run_files(str(tmp_path)) == []
    _touch(tmp_path / 'log')
    _touch(tmp_path / 'snapshot_iter_4')
    assert rundir.run_files(str(tmp_path)) == ['log', 'snapshot_iter_4']


def test_check_free_directories(tmp_path):
    rundir.check(str(tmp_path / 'new' / 'run'))
    _touch(tmp_path / 'notes.txt')
    rundir.check(str(tmp_path))


def test_check_refuses_a_directory_holding_a_run(tmp_path):
    out = str(tmp_path / 'run')
    for name in ('args.json', 'log', 'snapshot_epoch_1',
                 'snapshot_epoch_2'):
        _touch(os.path.join(out, name))
    with pytest.raises(rundir.RunDirError) as info:
        rundir.check(out)
    message = str(info.value)
    assert message.startswith('--out {} already holds a run'.format(out))
    assert '--resume {}'.format(os.path.join(out, 'snapshot_epoch_2')) \
        in message
    assert 'write elsewhere with --out' in message
    assert '--overwrite' in message and out + '.old1' in message
    rundir.check(out, overwrite=True)
    # Resuming the latest snapshot in place is the run itself.
    rundir.check(out, resume=os.path.join(out, 'snapshot_epoch_2'))
    with pytest.raises(rundir.RunDirError, match='has a later snapshot, '
                       'snapshot_epoch_2'):
        rundir.check(out, resume=os.path.join(out, 'snapshot_epoch_1'))
    rundir.check(out, resume=os.path.join(out, 'snapshot_epoch_1'),
                 overwrite=True)
    # A snapshot of another directory may start a new one, not this one.
    other = _touch(tmp_path / 'other' / 'snapshot_epoch_1')
    rundir.check(str(tmp_path / 'fresh'), resume=other)
    with pytest.raises(rundir.RunDirError, match='already holds a run'):
        rundir.check(out, resume=other)


def test_check_run_without_snapshot(tmp_path):
    _touch(tmp_path / 'log', '[]')
    with pytest.raises(rundir.RunDirError, match='has no snapshot'):
        rundir.check(str(tmp_path))


def test_check_out_under_a_file(tmp_path):
    path = _touch(tmp_path / 'file')
    with pytest.raises(rundir.RunDirError, match='is a file'):
        rundir.check(path)
    with pytest.raises(rundir.RunDirError, match='is a file'):
        rundir.check(os.path.join(path, 'run'))


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0,
                    reason='needs a non-root POSIX user')
def test_check_unwritable_directory(tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(rundir.RunDirError, match='is not writable'):
            rundir.check(str(locked / 'run'))
    finally:
        locked.chmod(0o700)


def test_move_aside_never_deletes(tmp_path):
    out = tmp_path / 'run'
    _touch(out / 'log', 'first')
    assert rundir.move_aside(str(out)) == str(out) + '.old1'
    _touch(out / 'log', 'second')
    assert rundir.move_aside(str(out)) == str(out) + '.old2'
    assert not out.exists()
    assert (tmp_path / 'run.old1' / 'log').read_text() == 'first'
    assert (tmp_path / 'run.old2' / 'log').read_text() == 'second'


def test_claim_moves_aside_creates_and_locks(tmp_path):
    out = str(tmp_path / 'run')
    _touch(os.path.join(out, 'args.json'), '{}')
    lock, moved = rundir.claim(out, overwrite=True)
    try:
        assert moved == out + '.old1'
        assert _listing(moved) == ['args.json']
        assert _listing(out) == [rundir.LOCK_FILE]
        if rundir.fcntl is not None:
            assert rundir.is_locked(out)
            with pytest.raises(rundir.RunDirError, match='in use'):
                rundir.check(out)
    finally:
        lock.release()
    assert not rundir.is_locked(out)
    rundir.check(out)
    # Resuming its latest snapshot, the run continues where it is.
    latest = _touch(os.path.join(out, 'snapshot_epoch_3'))
    assert not rundir.moves_aside(out, True, latest)
    assert not rundir.moves_aside(out, False)
    assert rundir.moves_aside(out, True)
    lock, moved = rundir.claim(out, overwrite=True, resume=latest)
    lock.release()
    assert moved is None and os.path.exists(latest)
    lock, moved = rundir.claim(out, overwrite=True)
    lock.release()
    assert moved == out + '.old2'
    assert _listing(moved) == [rundir.LOCK_FILE, 'snapshot_epoch_3']


@pytest.mark.skipif(rundir.fcntl is None, reason='no fcntl')
def test_lock_keeps_a_second_process_out(tmp_path):
    out = str(tmp_path)
    lock = rundir.RunLock(out)
    code = textwrap.dedent('''
        import sys
        from mn_chainer import rundir
        try:
            rundir.RunLock(sys.argv[1])
        except rundir.RunDirError as e:
            print(e)
            sys.exit(3)
    ''')
    try:
        result = subprocess.run([sys.executable, '-c', code, out],
                                stdout=subprocess.PIPE,
                                universal_newlines=True)
        assert result.returncode == 3
        assert 'in use by another run (process {})'.format(os.getpid()) \
            in result.stdout
    finally:
        lock.release()
    result = subprocess.run([sys.executable, '-c', code, out])
    assert result.returncode == 0


def test_remove_temporaries(tmp_path):
    keep = ['log', 'snapshot_epoch_1', 'tmpnotes', 'logbook', 'mine']
    for name in keep:
        _touch(tmp_path / name)
    # What Chainer's writers leave when killed mid-write.
    _touch(tmp_path / 'tmpsnapshot_epoch_2abcd_123' / 'snapshot_epoch_2')
    (tmp_path / 'tmpsnapshot_iter_40a1b2c3d4').mkdir()
    _touch(tmp_path / 'tmpgen_iter_4.npzqwertyui' / 'gen_iter_4.npz')
    _touch(tmp_path / 'log8ab_cdef' / 'log.json')
    _touch(tmp_path / 'args.json.tmp')
    _touch(tmp_path / 'mixtures.npz.tmp')
    # Look-alikes holding something else stay.
    _touch(tmp_path / 'logabcdefgh' / 'precious.txt')
    _touch(tmp_path / 'tmpsnapshot_epoch_3zzzzzzzz' / 'other')
    removed = rundir.remove_temporaries(str(tmp_path))
    assert removed == sorted([
        'args.json.tmp', 'log8ab_cdef', 'mixtures.npz.tmp',
        'tmpgen_iter_4.npzqwertyui', 'tmpsnapshot_epoch_2abcd_123',
        'tmpsnapshot_iter_40a1b2c3d4'])
    assert _listing(tmp_path) == sorted(keep + [
        'logabcdefgh', 'tmpsnapshot_epoch_3zzzzzzzz'])


def test_write_json_and_npz_are_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / 'args.json')
    rundir.write_json(path, {'b': 1, 'a': [1, 2]})
    with open(path) as f:
        assert json.load(f) == {'a': [1, 2], 'b': 1}

    def fail(*args, **kwargs):
        assert os.path.exists(path + '.tmp')  # written beside, then renamed
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', fail)
    with pytest.raises(OSError, match='No space left'):
        rundir.write_json(path, {'c': 3})
    monkeypatch.undo()
    with open(path) as f:  # the old file, whole
        assert json.load(f) == {'a': [1, 2], 'b': 1}
    assert _listing(tmp_path) == ['args.json']
    npz = str(tmp_path / 'sub' / 'mixtures.npz')
    rundir.write_npz(npz, {'x': numpy.arange(3)})
    with numpy.load(npz) as f:
        numpy.testing.assert_array_equal(f['x'], [0, 1, 2])
    assert _listing(tmp_path / 'sub') == ['mixtures.npz']
