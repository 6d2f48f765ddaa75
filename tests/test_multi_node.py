"""MultiNodeMixtureNormalization under ``mpiexec -n 2`` and ``-n 3``.

The checks themselves are in ``tests/mpi/check_multi_node.py``: the fitted
mixture, the forward output, the gradients and the queue on each worker
equal those of a single-process ``MixtureNormalization`` on the
concatenated batch (to 1e-6, float64), and data-parallel training of the
CIFAR CNN with MN keeps every worker's parameters and queues identical.
They need Open MPI and mpi4py, which ``make test`` installs.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

import cifar_files


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'tests', 'mpi', 'check_multi_node.py')


def _run_mpi(n_workers, args, cwd=None):
    """``mpiexec -n n_workers python args...``; skips without MPI."""
    mpiexec = _mpiexec_or_skip()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1',
               OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1',
               OMPI_MCA_rmaps_base_oversubscribe='1')
    result = subprocess.run(
        [mpiexec, '-n', str(n_workers), sys.executable] + list(args),
        cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=300, universal_newlines=True)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def _mpiexec_or_skip():
    mpiexec = shutil.which('mpiexec')
    if mpiexec is None:
        pytest.skip('mpiexec not found (install Open MPI: see README)')
    try:
        import mpi4py  # NOQA
    except ImportError:
        pytest.skip('mpi4py is not installed (see README)')
    return mpiexec


@pytest.mark.parametrize('n_workers', [2, 3])
def test_multi_node_equals_single_process(n_workers):
    output = _run_mpi(n_workers, [SCRIPT])
    assert 'multi-node checks passed on {} workers'.format(
        n_workers) in output


def test_train_cifar_with_communicator(tmp_path):
    data = cifar_files.write_tiny_cifar(tmp_path / 'tiny.npz', 64, 16)
    out = str(tmp_path / 'out')
    _run_mpi(2, [os.path.join(ROOT, 'train_cifar.py'),
                 '--communicator', 'naive', '--data', data, '--norm', 'mn',
                 '--mn-layers', 'conv2,conv3', '--widths', '4,8,8,8',
                 '-b', '8', '-e', '2', '--no-progress', '-o', out])
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    assert [e['epoch'] for e in log] == [1, 2]
    # 64 images over 2 workers, batch 8 per worker: 4 updates per epoch.
    assert log[-1]['iteration'] == 8
    assert 'mn/conv3/effective_k' in log[-1]
    with open(os.path.join(out, 'args.json')) as f:
        assert json.load(f)['n_workers'] == 2
    assert os.path.exists(os.path.join(out, 'snapshot_epoch_2'))


def test_train_dcgan_with_communicator(tmp_path):
    data = cifar_files.write_tiny_cifar(tmp_path / 'tiny.npz', 32, 8)
    out = str(tmp_path / 'out')
    _run_mpi(2, [os.path.join(ROOT, 'train_dcgan.py'),
                 '--communicator', 'naive', '--data', data, '--mn',
                 '--ch', '16', '-b', '4', '--iterations', '4',
                 '--display_interval', '2', '--snapshot_interval', '4',
                 '--fid_interval', '0', '-o', out])
    with open(os.path.join(out, 'log')) as f:
        log = json.load(f)
    assert [e['iteration'] for e in log] == [2, 4]
    assert 'mn/norm1/effective_k' in log[-1]
    assert os.path.exists(os.path.join(out, 'snapshot_iter_4'))
