"""Mixture Normalizing Transform (paper Eqs. 34-37 and 40) as FunctionNodes.

The responsibilities ``tau`` of every point are an *input* of the function
and a constant of its gradient: the mixture is fitted on raw arrays
(:mod:`mn_chainer.gmm`) before the function is called, so the fit is outside
the graph by construction and the transform can be tested on its own.

Notation (DESIGN §1.2-1.3), for points ``i`` (the channel vectors
``x[n, :, h, w]``, ``m`` of them) and components ``k``::

    s_k = sum_i tau_ik      v_ik = tau_ik / s_k      pi_k = s_k / m
    mean_k = sum_i v_ik x_i     var_k = sum_i v_ik (x_i - mean_k)^2
    x_hat_ik = (x_i - mean_k) / sqrt(var_k + eps)                 (Eq. 35)
    y_i = sum_k a_ik f(gamma x_hat_ik + beta),  a_ik = tau_ik / sqrt(pi_k)
                                                            (Eqs. 34 + 37)

with ``f`` the identity, or ``relu`` for the per-component rectification of
Eq. 40.  With ``K = 1`` (``tau = 1``) this is batch normalization.

Float32 accuracy: the statistics come from sums over the
points, ``sum_i tau_ik (x_i - c)`` and ``sum_i tau_ik (x_i - c)^2``, taken
about a per-channel origin ``c`` (the *shift*), so that ``E_v[x^2] -
mean^2`` does not cancel when the activations lie far from zero; the
transform and its gradients are then evaluated on ``x - c`` with the means
relative to ``c`` (a common translation changes neither).  The shift is
the mixture's mean in channels where some component lies more than
``sqrt(SHIFT_RATIO)`` standard deviations from zero, and zero elsewhere
(:func:`statistics_shift`), so that exact zeros of rectified activations
stay exact.
"""
import collections
import numbers

import numpy

import chainer
from chainer import backend
from chainer import function_node
import chainer.functions
from chainer.utils import argument
from chainer.utils import type_check

from mn_chainer import data_parallel


def _compute_dtype(dtype):
    # float16 is computed in float32, like Chainer's batch normalization.
    return numpy.dtype(numpy.float32) if dtype == numpy.float16 else dtype


