"""Multi-worker runs are reproducible, resumed ones included (issue 15).

Under ``mpiexec -n 2`` with ChainerMN's ``naive`` communicator: the same
command twice logs the same numbers (each worker's augmentation is seeded
from the seed and its rank, not from the OS), and a run stopped after its
first snapshot and resumed logs what the uninterrupted run logs (the
snapshot holds every worker's random streams, and the resumed optimizers do
not spend their first update on ChainerMN's initial broadcast). Needs Open
MPI and mpi4py (``make test`` installs them); skipped without.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tiny_data import write_tiny_cifar


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpiexec(script, argv, n_workers=2, status=0):
    """Runs ``mpiexec -n n_workers python script argv``, which must exit
    with ``status``; returns its stderr."""
    mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        pytest.skip('mpiexec not found (install Open MPI: see README)')
    pytest.importorskip('mpi4py')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1',
               OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMPI_MCA_rmaps_base_oversubscribe='1')
    command = [mpiexec, '-n', str(n_workers), sys.executable,
               os.path.join(ROOT, script), '--communicator', 'naive']
    result = subprocess.run(command + list(argv), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == status, result.stderr[-3000:]
    return result.stderr


def _log(out):
    with open(os.path.join(str(out), 'log')) as f:
        return [{k: v for k, v in entry.items() if k != 'elapsed_time'}
                for entry in json.load(f)]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_tiny_cifar(tmp_path_factory.mktemp('data') / 'tiny.npz',
                            64, 16)


def test_cifar_same_command_same_log_and_resume(data, tmp_path):
    common = ['--data', data, '--norm', 'mn', '--mn-layers', 'conv2,conv3',
              '--widths', '4,8,8,8', '-b', '8', '--no-progress']
    runs = [tmp_path / 'a', tmp_path / 'b']
    for out in runs:
        _mpiexec('train_cifar.py', common + ['-e', '2', '-o', str(out)])
    log = _log(runs[0])
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, 4), (2, 8)]
    assert _log(runs[1]) == log
    part = tmp_path / 'part'
    _mpiexec('train_cifar.py', common + ['-e', '1', '-o', str(part)])
    # Only the snapshot and the new length: the rest from the snapshot.
    _mpiexec('train_cifar.py', ['-r', str(part), '-e', '2',
                                '--no-progress'])
    assert _log(part) == log
    with open(os.path.join(str(part), 'args.json')) as f:
        args = json.load(f)
    assert args['n_workers'] == 2
    assert args['resumes'][0]['changed'] == {'epoch': [1, 2]}


def test_dcgan_resume_equals_uninterrupted(data, tmp_path):
    common = ['--data', data, '--mn', '--ch', '16', '-b', '4',
              '--display-interval', '1', '--snapshot-interval', '2',
              '--fid-interval', '0']
    full, part = tmp_path / 'full', tmp_path / 'part'
    _mpiexec('train_dcgan.py', common + ['--iterations', '4', '-o',
                                         str(full)])
    _mpiexec('train_dcgan.py', common + ['--iterations', '2', '-o',
                                         str(part)])
    _mpiexec('train_dcgan.py', ['-r', str(part), '--iterations', '4'])
    assert [e['iteration'] for e in _log(full)] == [1, 2, 3, 4]
    assert _log(part) == _log(full)


def test_an_error_every_worker_meets_is_reported_once(data, tmp_path):
    err = _mpiexec('train_cifar.py', ['--data', data, '--mn-layers', 'conv9',
                                      '-o', str(tmp_path / 'r')], status=2)
    lines = [line for line in err.splitlines() if ': error' in line]
    assert lines == ["train_cifar.py: error: --mn-layers conv9: unknown "
                     "norm layer 'conv9' of CifarCNN; valid names: conv1, "
                     "conv2, conv3, conv4"]
