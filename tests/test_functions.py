"""mixture_normalization (FunctionNode) against float64 references.

Every test runs on every backend of :data:`backends.BACKENDS` (CuPy where a
GPU exists): inputs are sent to the device, results compared on the host
with :mod:`mn_reference` (float64 NumPy written from the equations), with
Chainer's own batch normalization at K = 1, and with
:mod:`chainer.gradient_check`.
"""
import unittest

import numpy
import pytest

import chainer
from chainer import gradient_check
import chainer.functions as F
from chainer import testing
from chainer.utils import type_check

import backends
from backends import skip_gpu_tests_without_gpu  # NOQA: F401 (fixture)
import mn_chainer.functions as MF
import mn_reference


to_cpu = backends.to_cpu


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


@testing.parameterize(*testing.product({
    'shape': SHAPES, 'k': [1, 2, 3, 4, 5], 'relu': [False, True]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestForward(unittest.TestCase):

    def test_matches_equations(self, backend_config):
        x, tau, gamma, beta = _inputs(self.shape, self.k)
        y = MF.mixture_normalization(
            *(backend_config.get_array(a) for a in (x, tau, gamma, beta)),
            eps=1e-3, relu=self.relu)
        expected = mn_reference.mixture_normalization(x, tau, gamma, beta,
                                                      1e-3, self.relu)
        assert y.shape == x.shape and y.dtype == x.dtype
        numpy.testing.assert_allclose(to_cpu(y), expected, rtol=1e-10,
                                      atol=1e-10)


@testing.parameterize(*testing.product({'relu': [False, True]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestLowPrecision(unittest.TestCase):

    def test_float32(self, backend_config):
        x, tau, gamma, beta = _inputs((8, 4, 3, 3), 3, dtype=numpy.float32)
        y = MF.mixture_normalization(
            *(backend_config.get_array(a) for a in (x, tau, gamma, beta)),
            relu=self.relu)
        expected = mn_reference.mixture_normalization(x, tau, gamma, beta,
                                                      2e-5, self.relu)
        assert y.dtype == numpy.float32
        numpy.testing.assert_allclose(to_cpu(y), expected, rtol=1e-4,
                                      atol=1e-4)

    def test_float16_close_to_float32(self, backend_config):
        x, tau, gamma, beta = (backend_config.get_array(a) for a in _inputs(
            (8, 4, 3, 3), 3, dtype=numpy.float32))
        y32 = MF.mixture_normalization(x, tau, gamma, beta, relu=self.relu)
        y16 = MF.mixture_normalization(x.astype(numpy.float16),
                                       tau.astype(numpy.float16), gamma,
                                       beta, relu=self.relu)
        assert y16.dtype == numpy.float16
        numpy.testing.assert_allclose(to_cpu(y16).astype(numpy.float32),
                                      to_cpu(y32), rtol=2e-2, atol=2e-2)


@testing.parameterize(*testing.product({
    'shape': [(6, 3), (4, 3, 2, 2)], 'dtype': [numpy.float32,
                                               numpy.float64]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestK1IsBatchNormalization(unittest.TestCase):

    def test_forward_and_backward(self, backend_config):
        x, _, gamma, beta = _inputs(self.shape, 1, dtype=self.dtype)
        tau = numpy.ones((self.shape[0], 1) + self.shape[2:],
                         dtype=self.dtype)
        gy = numpy.random.RandomState(1).randn(*self.shape).astype(
            self.dtype)
        tol = dict(rtol=1e-4, atol=1e-4) if self.dtype == numpy.float32 \
            else dict(rtol=1e-10, atol=1e-10)

        def run(fn):
            xv, gv, bv = (chainer.Variable(backend_config.get_array(a))
                          for a in (x, gamma, beta))
            y = fn(xv, gv, bv)
            y.grad = backend_config.get_array(gy)
            y.backward()
            return [to_cpu(a) for a in (y, xv.grad, gv.grad, bv.grad)]

        tau_device = backend_config.get_array(tau)
        ours = run(lambda a, g, b: MF.mixture_normalization(
            a, tau_device, g, b))
        theirs = run(lambda a, g, b: F.batch_normalization(a, g, b,
                                                           eps=2e-5))
        for o, t in zip(ours, theirs):
            numpy.testing.assert_allclose(o, t, **tol)


@testing.parameterize(*testing.product({
    'shape': SHAPES, 'k': [1, 3], 'relu': [False, True]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestBackward(unittest.TestCase):

    def test_backward(self, backend_config):
        x, tau, gamma, beta = (backend_config.get_array(a) for a in _inputs(
            self.shape, self.k, seed=3))
        gy = backend_config.get_array(
            numpy.random.RandomState(4).randn(*self.shape))

        def f(x, gamma, beta):
            return MF.mixture_normalization(x, tau, gamma, beta,
                                            relu=self.relu)

        gradient_check.check_backward(f, (x, gamma, beta), gy, eps=1e-6,
                                      atol=1e-6, rtol=1e-5,
                                      dtype=numpy.float64)


@testing.parameterize(*testing.product({
    'shape': [(7, 3), (4, 3, 2, 3)], 'relu': [False, True]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestDoubleBackward(unittest.TestCase):

    def test_double_backward(self, backend_config):
        x, tau, gamma, beta = (backend_config.get_array(a) for a in _inputs(
            self.shape, 3, seed=5))
        rs = numpy.random.RandomState(6)
        gy, ggx, gggamma, ggbeta = (backend_config.get_array(a) for a in (
            rs.randn(*self.shape), rs.randn(*self.shape),
            rs.randn(self.shape[1]), rs.randn(self.shape[1])))

        def f(x, gamma, beta):
            return MF.mixture_normalization(x, tau, gamma, beta,
                                            relu=self.relu)

        gradient_check.check_double_backward(
            f, (x, gamma, beta), gy, (ggx, gggamma, ggbeta), eps=1e-6,
            atol=1e-5, rtol=1e-4, dtype=numpy.float64)


@testing.inject_backend_tests(None, backends.BACKENDS)
class TestNode(unittest.TestCase):

    def test_no_gradient_into_tau(self, backend_config):
        x, tau, gamma, beta = (backend_config.get_array(a) for a in _inputs(
            (5, 3, 2, 2), 2))
        tv = chainer.Variable(tau)
        y = MF.mixture_normalization(x, tv, gamma, beta)
        F.sum(y * y).backward()
        assert tv.grad is None

    def test_statistics_kept_on_node(self, backend_config):
        x, tau, gamma, beta = _inputs((5, 3, 2, 2), 3)
        node = MF.MixtureNormalization(eps=2e-5)
        node.apply(tuple(backend_config.get_array(a)
                         for a in (x, tau, gamma, beta)))
        pi, mean, var = mn_reference.component_stats(x, tau)
        numpy.testing.assert_allclose(to_cpu(node.pi), pi, rtol=1e-12)
        numpy.testing.assert_allclose(to_cpu(node.mean), mean, rtol=1e-10,
                                      atol=1e-12)
        numpy.testing.assert_allclose(to_cpu(node.var), var, rtol=1e-8,
                                      atol=1e-10)

    def test_fixed_mixture_normalization_matches_definition(
            self, backend_config):
        rs = numpy.random.RandomState(0)
        x = rs.randn(3, 4, 2, 2)
        coef = rs.rand(3, 5, 2, 2)
        mean, var = rs.randn(5, 4), rs.rand(5, 4) + 0.1
        gamma, beta = rs.rand(4) + 0.5, rs.randn(4)
        px, pc = mn_reference.points_of(x), mn_reference.points_of(coef)
        for relu in (False, True):
            y = MF.fixed_mixture_normalization(
                *(backend_config.get_array(a)
                  for a in (x, coef, gamma, beta, mean, var)),
                eps=1e-3, relu=relu)
            expected = numpy.zeros_like(px)
            for j in range(5):
                z = gamma * (px - mean[j]) / numpy.sqrt(var[j] + 1e-3) + beta
                expected += pc[:, j:j + 1] * (numpy.maximum(z, 0) if relu
                                              else z)
            numpy.testing.assert_allclose(
                to_cpu(y), mn_reference.unpoints(expected, x.shape),
                rtol=1e-10)


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
