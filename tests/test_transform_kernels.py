"""Tests of :mod:`mn_chainer.transform_kernels`, the C kernels of the
transform (issue 19), and of the choice of the transform's passes.

Every kernel is compared, element by element, with the float64 reference
of its definition (``transform_pass_reference.py``) within 64 units of
roundoff of the magnitude of the terms it sums, on awkward shapes (one
point, one channel, lines shorter than a vector and longer than a segment,
``K = 1..6``), in one chunk and in uneven chunks on three threads, with and
without the masks of Eq. 40 (signs +1, -1 and 0), exact zeros and a dead
channel, and far from zero (the shift subtracted before any product).  The
transform through the C kernels equals the array passes (its reference
path), gives the same bits on one thread and three, passes
``chainer.gradient_check`` on awkward shapes, and takes non-native byte
orders and strided inputs; the function-level checks against the
equations run on both paths in ``test_transform_blocks.py``.  On a GPU the
transform through the CUDA kernels equals its array passes (the kernels
themselves are tested in ``test_kernels.py``).
"""
import json
import os
import sys

import numpy
import pytest

from chainer import gradient_check

import backends
from backends import skip_gpu_tests_without_gpu  # NOQA: F401 (fixture)
import cifar_files
from mn_chainer import cpu_kernels
import mn_chainer.functions as MF
from mn_chainer.functions import transform_passes
from mn_chainer import transform_kernels
import transform_cases
import transform_pass_reference as reference


DTYPES = [numpy.float32, numpy.float64]
COMPONENTS = [1, 2, 3, 6]


@pytest.fixture
def kernels(monkeypatch):
    transform_cases.require_c_kernels(monkeypatch)
    return transform_kernels


@pytest.fixture(params=['one chunk', 'chunks on three threads'])
def ranges(request, monkeypatch):
    """Every pass in one chunk of lines (one thread), or cut into up to
    seven uneven chunks taken by three threads."""
    if request.param == 'chunks on three threads':
        transform_cases.split_chunks(monkeypatch)
    return request.param


def _mask(case, masked):
    return (case.sign, case.thresholds) if masked else None


def _check_sums(kernels, case, values, masked):
    """``mix_sums`` of ``case`` against its reference; returns the sums."""
    dtype = case.x.dtype
    big = reference.absolute(case)
    got = kernels.mix_sums(case.x, case.w, case.shift,
                           None if values is None else values,
                           _mask(case, masked))
    k, c = case.w.shape[1], case.x.shape[1]
    assert got.dtype == numpy.float64 and got.shape == (2, k, c)
    expected = reference.mix_sums(
        case.x, case.w, case.shift, values,
        *(_mask(case, masked) or (None, None)))
    magnitude = reference.mix_sums(
        big.x, big.w, big.shift, None if values is None else big.values)
    reference.assert_pass_close(got, expected, magnitude, dtype,
                                'sums (values {}, mask {})'.format(
                                    values is not None, masked))
    return got


def _check_forward(kernels, case, relu):
    dtype = case.x.dtype
    big = reference.absolute(case)
    got = kernels.mix_forward(case.x, case.w, case.shift, case.scale,
                              case.offset, relu)
    assert got.dtype == dtype and got.shape == case.x.shape
    reference.assert_pass_close(
        got, reference.mix_forward(case.x, case.w, case.shift, case.scale,
                                   case.offset, relu),
        reference.mix_forward(big.x, big.w, big.shift, big.scale,
                              big.offset, False), dtype,
        'forward (relu {})'.format(relu))
    return got


