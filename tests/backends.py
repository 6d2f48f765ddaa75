"""Backends of the function and link tests (NumPy; CuPy where a GPU exists).

Use as Chainer's own BN tests do::

    @testing.inject_backend_tests(None, backends.BACKENDS)
    class TestSomething(unittest.TestCase):
        def test_it(self, backend_config): ...

and import :func:`skip_gpu_tests_without_gpu` into the test module (an
autouse fixture): the CuPy cases carry the ``gpu`` mark and are skipped,
with the reason, on a machine without a usable CUDA device.
"""
import numpy
import pytest

import chainer


#: NumPy, and CuPy on GPU 0.
BACKENDS = [{}, {'use_cuda': True}]

_gpu_status = []


def gpu_unavailable_reason():
    """None when CuPy sees a CUDA device, else why not (cached)."""
    if not _gpu_status:
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
            _gpu_status.append(None if count > 0 else 'no CUDA device')
        except Exception as e:  # no CuPy, no driver, no device
            _gpu_status.append('no usable CUDA device ({})'.format(
                type(e).__name__))
    return _gpu_status[0]


@pytest.fixture(autouse=True)
def skip_gpu_tests_without_gpu(request):
    """Skips tests marked ``gpu`` when no CUDA device is usable."""
    if request.node.get_closest_marker('gpu') is not None:
        reason = gpu_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)


def to_cpu(a):
    """A raw array or Variable's data as a NumPy array."""
    if isinstance(a, chainer.Variable):
        a = a.array
    return numpy.asarray(chainer.backend.CpuDevice().send(a))
