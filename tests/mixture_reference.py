"""Float64 references of the mixture fit's steps and the data they are
checked on.

Written from the definitions (DESIGN §1.1), with direct differences
``(x - mu)^2 / var`` and two-pass variances, and nothing of
:mod:`mn_chainer`: the tests of :mod:`mn_chainer.gmm`,
:mod:`mn_chainer.cpu_kernels` and the fit's numerics compare against these.
The data generators give what a normalized layer sees: rectified sparse
activations (exact zeros, channels that are zero in a whole mode), large
offsets, and plain Gaussian blobs.
"""
import numpy


def _float64(mixture):
    return [numpy.asarray(a, numpy.float64) for a in mixture]


def log_prob(points, mixture):
    """``log pi_k N(x_i | mu_k, var_k)``, shape ``(m, K)``."""
    x = numpy.asarray(points, numpy.float64)
    weights, means, variances = _float64(mixture)
    with numpy.errstate(divide='ignore'):
        log_weights = numpy.log(weights)
    return log_weights - 0.5 * (
        numpy.log(2 * numpy.pi * variances).sum(axis=1)
        + ((x[:, None, :] - means[None]) ** 2 / variances[None]).sum(axis=2))


def log_resp(points, mixture):
    """Log posterior ``(m, K)`` and log normalizer ``(m,)``."""
    lp = log_prob(points, mixture)
    top = lp.max(axis=1, keepdims=True)
    log_norm = top + numpy.log(numpy.exp(lp - top).sum(axis=1,
                                                       keepdims=True))
    return lp - log_norm, log_norm[:, 0]


def posterior(points, mixture):
    """Responsibilities ``(m, K)``."""
    return numpy.exp(log_resp(points, mixture)[0])


def log_likelihood(points, mixture):
    """Mean log-likelihood per point."""
    return float(log_resp(points, mixture)[1].mean())


def gaussian_parameters(points, resp, reg_covar):
    """M-step: ``(nk, means, variances)``, the responsibility-weighted
    means and (two-pass) variances plus ``reg_covar``."""
    x = numpy.asarray(points, numpy.float64)
    resp = numpy.asarray(resp, numpy.float64)
    nk = resp.sum(axis=0)
    means = resp.T @ x / nk[:, None]
    variances = numpy.stack([
        resp[:, k] @ (x - means[k]) ** 2 / nk[k] for k in range(len(nk))])
    return nk, means, variances + reg_covar


def em_step(points, mixture, reg_covar):
    """One EM iteration: the mixture of the M-step after the E-step."""
    nk, means, variances = gaussian_parameters(
        points, posterior(points, mixture), reg_covar)
    return nk / nk.sum(), means, variances


# ---------------------------------------------------------------------------
# Data


def rectified_modes(m=4096, d=64, scale=10.0, n_modes=2, quantile=0.7,
                    seed=0):
    """Rectified activations of issue 14: ``n_modes`` Gaussian modes (unit
    spread, unit-variance noise) in units of ``scale``, every channel
    rectified at its ``quantile`` (70% exact zeros per channel; in some
    channels a mode has zeros only, and a fitted component the variance
    ``reg_covar``).

    Returns:
        numpy.ndarray: float64 ``(m, d)``.
    """
    rs = numpy.random.RandomState(seed)
    labels = rs.randint(0, n_modes, m)
    pre = scale * (rs.randn(n_modes, d)[labels] + rs.randn(m, d))
    threshold = numpy.quantile(pre, quantile, axis=0)
    return numpy.where(pre > threshold, pre, 0)


def offset_modes(m, d=8, offset=1e5, separation=6.0, seed=0):
    """Two unit-variance modes ``separation`` sd apart, ``offset`` from
    zero; returns float64 points and the mode of each."""
    rs = numpy.random.RandomState(seed)
    labels = rs.randint(0, 2, m)
    return offset + separation * labels[:, None] + rs.randn(m, d), labels
