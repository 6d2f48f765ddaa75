"""Independent float64 NumPy references written from the paper's equations.

Loops over components and points are spelled out on purpose: these are the
references the project's vectorised code is compared with, so they share
none of its code.  The gradients are Chainer's automatic differentiation of
the same equations in float64 (:func:`transform_gradients`), so the
project's hand-written backward is checked against a derivation of its own.
"""
import numpy
from scipy import special

import chainer
import chainer.functions as F


def points_of(x):
    """``(N, C, *S)`` -> ``(N*prod(S), C)`` in (n, spatial) order."""
    x = numpy.asarray(x, dtype=numpy.float64)
    return numpy.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def unpoints(p, shape):
    n, spatial = shape[0], tuple(shape[2:])
    return numpy.moveaxis(p.reshape((n,) + spatial + (p.shape[1],)), -1, 1)


def component_stats(x, tau):
    """(pi, mean, var) of Eqs. 34-36 from responsibilities (float64)."""
    px, pt = points_of(x), points_of(tau)
    m, k = pt.shape
    pi = numpy.empty(k)
    mean = numpy.empty((k, px.shape[1]))
    var = numpy.empty((k, px.shape[1]))
    for j in range(k):
        s = pt[:, j].sum()
        pi[j] = s / m
        v = pt[:, j] / s
        mean[j] = (v[:, None] * px).sum(axis=0)
        var[j] = (v[:, None] * (px - mean[j]) ** 2).sum(axis=0)
    return pi, mean, var


def mixture_normalization(x, tau, gamma, beta, eps=2e-5, relu=False):
    """Eqs. 34-37 (and Eq. 40 with ``relu``) in float64."""
    pi, mean, var = component_stats(x, tau)
    px, pt = points_of(x), points_of(tau)
    gamma = numpy.asarray(gamma, numpy.float64)
    beta = numpy.asarray(beta, numpy.float64)
    y = numpy.zeros_like(px)
    for j in range(pt.shape[1]):
        x_hat = (px - mean[j]) / numpy.sqrt(var[j] + eps)
        z = gamma * x_hat + beta
        if relu:
            z = numpy.maximum(z, 0)
        y += pt[:, j:j + 1] / numpy.sqrt(pi[j]) * z
    return unpoints(y, numpy.shape(x))


def mixture_normalization_variable(x, tau, gamma, beta, eps=2e-5,
                                   relu=False):
    """Eqs. 34-37 (and 40) in float64 with :mod:`chainer.functions`.

    ``x``, ``gamma``, ``beta`` are float64 Variables (differentiable),
    ``tau`` a constant array.  Two passes per component: the mean, then
    the squared deviations from it.
    """
    shape = x.shape
    n_channels = shape[1]
    px = F.reshape(F.moveaxis(F.reshape(x, (shape[0], n_channels, -1)), 1, 2),
                   (-1, n_channels))
    pt = points_of(tau)
    m = pt.shape[0]
    y = None
    for j in range(pt.shape[1]):
        s = pt[:, j].sum()
        v = numpy.broadcast_to((pt[:, j] / s)[:, None], (m, n_channels))
        mean = F.sum(px * v, axis=0)
        diff = px - F.broadcast_to(mean, (m, n_channels))
        var = F.sum(diff * diff * v, axis=0)
        x_hat = diff / F.broadcast_to(F.sqrt(var + eps), (m, n_channels))
        z = (F.broadcast_to(gamma, (m, n_channels)) * x_hat
             + F.broadcast_to(beta, (m, n_channels)))
        if relu:
            z = F.relu(z)
        a = numpy.broadcast_to((pt[:, j] / numpy.sqrt(s / m))[:, None],
                               (m, n_channels))
        y = z * a if y is None else y + z * a
    y = F.reshape(y, (shape[0], -1, n_channels))
    return F.reshape(F.moveaxis(y, 2, 1), shape)


def transform_gradients(x, tau, gamma, beta, gy, eps=2e-5, relu=False,
                        ggrads=None):
    """Gradients of Eqs. 34-37 (40) in float64 by automatic differentiation.

    Returns ``(gx, ggamma, gbeta)`` for the output gradient ``gy``; with
    ``ggrads = (ggx, gggamma, ggbeta)`` also the second-order gradients
    ``(gx2, ggamma2, ggy2)`` of ``<gx, ggx> + <ggamma, gggamma> + <gbeta,
    ggbeta>`` with respect to ``x``, ``gamma`` and ``gy``.
    """
    def as64(a):
        return chainer.Variable(numpy.asarray(a, dtype=numpy.float64))

    xv, gv, bv, gyv = (as64(a) for a in (x, gamma, beta, gy))
    tau = numpy.asarray(tau, dtype=numpy.float64)
    with chainer.using_config('enable_backprop', True):
        y = mixture_normalization_variable(xv, tau, gv, bv, eps, relu)
        grads = chainer.grad([y], [xv, gv, bv], grad_outputs=[gyv],
                             enable_double_backprop=ggrads is not None)
        first = tuple(g.array for g in grads)
        if ggrads is None:
            return first
        second = chainer.grad(list(grads), [xv, gv, gyv],
                              grad_outputs=[as64(g) for g in ggrads])
    return first + tuple(g.array for g in second)


def diag_gaussian_posterior(px, weights, means, variances):
    """Posterior of every point under a diagonal mixture (float64)."""
    log_p = numpy.empty((px.shape[0], len(weights)))
    for j in range(len(weights)):
        with numpy.errstate(divide='ignore'):
            log_w = numpy.log(weights[j])
        log_p[:, j] = log_w - 0.5 * (
            numpy.log(2 * numpy.pi * variances[j]).sum()
            + ((px - means[j]) ** 2 / variances[j]).sum(axis=1))
    return numpy.exp(log_p - special.logsumexp(log_p, axis=1,
                                               keepdims=True))


def inference(x, queue, gamma, beta, decay, eps=2e-5, relu=False):
    """Eqs. 38-39: average of MN under every queued mixture.

    Args:
        queue: list of ``(weights, means, variances)``, oldest first; a
            component with weight 0 is absent.
    """
    px = points_of(x)
    big_l = len(queue)
    w = numpy.array([decay ** (big_l - i) * (1 - decay) / (1 - decay ** big_l)
                     for i in range(1, big_l + 1)])  # i = l of Eq. 39
    y = numpy.zeros_like(px)
    for entry, (pi, mean, var) in enumerate(queue):
        present = numpy.asarray(pi) > 0
        tau = diag_gaussian_posterior(px, pi[present], mean[present],
                                      var[present] + eps)
        for j, (p, mu, v) in enumerate(zip(pi[present], mean[present],
                                           var[present])):
            z = gamma * (px - mu) / numpy.sqrt(v + eps) + beta
            if relu:
                z = numpy.maximum(z, 0)
            y += w[entry] * tau[:, j:j + 1] / numpy.sqrt(p) * z
    return unpoints(y, numpy.shape(x))