def _as3d(a):
    """View ``(N, C, *spatial)`` as ``(N, C, P)``."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _bmm(xp, w, b):
    """``out[n] = w @ b[n]`` for ``w (R, K)`` and ``b (N, K, P)``."""
    return xp.matmul(w[None], b)


def _component_sums(xp, x3, t3):
    """``sum_i t_ik x_ic`` as ``(K, C)``.

    For ``x3`` of shape ``(N, C, P)`` and ``t3`` of shape ``(N, K, P)``.
    """
    return xp.matmul(x3, t3.transpose(0, 2, 1)).sum(axis=0).T


#: Squared distance from the origin, in standard deviations, beyond which
#: a component's sums are taken about a shift: the relative error of
#: ``E_v[x^2] - mean^2`` in float32 is a few float32 epsilons (6e-8) times
#: ``mean^2 / (var + eps)``, about 1e-5 at this ratio.
SHIFT_RATIO = 64.0


def statistics_shift(weights, means, variances, eps=2e-5):
    """Per-channel origin of the component sums of a mixture's statistics.

    A component ``k`` whose mean lies far from zero in units of its
    standard deviation, ``mean_k^2 / (var_k + eps) > SHIFT_RATIO``, loses
    precision in ``E_v[x^2] - mean^2``; taken about a shift ``c``, the
    loss scales with ``(mean_k - c)^2 / (var_k + eps)`` instead.  In such
    channels the shift is the mixture's mean ``sum_k w_k mean_k /
    sum_k w_k`` (for the link's fitted mixture: about the global mean of
    the points, and identical on every worker of a data-parallel job),
    where that lowers the worst ratio over the components; elsewhere it is
    zero, which keeps exact zeros exact (a component of rectified
    activations whose points are all zero in a channel keeps variance 0
    there, where a shift would make it about ``6e-8 shift^2``).

    Args:
        weights: Component weights ``(K,)`` (any positive scale; components
            of weight 0 are ignored).
        means: Component means ``(K, C)``.
        variances: Component variances ``(K, C)``.
        eps (float): The transform's ``eps``, added to the variances.

    Returns:
        ``0.0`` where no channel needs a shift, else an array ``(C,)``
        (zero in the channels that need none).
    """
    xp = backend.get_array_module(means)
    present = (weights > 0)[:, None]
    total = xp.maximum(weights.sum(), numpy.finfo(weights.dtype).tiny)
    centre = (weights @ means) / total
    scale = variances + eps

    def worst_ratio(origin):
        d = means - origin
        return xp.where(present, d * d / scale, 0).max(axis=0)

    ratio = worst_ratio(0)
    shifted = (ratio > SHIFT_RATIO) & (worst_ratio(centre) < ratio)
    if not bool(shifted.any()):
        return 0.0
    return xp.where(shifted, centre, 0)


def _shift_array(xp, shift, channels, dtype, where):
    """``shift`` as a ``(C,)`` array of ``dtype``, or None for zero."""
    if isinstance(shift, numbers.Real) and shift == 0:
        return None
    shift = xp.asarray(shift)
    if shift.ndim > 1 or shift.size not in (1, channels):
        raise ValueError(
            '{}: shift must be a scalar or have shape ({},) (one per '
            'channel), got shape {}'.format(where, channels, shift.shape))
    if shift.dtype.kind not in 'biuf' or not bool(
            xp.isfinite(shift).all()):
        raise ValueError('{}: shift must be finite real numbers'.format(
            where))
    return xp.broadcast_to(shift.astype(dtype, copy=False),
                           (channels,)).copy()


def _shifted(x3, shift):
    """``x3 - shift`` over the channel axis (``x3`` itself for None)."""
    return x3 if shift is None else x3 - shift[None, :, None]


class ComponentStatistics(collections.namedtuple(
        'ComponentStatistics',
        ('s', 'mean', 'var', 'inv_std', 'm', 'shift', 'shifted_mean'))):

    """Responsibility-weighted statistics of the components of a batch.

    Attributes:
        s: Sums of the responsibilities ``(K,)`` (totals over the workers).
        mean: Component means ``(K, C)``.
        var: Component variances ``(K, C)``.
        inv_std: ``1 / sqrt(var + eps)``, ``(K, C)``.
        m: Number of points (over the workers), an array ``(1,)``.
        shift: The per-channel origin of the sums ``(C,)``, or None (the
            sums were taken about zero).
        shifted_mean: ``mean - shift``, computed about the shift (so
            accurate however large the shift); ``mean`` for None.
    """

    __slots__ = ()


def _sums_statistics(xp, xc, t3, eps, reducer, shift):
    """Statistics from the sums of ``xc = x - shift`` (one all-reduce)."""
    tiny = numpy.finfo(xc.dtype).tiny
    s, sum_x, sum_sq, m = data_parallel.allreduce_packed(
        xp, reducer, t3.sum(axis=(0, 2)), _component_sums(xp, xc, t3),
        _component_sums(xp, xc * xc, t3),
        xp.full(1, xc.shape[0] * xc.shape[2], xc.dtype))
    s_safe = xp.maximum(s, tiny)[:, None]
    shifted_mean = sum_x / s_safe
    var = xp.maximum(sum_sq / s_safe - shifted_mean * shifted_mean, 0)
    inv_std = 1 / xp.sqrt(var + eps)
    mean = shifted_mean if shift is None else shifted_mean + shift
    return ComponentStatistics(s, mean, var, inv_std, m, shift,
                               shifted_mean)


def _statistics_and_shifted(xp, x3, t3, eps, reducer, shift):
    """Component statistics and ``x3 - shift`` (see
    :func:`component_statistics`)."""
    stats = None
    if shift is None:
        # Sums about zero first; about the batch's mean only where they
        # cancel (a second all-reduce, then, with a reducer).
        stats = _sums_statistics(xp, x3, t3, eps, reducer, None)
        shift = statistics_shift(stats.s, stats.mean, stats.var, eps)
    shift = _shift_array(xp, shift, x3.shape[1], x3.dtype,
                         'mixture_normalization')
    if shift is None:
        if stats is None:
            stats = _sums_statistics(xp, x3, t3, eps, reducer, None)
        return stats, x3
    xc = _shifted(x3, shift)
    return _sums_statistics(xp, xc, t3, eps, reducer, shift), xc


def component_statistics(xp, x3, t3, eps, reducer=None, shift=None):
    """Responsibility-weighted statistics of every component.

    The sums ``sum_i t_ik``, ``sum_i t_ik (x_i - c)`` and
    ``sum_i t_ik (x_i - c)^2`` are taken about a per-channel shift ``c`` and
    summed over the workers with one all-reduce; the variance is
    ``E_v[(x - c)^2] - (mean - c)^2`` (clipped at zero), accurate in float32
    when ``c`` lies within a few standard deviations of the components
    (:func:`statistics_shift`).

    Args:
        xp: Array module.
        x3: Activations viewed as ``(N, C, P)`` (compute dtype).
        t3: Responsibilities viewed as ``(N, K, P)`` (compute dtype).
        eps (float): Added to the variances before the square root.
        reducer (~mn_chainer.gmm.Reducer): Sums the statistics over the
            workers of a data-parallel job (None: this batch alone).
        shift: The origin ``c``: a scalar or a ``(C,)`` array, the same on
            every worker (``0``: about zero).  None chooses it from the
            batch: the sums are taken about zero, and taken again about
            the batch's mean where :func:`statistics_shift` asks for it
            (with a reducer: a second all-reduce, only then; the choice
            depends on all-reduced sums alone, so every worker makes the
            same one).

    Returns:
        ComponentStatistics: ``s``, ``mean``, ``var``, ``inv_std``, ``m``,
        ``shift`` and ``shifted_mean``.
    """
    return _statistics_and_shifted(xp, x3, t3, eps, reducer, shift)[0]


def _coefficients(xp, t3, s, m):
    """``a = tau / sqrt(pi)`` (0 for empty components).

    ``pi = s / m``; ``s`` and ``m`` are totals (over all workers).  The
    weights ``v = tau / s`` are ``a / sqrt(m s)``.
    """
    tiny = numpy.finfo(t3.dtype).tiny
    s_safe = xp.maximum(s, tiny)
    return t3 * (xp.sqrt(m / s_safe) * (s > 0))[None, :, None]


def _apply_forward(xp, x3, a, gamma, beta, mean, inv_std, relu):
    """Eqs. 34 + 37 (``relu=False``) or Eq. 40 (``relu=True``).

    ``x3`` and ``mean`` may share any per-channel translation (the shifted
    activations and means).
    """
    if not relu:
        # Linear in x: y_i = x_i * sum_k a_ik gamma inv_std_k
        #                  - sum_k a_ik (gamma mean_k inv_std_k - beta),
        # both sums from one small batched product.
        c = x3.shape[1]
        w = xp.concatenate((gamma * inv_std,
                            gamma * mean * inv_std - beta), axis=1)
        scale_shift = _bmm(xp, w.T, a)
        y = scale_shift[:, :c]  # in place: one large array fewer
        y *= x3
        y -= scale_shift[:, c:]
        return y
    y = xp.zeros_like(x3)
    for k in range(a.shape[1]):
        scale = (gamma * inv_std[k])[:, None]
        shift = (beta - gamma * mean[k] * inv_std[k])[:, None]
        z = x3 * scale + shift
        xp.maximum(z, 0, out=z)
        z *= a[:, k:k + 1]
        y += z
    return y


class MixtureNormalization(function_node.FunctionNode):

    """Mixture Normalizing Transform with fixed responsibilities.

    Inputs are ``(x, tau, gamma, beta)``; gradients flow into ``x`` (through
    the component means and variances), ``gamma`` and ``beta``, never into
    ``tau``.  After :meth:`forward`, the component statistics actually used
    are available as ``s``, ``pi``, ``mean`` and ``var`` (raw arrays), and
    ``shift``, the per-channel origin they were summed about (None: zero;
    see :func:`component_statistics`).

    Args:
        eps (float): Added to the variances.
        relu (bool): Per-component ReLU (Eq. 40).
        reducer (~mn_chainer.gmm.Reducer): Sums the statistics over the
            workers of a data-parallel job (None: this batch alone).
        shift: Origin of the statistics' sums, a scalar or ``(C,)``, the
            same on every worker; None chooses it from the batch.
    """

    s = None
    mean = None
    var = None
    inv_std = None
    shift = None
    shifted_mean = None

    def __init__(self, eps=2e-5, relu=False, reducer=None, shift=None):
        if not eps > 0:
            raise ValueError('eps must be positive, got {!r}'.format(eps))
        self.eps = float(eps)
        self.relu = bool(relu)
        self.reducer = reducer
        self._requested_shift = shift

    @property
    def pi(self):
        """Component weights ``pi_k = s_k / m`` of the last forward."""
        return self.s / self.s.sum()

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ('x', 'tau', 'gamma', 'beta'))
        x_type, tau_type, gamma_type, beta_type = in_types
        type_check.expect(
            x_type.dtype.kind == 'f',
            x_type.ndim >= 2,
            tau_type.dtype.kind == 'f',
            tau_type.ndim == x_type.ndim,
            tau_type.shape[0] == x_type.shape[0],
            gamma_type.dtype.kind == 'f',
            gamma_type.ndim == 1,
            gamma_type.shape[0] == x_type.shape[1],
            beta_type.dtype == gamma_type.dtype,
            beta_type.shape == gamma_type.shape,
        )
        for i in range(2, type_check.eval(x_type.ndim)):
            type_check.expect(tau_type.shape[i] == x_type.shape[i])

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2, 3))
        x, tau, gamma, beta = inputs
        xp = backend.get_array_module(x)
        dtype = _compute_dtype(x.dtype)
        x3 = _as3d(x).astype(dtype, copy=False)
        t3 = _as3d(tau).astype(dtype, copy=False)
        stats, xc = _statistics_and_shifted(
            xp, x3, t3, self.eps, self.reducer, self._requested_shift)
        (self.s, self.mean, self.var, self.inv_std, self.m, self.shift,
         self.shifted_mean) = stats
        a = _coefficients(xp, t3, self.s, self.m)
        y = _apply_forward(xp, xc, a, gamma.astype(dtype, copy=False),
                           beta.astype(dtype, copy=False), self.shifted_mean,
                           self.inv_std, self.relu)
        return y.reshape(x.shape).astype(x.dtype, copy=False),

    def backward(self, indexes, grad_outputs):
        x, tau, gamma, beta = self.get_retained_inputs()
        gy, = grad_outputs
        gx, ggamma, gbeta = MixtureNormalizationGrad(
            self.eps, self.relu, self.s, self.m, self.shifted_mean,
            self.inv_std, self.reducer, self.shift).apply(
                (x, tau, gamma, beta, gy))
        return gx, None, ggamma, gbeta


class MixtureNormalizationGrad(function_node.FunctionNode):

    """Gradient of :class:`MixtureNormalization` (DESIGN §1.3).

    A responsibility-weighted batch-normalization backward per component;
    with ``h_ik = a_ik gamma g_i`` (times the ReLU mask of component ``k``
    for Eq. 40)::

        gbeta  = sum_i sum_k a_ik g_i            (masked)
        ggamma = sum_i sum_k a_ik g_i x_hat_ik   (masked)
        gx_i   = sum_k inv_std_k (h_ik - v_ik sum_j h_jk
                                  - v_ik x_hat_ik sum_j h_jk x_hat_jk)

    Its own backward (double backprop) differentiates the same transform
    written with :mod:`chainer.functions`.

    Args:
        eps (float): Added to the variances.
        relu (bool): Per-component ReLU (Eq. 40).
        s: Sums of the responsibilities ``(K,)`` (over all workers).
        m: Number of points (over all workers).
        mean: Component means ``(K, C)`` relative to ``shift``.
        inv_std: ``1 / sqrt(var + eps)``, ``(K, C)``.
        reducer (~mn_chainer.gmm.Reducer): As in the forward.
        shift: The per-channel origin ``(C,)`` of ``mean`` (None: zero);
            the gradient is evaluated on ``x - shift``.
    """

    def __init__(self, eps, relu, s, m, mean, inv_std, reducer=None,
                 shift=None):
        self.eps = eps
        self.relu = relu
        self.s = s
        self.m = m
        self.reducer = reducer
        self.mean = mean
        self.inv_std = inv_std
        self.shift = shift

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2, 3, 4))
        x, tau, gamma, beta, gy = inputs
        xp = backend.get_array_module(x)
        dtype = _compute_dtype(x.dtype)
        x3 = _shifted(_as3d(x).astype(dtype, copy=False), self.shift)
        t3 = _as3d(tau).astype(dtype, copy=False)
        g3 = _as3d(gy).astype(dtype, copy=False)
        gamma_c = gamma.astype(dtype, copy=False)
        beta_c = beta.astype(dtype, copy=False)
        a = _coefficients(xp, t3, self.s, self.m)
        if self.relu:
            gx, ggamma, gbeta = self._backward_relu(
                xp, x3, a, g3, gamma_c, beta_c)
        else:
            gx, ggamma, gbeta = self._backward_linear(xp, x3, a, g3, gamma_c)
        if self.reducer is not None and self.reducer.size > 1:
            # ggamma and gbeta are sums over all workers' points here; give
            # each worker the mean over the workers of their local
            # gradients, as ChainerMN's MultiNodeBatchNormalization does,
            # which the multi-node optimizer's averaging leaves unchanged.
            ggamma = ggamma / self.reducer.size
            gbeta = gbeta / self.reducer.size
        return (gx.reshape(x.shape).astype(x.dtype, copy=False),
                ggamma.astype(gamma.dtype, copy=False),
                gbeta.astype(gamma.dtype, copy=False))

    def _backward_linear(self, xp, x3, a, g3, gamma):
        mean, inv_std = self.mean, self.inv_std
        # Per component (K, C): G1_k = sum_i a_ik g_i and
        # Gx_k = sum_i a_ik g_i x_i, so that sum_i h_ik = gamma G1_k and
        # sum_i h_ik x_hat_ik = gamma inv_std_k (Gx_k - mean_k G1_k).
        g1, gxs = data_parallel.allreduce_packed(
            xp, self.reducer, _component_sums(xp, g3, a),
            _component_sums(xp, g3 * x3, a))
        gx_hat = inv_std * (gxs - mean * g1)
        # First term: g_i sum_k a_ik gamma inv_std_k.
        gx = _bmm(xp, (gamma * inv_std).T, a)
        gx *= g3
        self._subtract_mean_terms(xp, gx, x3, a, gamma * g1, gamma * gx_hat)
        return gx, gx_hat.sum(axis=0), g1.sum(axis=0)

    def _backward_relu(self, xp, x3, a, g3, gamma, beta):
        mean, inv_std = self.mean, self.inv_std
        n_components = a.shape[1]
        gx = xp.zeros_like(x3)
        sums = xp.empty((2, n_components, x3.shape[1]), dtype=x3.dtype)
        for k in range(n_components):
            scale = (gamma * inv_std[k])[:, None]
            # t_k = a_k g, masked where component k's ReLU is off.
            z = x3 * scale
            z += (beta - gamma * mean[k] * inv_std[k])[:, None]
            t = g3 * a[:, k:k + 1]
            t *= z > 0
            sums[0, k] = t.sum(axis=(0, 2))
            xp.multiply(t, x3, out=z)
            sums[1, k] = z.sum(axis=(0, 2))
            t *= scale  # first term: gamma inv_std_k t_k
            gx += t
        sums, = data_parallel.allreduce_packed(xp, self.reducer, sums)
        t_sum = sums[0]
        t_x_hat_sum = inv_std * (sums[1] - mean * t_sum)
        self._subtract_mean_terms(xp, gx, x3, a, gamma * t_sum,
                                  gamma * t_x_hat_sum)
        return gx, t_x_hat_sum.sum(axis=0), t_sum.sum(axis=0)

    def _subtract_mean_terms(self, xp, gx, x3, a, s1, s2):
        """``gx -= sum_k v_ik inv_std_k (S1_k + x_hat_ik S2_k)`` in place.

        ``S1_k = sum_j h_jk`` and ``S2_k = sum_j h_jk x_hat_jk`` (``(K, C)``;
        totals over all workers).  Expanded in ``x_i`` with
        ``v_ik = a_ik / sqrt(m s_k)``, this is one batched product.
        """
        mean, inv_std = self.mean, self.inv_std
        tiny = numpy.finfo(x3.dtype).tiny
        v_scale = (1 / xp.sqrt(self.m * xp.maximum(self.s, tiny)))[:, None]
        w = xp.concatenate((v_scale * inv_std * (s1 - inv_std * mean * s2),
                            v_scale * inv_std * inv_std * s2), axis=1)
        r = _bmm(xp, w.T, a)
        c = x3.shape[1]
        gx -= r[:, :c]
        r = r[:, c:]
        r *= x3
        gx -= r

    def backward(self, indexes, grad_outputs):
        if self.reducer is not None:
            raise NotImplementedError(
                'Double backward of mixture normalization over several '
                'workers is not implemented')
        x, tau, gamma, beta, gy = self.get_retained_inputs()
        with chainer.using_config('enable_backprop', True):
            y = _mixture_normalization_graph(
                x, tau.array, gamma, beta, self.eps, self.relu, self.shift)
            gx, ggamma, gbeta = chainer.grad(
                [y], [x, gamma, beta], grad_outputs=[gy],
                enable_double_backprop=True)
            outputs, grads = [], []
            for out, g in zip((gx, ggamma, gbeta), grad_outputs):
                if g is not None and out is not None:
                    outputs.append(out)
                    grads.append(g)
            inputs = [x, gamma, gy]
            if outputs:
                result = chainer.grad(outputs, inputs, grad_outputs=grads,
                                      enable_double_backprop=True)
            else:
                result = [None] * 3
        gx2, ggamma2, ggy2 = result
        return tuple(
            ret for i, ret in zip(range(5), (gx2, None, ggamma2, None, ggy2))
            if i in indexes)


def _mixture_normalization_graph(x, tau, gamma, beta, eps, relu,
                                 shift=None):
    """The transform written with :mod:`chainer.functions` (for double
    backprop); ``tau`` and ``shift`` (None or ``(C,)``) are raw arrays
    (constants), and the statistics are computed on ``x - shift``."""
    xp = backend.get_array_module(tau)
    dtype = _compute_dtype(x.dtype)
    F = chainer.functions
    shape = x.shape
    x3 = F.cast(F.reshape(x, (shape[0], shape[1], -1)), dtype)
    if shift is not None:
        x3 = x3 - xp.broadcast_to(shift[None, :, None], x3.shape)
    t3 = _as3d(tau).astype(dtype, copy=False)
    s = t3.sum(axis=(0, 2))
    m = t3.shape[0] * t3.shape[2]
    a = _coefficients(xp, t3, s, m)
    v = a / xp.sqrt(m * xp.maximum(s, numpy.finfo(t3.dtype).tiny))[
        None, :, None]
    gamma3 = F.broadcast_to(F.cast(gamma, dtype)[None, :, None], x3.shape)
    beta3 = F.broadcast_to(F.cast(beta, dtype)[None, :, None], x3.shape)
    y = None
    for k in range(t3.shape[1]):
        vk = xp.broadcast_to(v[:, k:k + 1], x3.shape)
        mean = F.sum(x3 * vk, axis=(0, 2))
        diff = x3 - F.broadcast_to(mean[None, :, None], x3.shape)
        var = F.sum(diff * diff * vk, axis=(0, 2))
        inv_std = F.broadcast_to(
            (F.rsqrt(var + eps))[None, :, None], x3.shape)
        z = gamma3 * (diff * inv_std) + beta3
        if relu:
            z = F.relu(z)
        z = z * xp.broadcast_to(a[:, k:k + 1], x3.shape)
        y = z if y is None else y + z
    return F.cast(F.reshape(y, shape), x.dtype)


def mixture_normalization(x, tau, gamma, beta, **kwargs):
    """mixture_normalization(x, tau, gamma, beta, eps=2e-5, relu=False, \
reducer=None, shift=None)

    Mixture Normalizing Transform with given responsibilities.

    Normalizes every point (channel vector) ``x_i`` by the statistics of
    the mixture components it belongs to, weighted by its responsibilities
    ``tau_ik`` (paper Eqs. 34-37)::

        y_i = sum_k tau_ik / sqrt(pi_k) * (gamma * x_hat_ik + beta)

    where the component weights ``pi_k``, means and variances are the
    ``tau``-weighted statistics of this batch (DESIGN §1.2).  With
    ``relu=True`` the rectification is applied per component before the
    aggregation (Eq. 40), which is how the paper uses MN in front of a ReLU.
    ``tau`` is a constant: no gradient flows into it; gradients flow into
    ``x`` through the component means and variances.  With ``K = 1`` this
    is :func:`chainer.functions.batch_normalization`.

    Args:
        x (:class:`~chainer.Variable` or :ref:`ndarray`): Input of shape
            ``(N, C)`` or ``(N, C, *spatial)``; float16 is computed in
            float32.
        tau (:class:`~chainer.Variable` or :ref:`ndarray`): Responsibilities
            of shape ``(N, K, *spatial)`` (rows over ``K`` sum to one).
        gamma (:class:`~chainer.Variable` or :ref:`ndarray`): Scale ``(C,)``,
            shared by the components (Eq. 37).
        beta (:class:`~chainer.Variable` or :ref:`ndarray`): Shift ``(C,)``.
        eps (float): Added to the variances (default ``2e-5``).
        relu (bool): Per-component ReLU before aggregation (Eq. 40).
        reducer (~mn_chainer.gmm.Reducer): Sums the component statistics
            (and their gradients) over the workers of a data-parallel job,
            so that every worker normalizes by the statistics of the global
            batch (None: this batch alone).
        shift: Per-channel origin about which the statistics are summed
            (a scalar or ``(C,)``), so that float32 keeps them accurate far
            from zero; with a reducer it must be the same on every worker.
            None (the default) chooses it from the batch
            (:func:`statistics_shift` of the statistics summed about zero,
            then summed again about the batch's mean only where needed: a
            second all-reduce then).  The link passes
            :func:`statistics_shift` of its fitted mixture.  The result
            does not depend on it beyond rounding.

    Returns:
        ~chainer.Variable: Output of the shape and dtype of ``x``.

    See: Kalayeh & Shah, `Training Faster by Separating Modes of Variation
    in Batch-normalized Models <https://arxiv.org/abs/1806.02892>`_.

    .. seealso::
        :class:`mn_chainer.links.MixtureNormalization`,
        :func:`chainer.functions.batch_normalization`
    """
    eps, relu, reducer, shift = argument.parse_kwargs(
        kwargs, ('eps', 2e-5), ('relu', False), ('reducer', None),
        ('shift', None))
    return MixtureNormalization(eps, relu, reducer, shift).apply(
        (x, tau, gamma, beta))[0]


def fixed_mixture_normalization(x, coefficients, gamma, beta, mean, var,
                                eps=2e-5, relu=False, shift=None):
    """Normalization by fixed components (the inference rule, Eqs. 38-39).

    ``y_i = sum_j c_ij f(gamma (x_i - mean_j) / sqrt(var_j + eps) + beta)``
    for ``J`` fixed components (for the inference rule: every component of
    every queued mixture, with ``c_ij = w_l tau^l_ik / sqrt(pi^l_k)``).
    Differentiable in ``x``, ``gamma`` and ``beta``; ``coefficients``,
    ``mean`` and ``var`` are constants.  Without the ReLU the sum over the
    components is expanded in ``x_i``, evaluated on ``x - shift`` with the
    means relative to ``shift`` so that it does not cancel in float32 far
    from zero.

    Args:
        x: Input ``(N, C, *spatial)``.
        coefficients: Raw array ``(N, J, *spatial)``.
        gamma, beta: Scale and shift ``(C,)``.
        mean, var: Raw arrays ``(J, C)``.
        eps (float): Added to the variances.
        relu (bool): Per-component ReLU (Eq. 40).
        shift: Per-channel translation (a scalar or ``(C,)``) applied to
            ``x`` and the means before the expansion; None chooses it with
            :func:`statistics_shift`, the components weighted by their
            total coefficient.

    Returns:
        ~chainer.Variable: Output of the shape and dtype of ``x``.
    """
    F = chainer.functions
    xp = backend.get_array_module(coefficients)
    dtype = _compute_dtype(x.dtype)
    shape = x.shape
    x3 = F.cast(F.reshape(x, (shape[0], shape[1], -1)), dtype)
    c3 = _as3d(coefficients).astype(dtype, copy=False)
    mean = mean.astype(dtype, copy=False)
    var = var.astype(dtype, copy=False)
    inv_std = 1 / xp.sqrt(var + eps)
    gamma = F.cast(gamma, dtype)
    beta = F.cast(beta, dtype)
    if not relu:
        if shift is None:
            shift = statistics_shift(c3.sum(axis=(0, 2)), mean, var, eps)
        shift = _shift_array(xp, shift, shape[1], dtype,
                             'fixed_mixture_normalization')
        if shift is not None:
            x3 = x3 - xp.broadcast_to(shift[None, :, None], x3.shape)
            mean = mean - shift
        scale = _bmm(xp, inv_std.T, c3)
        offset = _bmm(xp, (mean * inv_std).T, c3)
        x_hat_sum = x3 * scale - offset
        y = (x_hat_sum * F.broadcast_to(gamma[None, :, None], x3.shape)
             + F.broadcast_to(beta[None, :, None], x3.shape)
             * xp.broadcast_to(c3.sum(axis=1, keepdims=True), x3.shape))
    else:
        y = None
        gamma3 = F.broadcast_to(gamma[None, :, None], x3.shape)
        beta3 = F.broadcast_to(beta[None, :, None], x3.shape)
        for j in range(c3.shape[1]):
            x_hat = ((x3 - xp.broadcast_to(mean[j][None, :, None], x3.shape))
                     * xp.broadcast_to(inv_std[j][None, :, None], x3.shape))
            z = F.relu(gamma3 * x_hat + beta3)
            z = z * xp.broadcast_to(c3[:, j:j + 1], x3.shape)
            y = z if y is None else y + z
    return F.cast(F.reshape(y, shape), x.dtype)
