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
"""
import numpy

import chainer
from chainer import backend
from chainer import function_node
import chainer.functions
from chainer.utils import argument
from chainer.utils import type_check

from mn_chainer import gmm


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


def component_statistics(xp, x3, t3, eps, reducer=None):
    """Responsibility-weighted statistics of every component.

    Args:
        xp: Array module.
        x3: Activations viewed as ``(N, C, P)`` (compute dtype).
        t3: Responsibilities viewed as ``(N, K, P)`` (compute dtype).
        eps (float): Added to the variances before the square root.
        reducer (~mn_chainer.gmm.Reducer): Sums the statistics over the
            workers of a data-parallel job (None: this batch alone).

    Returns:
        tuple: ``s (K,)``, ``mean (K, C)``, ``var (K, C)``, ``inv_std (K, C)``
        (``1 / sqrt(var + eps)``) and the number of points ``m``.  The
        variance is computed as ``E_v[x^2] - mean^2`` (clipped at zero).
    """
    tiny = numpy.finfo(x3.dtype).tiny
    s, sum_x, sum_sq, m = gmm._allreduce(
        xp, reducer, t3.sum(axis=(0, 2)), _component_sums(xp, x3, t3),
        _component_sums(xp, x3 * x3, t3),
        xp.full(1, x3.shape[0] * x3.shape[2], x3.dtype))
    s_safe = xp.maximum(s, tiny)[:, None]
    mean = sum_x / s_safe
    var = xp.maximum(sum_sq / s_safe - mean * mean, 0)
    inv_std = 1 / xp.sqrt(var + eps)
    return s, mean, var, inv_std, m


def _coefficients(xp, t3, s, m):
    """``a = tau / sqrt(pi)`` (0 for empty components).

    ``pi = s / m``; ``s`` and ``m`` are totals (over all workers).  The
    weights ``v = tau / s`` are ``a / sqrt(m s)``.
    """
    tiny = numpy.finfo(t3.dtype).tiny
    s_safe = xp.maximum(s, tiny)
    return t3 * (xp.sqrt(m / s_safe) * (s > 0))[None, :, None]


def _apply_forward(xp, x3, a, gamma, beta, mean, inv_std, relu):
    """Eqs. 34 + 37 (``relu=False``) or Eq. 40 (``relu=True``)."""
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
    are available as ``s``, ``pi``, ``mean`` and ``var`` (raw arrays).
    """

    s = None
    mean = None
    var = None
    inv_std = None

    def __init__(self, eps=2e-5, relu=False, reducer=None):
        if not eps > 0:
            raise ValueError('eps must be positive, got {!r}'.format(eps))
        self.eps = float(eps)
        self.relu = bool(relu)
        self.reducer = reducer

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
        self.s, self.mean, self.var, self.inv_std, self.m = \
            component_statistics(xp, x3, t3, self.eps, self.reducer)
        a = _coefficients(xp, t3, self.s, self.m)
        y = _apply_forward(xp, x3, a, gamma.astype(dtype, copy=False),
                           beta.astype(dtype, copy=False), self.mean,
                           self.inv_std, self.relu)
        return y.reshape(x.shape).astype(x.dtype, copy=False),

    def backward(self, indexes, grad_outputs):
        x, tau, gamma, beta = self.get_retained_inputs()
        gy, = grad_outputs
        gx, ggamma, gbeta = MixtureNormalizationGrad(
            self.eps, self.relu, self.s, self.m, self.mean, self.inv_std,
            self.reducer).apply(
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
    """

    def __init__(self, eps, relu, s, m, mean, inv_std, reducer=None):
        self.eps = eps
        self.relu = relu
        self.s = s
        self.m = m
        self.reducer = reducer
        self.mean = mean
        self.inv_std = inv_std

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2, 3, 4))
        x, tau, gamma, beta, gy = inputs
        xp = backend.get_array_module(x)
        dtype = _compute_dtype(x.dtype)
        x3 = _as3d(x).astype(dtype, copy=False)
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
        g1, gxs = gmm._allreduce(xp, self.reducer, _component_sums(xp, g3, a),
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
        sums, = gmm._allreduce(xp, self.reducer, sums)
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
                x, tau.array, gamma, beta, self.eps, self.relu)
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


def _mixture_normalization_graph(x, tau, gamma, beta, eps, relu):
    """The transform written with :mod:`chainer.functions` (for double
    backprop); ``tau`` is a raw array (a constant)."""
    xp = backend.get_array_module(tau)
    dtype = _compute_dtype(x.dtype)
    F = chainer.functions
    shape = x.shape
    x3 = F.cast(F.reshape(x, (shape[0], shape[1], -1)), dtype)
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
reducer=None)

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

    Returns:
        ~chainer.Variable: Output of the shape and dtype of ``x``.

    See: Kalayeh & Shah, `Training Faster by Separating Modes of Variation
    in Batch-normalized Models <https://arxiv.org/abs/1806.02892>`_.

    .. seealso::
        :class:`mn_chainer.links.MixtureNormalization`,
        :func:`chainer.functions.batch_normalization`
    """
    eps, relu, reducer = argument.parse_kwargs(
        kwargs, ('eps', 2e-5), ('relu', False), ('reducer', None))
    return MixtureNormalization(eps, relu, reducer).apply(
        (x, tau, gamma, beta))[0]


def fixed_mixture_normalization(x, coefficients, gamma, beta, mean, var,
                                eps=2e-5, relu=False):
    """Normalization by fixed components (the inference rule, Eqs. 38-39).

    ``y_i = sum_j c_ij f(gamma (x_i - mean_j) / sqrt(var_j + eps) + beta)``
    for ``J`` fixed components (for the inference rule: every component of
    every queued mixture, with ``c_ij = w_l tau^l_ik / sqrt(pi^l_k)``).
    Differentiable in ``x``, ``gamma`` and ``beta``; ``coefficients``,
    ``mean`` and ``var`` are constants.

    Args:
        x: Input ``(N, C, *spatial)``.
        coefficients: Raw array ``(N, J, *spatial)``.
        gamma, beta: Scale and shift ``(C,)``.
        mean, var: Raw arrays ``(J, C)``.
        eps (float): Added to the variances.
        relu (bool): Per-component ReLU (Eq. 40).

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
    inv_std = (1 / xp.sqrt(var.astype(dtype, copy=False) + eps))
    gamma = F.cast(gamma, dtype)
    beta = F.cast(beta, dtype)
    if not relu:
        scale = _bmm(xp, inv_std.T, c3)
        shift = _bmm(xp, (mean * inv_std).T, c3)
        x_hat_sum = x3 * scale - shift
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
