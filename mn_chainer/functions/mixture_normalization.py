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

Speed: the function computes the per-component constants; the loops over
the batch, two passes forward (the component sums, the output) and two
backward (the gradient's sums, the input's gradient), run as fused kernels
where they apply (C on NumPy, CUDA on CuPy), else as array operations over
blocks of samples (:mod:`mn_chainer.functions.transform_passes`).  The
per-component ReLUs of Eq. 40 enter the gradient as one comparison each,
with thresholds on ``sign(gamma) x``.
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
from mn_chainer.functions import transform_passes


def _compute_dtype(dtype):
    # float16 is computed in float32, like Chainer's batch normalization;
    # in the machine's byte order (what the kernels take).
    if dtype == numpy.float16:
        return numpy.dtype(numpy.float32)
    return numpy.dtype(dtype).newbyteorder('=')


def _as3d(a):
    """View ``(N, C, *spatial)`` as ``(N, C, P)``."""
    return a.reshape(a.shape[0], a.shape[1], -1)


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


def _sums_statistics(xp, x3, t3, eps, reducer, shift):
    """Statistics from the sums about ``shift`` (one all-reduce)."""
    dtype = x3.dtype
    tiny = numpy.finfo(dtype).tiny
    s, sum_x, sum_sq = transform_passes.select_passes(xp)(
        xp, x3, shift).moment_sums(t3)
    s, sum_x, sum_sq, m = data_parallel.allreduce_packed(
        xp, reducer, s.astype(dtype), sum_x.astype(dtype),
        sum_sq.astype(dtype), xp.full(1, x3.shape[0] * x3.shape[2], dtype))
    s_safe = xp.maximum(s, tiny)[:, None]
    shifted_mean = sum_x / s_safe
    var = xp.maximum(sum_sq / s_safe - shifted_mean * shifted_mean, 0)
    inv_std = 1 / xp.sqrt(var + eps)
    mean = shifted_mean if shift is None else shifted_mean + shift
    return ComponentStatistics(s, mean, var, inv_std, m, shift,
                               shifted_mean)


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
    stats = None
    if shift is None:
        # Sums about zero first; about the batch's mean only where they
        # cancel (a second all-reduce, then, with a reducer).
        stats = _sums_statistics(xp, x3, t3, eps, reducer, None)
        shift = statistics_shift(stats.s, stats.mean, stats.var, eps)
    shift = _shift_array(xp, shift, x3.shape[1], x3.dtype,
                         'mixture_normalization')
    if shift is None and stats is not None:
        return stats
    return _sums_statistics(xp, x3, t3, eps, reducer, shift)


def _coefficients(xp, t3, s, m):
    """``a = tau / sqrt(pi)`` (0 for empty components).

    ``pi = s / m``; ``s`` and ``m`` are totals (over all workers).  The
    weights ``v = tau / s`` are ``a / sqrt(m s)``.
    """
    tiny = numpy.finfo(t3.dtype).tiny
    s_safe = xp.maximum(s, tiny)
    return t3 * (xp.sqrt(m / s_safe) * (s > 0))[None, :, None]


def _relu_mask(xp, gamma, scale, offset):
    """Where the per-component ReLUs of Eq. 40 are on, as thresholds.

    ``z_ik = scale_k x_i + offset_k > 0`` exactly where
    ``sign(gamma) x_i > threshold_k`` (``scale_k = gamma inv_std_k`` has
    the sign of ``gamma``): ``threshold_k = sign(gamma) mean_k -
    beta / |scale_k|``, i.e. ``-offset_k / |scale_k|``, and ``-offset_k``
    where ``gamma = 0`` (on where ``beta > 0``).  One comparison per
    component instead of three operations.

    Returns:
        ~mn_chainer.functions.transform_passes.ReluMask: ``sign(gamma)``
        ``(C,)`` and the thresholds ``(K, C)``.
    """
    magnitude = xp.abs(scale)
    zero = magnitude == 0
    thresholds = -offset / xp.where(zero, 1, magnitude)
    return transform_passes.ReluMask(xp.sign(gamma), thresholds)


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
        stats = component_statistics(xp, x3, t3, self.eps, self.reducer,
                                     self._requested_shift)
        (self.s, self.mean, self.var, self.inv_std, self.m, self.shift,
         self.shifted_mean) = stats
        a = _coefficients(xp, t3, self.s, self.m)
        # Component k gives z_ik = scale_k (x_i - c) + offset_k (its means
        # relative to the shift c; a common translation changes nothing).
        scale = gamma.astype(dtype, copy=False) * stats.inv_std
        offset = beta.astype(dtype, copy=False) - scale * stats.shifted_mean
        y = transform_passes.select_passes(xp)(xp, x3, stats.shift).output(
            a, scale, offset, self.relu)
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

    Two passes over the batch
    (:mod:`~mn_chainer.functions.transform_passes`): the per-component sums
    ``sum_i a_ik g_i`` and ``sum_i a_ik g_i (x_i - c)`` (masked for Eq.
    40), then ``gx``, whose terms in ``v_ik`` are linear in ``x_i``.  Its
    own backward (double backprop) differentiates the same transform
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
        x3 = _as3d(x).astype(dtype, copy=False)
        t3 = _as3d(tau).astype(dtype, copy=False)
        g3 = _as3d(gy).astype(dtype, copy=False)
        gamma_c = gamma.astype(dtype, copy=False)
        beta_c = beta.astype(dtype, copy=False)
        a = _coefficients(xp, t3, self.s, self.m)
        mean, inv_std = self.mean, self.inv_std
        u = gamma_c * inv_std
        mask = _relu_mask(xp, gamma_c, u, beta_c - u * mean) \
            if self.relu else None
        passes = transform_passes.select_passes(xp)(xp, x3, self.shift)
        g_sum, g_x_sum = data_parallel.allreduce_packed(
            xp, self.reducer, *(total.astype(dtype) for total in
                                passes.gradient_sums(a, g3, mask, u)))
        # sum_i a_ik g_i x_hat_ik (masked for Eq. 40).
        g_x_hat_sum = inv_std * (g_x_sum - mean * g_sum)
        # The terms of gx in v_ik: gx_i -= sum_k v_ik inv_std_k (S1_k +
        # x_hat_ik S2_k), S1_k = sum_j h_jk = gamma g_sum_k and S2_k =
        # sum_j h_jk x_hat_jk = gamma g_x_hat_sum_k (totals over all
        # workers); expanded in x_i with v_ik = a_ik / sqrt(m s_k), they
        # are -sum_k a_ik (w1_k + (x_i - c) w2_k).
        s1, s2 = gamma_c * g_sum, gamma_c * g_x_hat_sum
        tiny = numpy.finfo(dtype).tiny
        v_scale = 1 / xp.sqrt(self.m * xp.maximum(self.s, tiny))[:, None]
        w1 = -v_scale * inv_std * (s1 - inv_std * mean * s2)
        w2 = -v_scale * inv_std * inv_std * s2
        gx = passes.input_gradient(a, g3, mask, u, w1, w2)
        ggamma, gbeta = g_x_hat_sum.sum(axis=0), g_sum.sum(axis=0)
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
        scale = transform_passes.expand(xp, inv_std.T, c3)
        offset = transform_passes.expand(xp, (mean * inv_std).T, c3)
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