def _check_grad_x(kernels, case, masked):
    dtype = case.x.dtype
    big = reference.absolute(case)
    got = kernels.mix_grad_x(case.x, case.w, case.values, case.shift,
                             case.u, case.w1, case.w2, _mask(case, masked))
    assert got.dtype == dtype and got.shape == case.x.shape
    reference.assert_pass_close(
        got, reference.mix_grad_x(case.x, case.w, case.values, case.shift,
                                  case.u, case.w1, case.w2,
                                  *(_mask(case, masked) or (None, None))),
        reference.mix_grad_x(big.x, big.w, big.values, big.shift, big.u,
                             big.w1, big.w2), dtype,
        'grad_x (mask {})'.format(masked))
    return got


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('k', COMPONENTS)
@pytest.mark.parametrize('shape', reference.SHAPES)
def test_kernels_match_their_definitions(kernels, ranges, shape, k, dtype):
    """Every kernel in every form: the statistics' sums, the gradient's
    sums with and without the masks, the output with and without the
    ReLU, the input's gradient with and without the masks."""
    case = reference.case(shape, k, dtype, seed=k)
    statistics = _check_sums(kernels, case, None, False)
    _check_sums(kernels, case, case.values, False)
    _check_sums(kernels, case, case.values, True)
    # The dead channel (x = shift = 0): its statistics are exact zeros.
    assert (statistics[:, :, 0] == 0).all()
    for relu in (False, True):
        y = _check_forward(kernels, case, relu)
    assert (y >= 0).all()
    for masked in (False, True):
        _check_grad_x(kernels, case, masked)


@pytest.mark.parametrize('shape', [(4, 6, 9), (5, 3, 1)])
def test_far_from_zero(kernels, ranges, shape):
    """Activations 1e4 from zero, float32, the shift near them: every pass
    takes ``x - shift`` before its products (the expanded forms would be
    off by ~1e4^2 ulp)."""
    case = reference.case(shape, 3, numpy.float32, seed=5, offset=1e4)
    _check_sums(kernels, case, None, False)
    _check_sums(kernels, case, case.values, True)
    _check_forward(kernels, case, True)
    _check_grad_x(kernels, case, True)


def test_masks_of_zero_sign(kernels):
    """sign 0 (gamma = 0): the mask is on exactly where the threshold is
    negative (beta > 0), whatever x."""
    case = reference.case((3, 4, 5), 2, numpy.float64, seed=3)
    case = case._replace(sign=numpy.zeros(4),
                         thresholds=numpy.array([[-1., 1., -0., 0.],
                                                 [1., -1., -2., 2.]]))
    sums = kernels.mix_sums(case.x, case.w, case.shift, case.values,
                            _mask(case, True))
    on = (case.thresholds < 0)[None]
    unmasked = kernels.mix_sums(case.x, case.w, case.shift, case.values)
    numpy.testing.assert_array_equal(sums, numpy.where(on, unmasked, 0))


@pytest.mark.parametrize('dtype', DTYPES)
def test_results_do_not_depend_on_the_threads(kernels, monkeypatch, dtype):
    """The chunks' sums are added in chunk order: one thread and three give
    the same bits, for every kernel and through the function."""
    case = reference.case((7, 5, 33), 4, dtype, seed=8)
    x, tau, gamma, beta, gy = transform_cases.inputs(
        (9, 5, 7), 3, seed=8, dtype=dtype,
        gamma=transform_cases.SIGNED_GAMMA[:5])
    transform_cases.use_path(monkeypatch, 'c')
    monkeypatch.setattr(cpu_kernels, 'CHUNK_WORK', 1)

    def run():
        return [kernels.mix_sums(case.x, case.w, case.shift, case.values,
                                 _mask(case, True)),
                kernels.mix_forward(case.x, case.w, case.shift, case.scale,
                                    case.offset, True),
                kernels.mix_grad_x(case.x, case.w, case.values, case.shift,
                                   case.u, case.w1, case.w2,
                                   _mask(case, True))] + [
            a for relu in (False, True) for a in
            transform_cases.forward_backward(x, tau, gamma, beta, gy, relu)]

    outputs = []
    for threads in (1, 3):
        monkeypatch.setattr(cpu_kernels, 'n_threads', lambda: threads)
        outputs.append(run())
    for one, three in zip(*outputs):
        numpy.testing.assert_array_equal(one, three)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', [(7, 3, 4, 4), (11, 5), (3, 1, 70),
                                   (2, 4, 130)])
def test_c_kernels_equal_array_passes(monkeypatch, shape, dtype, relu):
    """The transform through the C kernels equals its array passes."""
    x, tau, gamma, beta, gy = transform_cases.inputs(
        shape, 4, seed=9, dtype=dtype,
        gamma=transform_cases.SIGNED_GAMMA[:shape[1]])
    results = []
    for path in ('array', 'c'):
        transform_cases.use_path(monkeypatch, path)
        results.append(transform_cases.forward_backward(x, tau, gamma, beta,
                                                        gy, relu))
    transform_cases.assert_all_close(
        results[1], results[0], 1e-12 if dtype == numpy.float64 else 2e-6)


