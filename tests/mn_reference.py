"""Independent float64 NumPy references written from the paper's equations.

Loops over components and points are spelled out on purpose: these are the
references the project's vectorised code is compared with, so they share
none of its code.
"""
import numpy
from scipy import special


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
