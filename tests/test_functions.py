"""mixture_normalization (FunctionNode) against float64 references."""
import numpy
import pytest

import chainer
from chainer import gradient_check
import chainer.functions as F
from chainer.utils import type_check

import mn_chainer.functions as MF
import mn_reference


def _inputs(shape, k, seed=0, dtype=numpy.float64):
    rs = numpy.random.RandomState(seed)
    n, c = shape[:2]
    # Several modes so that the components differ.
    x = rs.randn(*shape) + 2 * rs.randint(0, 3, size=shape)
    tau = rs.rand(n, k, *shape[2:]) ** 3 + 1e-3
    tau /= tau.sum(axis=1, keepdims=True)
    gamma = rs.uniform(0.5, 1.5, c)
    beta = rs.uniform(-0.3, 0.3, c)
    return (x.astype(dtype), tau.astype(dtype), gamma.astype(dtype),
            beta.astype(dtype))


SHAPES = [(7, 3), (4, 3, 2, 3), (2, 5, 3), (3, 2, 2, 2, 2)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('k', [1, 2, 3, 4, 5])
@pytest.mark.parametrize('relu', [False, True])
def test_forward_matches_equations(shape, k, relu):
    x, tau, gamma, beta = _inputs(shape, k)
    y = MF.mixture_normalization(x, tau, gamma, beta, eps=1e-3, relu=relu)
    expected = mn_reference.mixture_normalization(x, tau, gamma, beta, 1e-3,
                                                  relu)
    assert y.shape == x.shape and y.dtype == x.dtype
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('relu', [False, True])
def test_forward_float32(relu):
    x, tau, gamma, beta = _inputs((8, 4, 3, 3), 3, dtype=numpy.float32)
    y = MF.mixture_normalization(x, tau, gamma, beta, relu=relu)
    expected = mn_reference.mixture_normalization(x, tau, gamma, beta, 2e-5,
                                                  relu)
    assert y.dtype == numpy.float32
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('relu', [False, True])
def test_float16_close_to_float32(relu):
    x, tau, gamma, beta = _inputs((8, 4, 3, 3), 3, dtype=numpy.float32)
    y32 = MF.mixture_normalization(x, tau, gamma, beta, relu=relu).array
    y16 = MF.mixture_normalization(x.astype(numpy.float16),
                                   tau.astype(numpy.float16), gamma, beta,
                                   relu=relu)
    assert y16.dtype == numpy.float16
    numpy.testing.assert_allclose(y16.array.astype(numpy.float32), y32,
                                  rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('shape', [(6, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_k1_is_batch_normalization(shape, dtype):
    x, _, gamma, beta = _inputs(shape, 1, dtype=dtype)
    tau = numpy.ones((shape[0], 1) + shape[2:], dtype=dtype)
    gy = numpy.random.RandomState(1).randn(*shape).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == numpy.float32 else dict(
        rtol=1e-10, atol=1e-10)

    def run(fn):
        xv, gv, bv = (chainer.Variable(a.copy()) for a in (x, gamma, beta))
        y = fn(xv, gv, bv)
        y.grad = gy
        y.backward()
        return y.array, xv.grad, gv.grad, bv.grad

    ours = run(lambda a, g, b: MF.mixture_normalization(a, tau, g, b))
    theirs = run(lambda a, g, b: F.batch_normalization(a, g, b, eps=2e-5))
    for o, t in zip(ours, theirs):
        numpy.testing.assert_allclose(o, t, **tol)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('relu', [False, True])
def test_backward(shape, k, relu):
    x, tau, gamma, beta = _inputs(shape, k, seed=3)
    gy = numpy.random.RandomState(4).randn(*shape)

    def f(x, gamma, beta):
        return MF.mixture_normalization(x, tau, gamma, beta, relu=relu)

    gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6,
                                  atol=1e-6, rtol=1e-5, dtype=numpy.float64)


@pytest.mark.parametrize('shape', [(7, 3), (4, 3, 2, 3)])
@pytest.mark.parametrize('relu', [False, True])
def test_double_backward(shape, relu):
    x, tau, gamma, beta = _inputs(shape, 3, seed=5)
    rs = numpy.random.RandomState(6)
    gy = rs.randn(*shape)
    ggx, gggamma, ggbeta = rs.randn(*shape), rs.randn(shape[1]), rs.randn(
        shape[1])

    def f(x, gamma, beta):
        return MF.mixture_normalization(x, tau, gamma, beta, relu=relu)

    gradient_check.check_double_backward(
        f, (x, gamma, beta), gy, (ggx, gggamma, ggbeta), eps=1e-6,
        atol=1e-5, rtol=1e-4, dtype=numpy.float64)


def test_no_gradient_into_tau():
    x, tau, gamma, beta = _inputs((5, 3, 2, 2), 2)
    tv = chainer.Variable(tau)
    y = MF.mixture_normalization(x, tv, gamma, beta)
    F.sum(y * y).backward()
    assert tv.grad is None


def test_statistics_kept_on_node():
    x, tau, gamma, beta = _inputs((5, 3, 2, 2), 3)
    node = MF.MixtureNormalization(eps=2e-5)
    node.apply((x, tau, gamma, beta))
    pi, mean, var = mn_reference.component_stats(x, tau)
    numpy.testing.assert_allclose(node.pi, pi, rtol=1e-12)
    numpy.testing.assert_allclose(node.mean, mean, rtol=1e-10, atol=1e-12)
    numpy.testing.assert_allclose(node.var, var, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize('bad', ['tau_batch', 'tau_spatial', 'tau_ndim',
                                 'gamma_size', 'int_x'])
def test_bad_shapes_are_type_errors(bad):
    x, tau, gamma, beta = _inputs((4, 3, 2, 2), 2)
    if bad == 'tau_batch':
        tau = tau[:3]
    elif bad == 'tau_spatial':
        tau = tau[:, :, :1]
    elif bad == 'tau_ndim':
        tau = tau[:, :, 0]
    elif bad == 'gamma_size':
        gamma = gamma[:2]
    else:
        x = x.astype(numpy.int32)
    with pytest.raises(type_check.InvalidType):
        MF.mixture_normalization(x, tau, gamma, beta)


def test_fixed_mixture_normalization_matches_definition():
    rs = numpy.random.RandomState(0)
    x = rs.randn(3, 4, 2, 2)
    coef = rs.rand(3, 5, 2, 2)
    mean, var = rs.randn(5, 4), rs.rand(5, 4) + 0.1
    gamma, beta = rs.rand(4) + 0.5, rs.randn(4)
    for relu in (False, True):
        y = MF.fixed_mixture_normalization(x, coef, gamma, beta, mean, var,
                                           1e-3, relu).array
        px, pc = mn_reference.points_of(x), mn_reference.points_of(coef)
        expected = numpy.zeros_like(px)
        for j in range(5):
            z = gamma * (px - mean[j]) / numpy.sqrt(var[j] + 1e-3) + beta
            expected += pc[:, j:j + 1] * (numpy.maximum(z, 0) if relu else z)
        numpy.testing.assert_allclose(
            y, mn_reference.unpoints(expected, x.shape), rtol=1e-10)