@pytest.mark.gpu
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('shape', [(7, 3, 4, 4), (11, 5), (3, 1, 70),
                                   (2, 4, 130), (16, 64, 8, 8)])
def test_cuda_kernels_equal_array_passes_gpu(monkeypatch, shape, dtype,
                                             relu):
    """On CuPy: the transform through the CUDA kernels equals its array
    passes and the float64 equations."""
    import cupy
    x, tau, gamma, beta, gy = transform_cases.inputs(
        shape, 4, seed=9, dtype=dtype,
        gamma=numpy.resize(transform_cases.SIGNED_GAMMA, shape[1]))
    results = []
    for use_kernels in (False, True):
        monkeypatch.setattr(transform_passes, 'USE_KERNELS', use_kernels)
        assert transform_passes.select_passes(cupy) is (
            transform_passes.CudaPasses if use_kernels
            else transform_passes.ArrayPasses)
        results.append([backends.to_cpu(a) for a in
                        transform_cases.forward_backward(
                            *(cupy.asarray(a) for a in (x, tau, gamma, beta,
                                                        gy)), relu)])
    rtol = 1e-12 if dtype == numpy.float64 else 2e-6
    transform_cases.assert_all_close(results[1], results[0], rtol)
    transform_cases.assert_all_close(
        results[1], transform_cases.expected(
            *(a.astype(numpy.float64) for a in (x, tau, gamma, beta, gy)),
            relu=relu), 1e-10 if dtype == numpy.float64 else 4e-6)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', [(6, 1, 5), (7, 3), (3, 2, 1, 1),
                                   (2, 3, 67)])
def test_gradient_check_through_the_kernels(monkeypatch, shape, relu):
    """``chainer.gradient_check`` of the function on the C kernels: one
    channel, 2-D input (P = 1), a spatial size of 1 and lines of two
    segments; signed gamma."""
    transform_cases.use_path(monkeypatch, 'c')
    x, tau, gamma, beta, gy = transform_cases.inputs(
        shape, 3, seed=10, gamma=transform_cases.SIGNED_GAMMA[:shape[1]])

    def f(x, gamma, beta):
        return MF.mixture_normalization(x, tau, gamma, beta, relu=relu)

    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6,
                                  atol=1e-6, rtol=1e-5, dtype=numpy.float64)


def test_byte_order_and_strides(monkeypatch):
    """Big-endian and strided inputs give the native, contiguous result
    (in the input's dtype)."""
    transform_cases.use_path(monkeypatch, 'c')
    x, tau, gamma, beta, gy = transform_cases.inputs(
        (5, 3, 4, 4), 3, seed=11, dtype=numpy.float32)
    native = transform_cases.forward_backward(x, tau, gamma, beta, gy, True)
    swapped = transform_cases.forward_backward(
        x.astype('>f4'), tau.astype('>f4'), gamma, beta, gy.astype('>f4'),
        True)
    assert swapped[0].dtype == numpy.dtype('>f4')
    wide = numpy.zeros((5, 6, 4, 8), numpy.float32)
    wide[:, ::2, :, ::2] = x
    strided = transform_cases.forward_backward(
        wide[:, ::2, :, ::2], tau, gamma, beta, gy, True)
    for a, b, c in zip(native, swapped, strided):
        numpy.testing.assert_array_equal(a, b)
        numpy.testing.assert_array_equal(a, c)


@pytest.mark.parametrize('shape', [(0, 3, 4), (2, 3, 0), (0, 2, 1)])
def test_empty_batches(kernels, shape):
    case = reference.case(shape, 2, numpy.float32)
    numpy.testing.assert_array_equal(
        kernels.mix_sums(case.x, case.w, case.shift, case.values,
                         _mask(case, True)), numpy.zeros((2, 2, shape[1])))
    assert kernels.mix_forward(case.x, case.w, case.shift, case.scale,
                               case.offset, True).shape == shape
    assert kernels.mix_grad_x(case.x, case.w, case.values, case.shift,
                              case.u, case.w1, case.w2).shape == shape


def test_bad_arguments_raise(kernels):
    case = reference.case((3, 4, 5), 2, numpy.float32)
    with pytest.raises(TypeError, match='numpy.ndarray'):
        kernels.mix_sums(case.x.tolist(), case.w, case.shift)
    with pytest.raises(ValueError, match=r'x must have shape \(N, C, P\)'):
        kernels.mix_sums(case.x[0], case.w, case.shift)
    with pytest.raises(TypeError, match='float32 or float64'):
        kernels.mix_sums(case.x.astype(numpy.float16), case.w, case.shift)
    with pytest.raises(ValueError, match=r'coefficients must have shape'):
        kernels.mix_forward(case.x, case.w[0], case.shift, case.scale,
                            case.offset, True)
    with pytest.raises(ValueError, match=r'a must have shape \(3, 2, 5\)'):
        kernels.mix_forward(case.x, case.w[:2], case.shift, case.scale,
                            case.offset, True)
    with pytest.raises(ValueError, match=r'shift must have shape \(4,\)'):
        kernels.mix_sums(case.x, case.w, case.shift[:3])
    with pytest.raises(ValueError, match='values must have shape'):
        kernels.mix_sums(case.x, case.w, case.shift, case.values[:, :2])
    with pytest.raises(ValueError, match=r'thresholds must have shape'):
        kernels.mix_grad_x(case.x, case.w, case.values, case.shift, case.u,
                           case.w1, case.w2, (case.sign, case.thresholds.T))
    with pytest.raises(ValueError, match=r'w2 must have shape \(2, 4\)'):
        kernels.mix_grad_x(case.x, case.w, case.values, case.shift, case.u,
                           case.w1, case.w2[:1])


def test_passes_chosen_by_backend_and_switches(monkeypatch):
    transform_cases.require_c_kernels(monkeypatch)
    assert transform_passes.select_passes(numpy) is (
        transform_passes.CKernelPasses)
    monkeypatch.setenv('MN_CHAINER_CPU_KERNELS', '0')
    assert transform_passes.select_passes(numpy) is (
        transform_passes.ArrayPasses)
    monkeypatch.delenv('MN_CHAINER_CPU_KERNELS')
    monkeypatch.setattr(transform_passes, 'USE_KERNELS', False)
    assert transform_passes.select_passes(numpy) is (
        transform_passes.ArrayPasses)


def test_using_kernels_restores_the_switch(monkeypatch):
    transform_cases.require_c_kernels(monkeypatch)
    with transform_passes.using_kernels(False):
        assert transform_passes.select_passes(numpy) is (
            transform_passes.ArrayPasses)
        with pytest.raises(RuntimeError, match='inside'):
            with transform_passes.using_kernels(True):
                assert transform_passes.select_passes(numpy) is (
                    transform_passes.CKernelPasses)
                raise RuntimeError('inside')
        assert not transform_passes.USE_KERNELS
    assert transform_passes.USE_KERNELS


def test_benchmarks_run_either_transform(monkeypatch, tmp_path, capsys):
    """``bench_layer.py`` and ``bench_epoch.py`` with ``--transform array``
    time the array passes, with ``fused`` the kernels, and leave the switch
    as they found it."""
    transform_cases.require_c_kernels(monkeypatch)
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
    import bench_epoch
    import bench_layer
    data = str(tmp_path / 'cifar.npz')
    cifar_files.write_tiny_cifar(data, n_train=12, n_test=4)
    try:
        for path, passes in (('array', 'ArrayPasses'),
                             ('fused', 'CKernelPasses')):
            bench_layer.main(['--batches', '8', '--channels', '8',
                              '--components', '2', '--sample-ratios', '1.0',
                              '--repeats', '1', '--no-memory', '--relu',
                              'on', '--transform', path])
            assert 'MN transform: {}'.format(passes) in capsys.readouterr(
            ).out
            out = str(tmp_path / 'epoch.json')
            bench_epoch.main(['--data', data, '--train-subset', '8', '-b',
                              '8', '--widths', '4,4,8,8', '--warmup', '0',
                              '--layer-reps', '1', '--out', out,
                              '--transform', path])
            with open(out) as f:
                assert json.load(f)['transform'] == passes
            assert transform_passes.USE_KERNELS
    finally:
        for name in ('bench_epoch', 'bench_layer', 'interleave'):
            sys.modules.pop(name, None)
