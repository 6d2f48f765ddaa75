"""The passes of the Mixture Normalizing Transform over a batch, one class
per backend.

:func:`~mn_chainer.functions.mixture_normalization` reads the batch in four
passes: forward, the component sums (:meth:`ArrayPasses.moment_sums`) and
the output (:meth:`~ArrayPasses.output`); backward, the gradient's sums
(:meth:`~ArrayPasses.gradient_sums`) and the input's gradient
(:meth:`~ArrayPasses.input_gradient`).  The function computes every
per-component constant (DESIGN §1.2-1.3); a passes class runs the loops over
the points with one backend, chosen by :func:`select_passes`:

======================  ======================  ===========================
passes                  arrays                  loops
======================  ======================  ===========================
:class:`ArrayPasses`    NumPy without the C     array operations over
                        kernels; CuPy with      blocks of samples
                        :data:`USE_KERNELS`     (:mod:`~mn_chainer.
                        False                   functions.batch_blocks`)
:class:`CKernelPasses`  NumPy                   C kernels (:mod:`mn_chainer.
                                                transform_kernels`)
:class:`CudaPasses`     CuPy                    CUDA kernels
                                                (:mod:`mn_chainer.kernels`)
======================  ======================  ===========================

:class:`ArrayPasses` is the reference: the kernels' tests compare with it.
A passes object is bound to the activations ``x`` ``(N, C, P)`` (compute
dtype) and the shift ``c`` (``(C,)``, or None for zero): every pass works on
``x - c``.  The other arrays: responsibilities ``t`` and coefficients ``a =
tau / sqrt(pi)`` ``(N, K, P)``, the output's gradient ``g`` ``(N, C, P)``,
per-component constants ``(K, C)``; the rectification of Eq. 40 enters the
backward passes as a :class:`ReluMask`.  The four passes:

* ``moment_sums(t)``: ``sum_i t_ik``, ``sum_i t_ik (x_i - c)`` and
  ``sum_i t_ik (x_i - c)^2`` (float64 where the backend accumulates so);
* ``output(a, scale, offset, relu)``: ``y_i = sum_k a_ik f(scale_k (x_i -
  c) + offset_k)``, ``f`` the identity or the ReLU;
* ``gradient_sums(a, g, mask, u)``: ``sum_i a_ik m_ik g_i`` and ``sum_i
  a_ik m_ik g_i (x_i - c)``, ``m`` the mask (1 without one);
* ``input_gradient(a, g, mask, u, w1, w2)``: ``gx_i = sum_k a_ik (m_ik u_k
  g_i + w1_k + w2_k (x_i - c))``, after ``gradient_sums`` of the same
  ``a, g, mask, u`` (a backend may start on it there).
"""
import collections
import contextlib

import numpy

from mn_chainer import cpu_kernels
from mn_chainer import kernels
from mn_chainer import transform_kernels
from mn_chainer.functions import batch_blocks


#: Whether the transform runs its fused kernels where they apply (the C
#: kernels on NumPy where :func:`mn_chainer.cpu_kernels.available`, the CUDA
#: kernels on CuPy).
#: False: :class:`ArrayPasses` everywhere (to compare the two, e.g.
#: ``benchmarks/bench_layer.py --transform array``).
USE_KERNELS = True


@contextlib.contextmanager
def using_kernels(enabled):
    """Sets :data:`USE_KERNELS` to ``enabled`` within the context (restored
    after it)."""
    global USE_KERNELS
    previous, USE_KERNELS = USE_KERNELS, bool(enabled)
    try:
        yield
    finally:
        USE_KERNELS = previous


class ReluMask(collections.namedtuple('ReluMask', ('sign', 'thresholds'))):

    """Where the per-component ReLUs of Eq. 40 are on: ``z_ik = scale_k
    (x_i - c) + offset_k > 0`` exactly where ``sign (x_i - c) >
    thresholds_k``.

    Attributes:
        sign: ``sign(gamma)`` ``(C,)``.
        thresholds: ``(K, C)``.
    """

    __slots__ = ()


def select_passes(xp):
    """The passes class of a batch on the array module ``xp`` (the one
    backend switch; see the module's table)."""
    if not USE_KERNELS:
        return ArrayPasses
    if xp is not numpy:
        return CudaPasses
    return CKernelPasses if cpu_kernels.available() else ArrayPasses


# ---------------------------------------------------------------------------
# Array operations


def _shifted(xp, x_block, shift, scratch):
    """``x_block - shift`` over the channel axis, in ``scratch`` (the block
    itself for no shift)."""
    if shift is None:
        return x_block
    out = batch_blocks.part(scratch, x_block.shape[0])
    xp.subtract(x_block, shift[:, None], out=out)
    return out


def _component_sums(xp, x3, t3):
    """``sum_i t_ik x_ic`` as ``(K, C)``.

    For ``x3`` of shape ``(N, C, P)`` and ``t3`` of shape ``(N, K, P)``:
    one matrix product per sample (one for the batch when ``P = 1``).
    """
    if x3.shape[2] == 1:
        return xp.matmul(t3[:, :, 0].T, x3[:, :, 0])
    return xp.matmul(t3, x3.transpose(0, 2, 1)).sum(axis=0)


def expand(xp, w, a, out=None):
    """``out[n, r, p] = sum_k w_rk a_nkp`` for ``w (R, K)``, ``a (B, K, P)``
    (one matrix product per sample, one for the block when ``P = 1``).

    ``out`` is scratch for at least ``B`` samples (None: a new array).
    """
    if out is None:
        out = xp.empty((a.shape[0], w.shape[0], a.shape[2]), dtype=a.dtype)
    out = batch_blocks.part(out, a.shape[0])
    if a.shape[2] == 1:
        xp.matmul(a[:, :, 0], w.T, out=out[:, :, 0])
    else:
        xp.matmul(w, a, out=out)
    return out


class ArrayPasses(object):

    """The passes as array operations, block by block
    (:class:`~mn_chainer.functions.batch_blocks.Blocks`: on NumPy blocks of
    samples that stay in cache, shared among threads, the blocks' sums
    added in float64 in block order; on CuPy one block).  Eq. 40's masks
    are one comparison each (:class:`ReluMask`); the linear forms expand
    their sums over the components with one small matrix product per
    sample (:func:`expand`).

    Args:
        xp: The array module.
        x3: Activations ``(N, C, P)``.
        shift: ``(C,)`` or None.
    """

    def __init__(self, xp, x3, shift):
        self.xp = xp
        self.x3 = x3
        self.shift = shift
        self.blocks = batch_blocks.Blocks(xp, x3.shape, x3.dtype)
        self._first_term = None

    def _centred(self, b, scratch):
        return _shifted(self.xp, self.x3[b], self.shift, scratch)

    def moment_sums(self, t3):
        """``s (K,)`` (the dtype of ``t3``) and the sums ``(K, C)`` of ``x -
        c`` and ``(x - c)^2`` (float64)."""
        xp, blocks = self.xp, self.blocks

        def loop(share):
            diff, square = blocks.scratch(), blocks.scratch()
            for b in share:
                xc = self._centred(b, diff)
                sq = xp.multiply(xc, xc,
                                 out=batch_blocks.part(square, xc.shape[0]))
                yield xp.stack((_component_sums(xp, xc, t3[b]),
                                _component_sums(xp, sq, t3[b])))

        sum_x, sum_sq = blocks.sum(
            loop, (2, t3.shape[1], self.x3.shape[1]))
        return t3.sum(axis=(0, 2)), sum_x, sum_sq

    def output(self, a, scale, offset, relu):
        """The output ``(N, C, P)``."""
        xp, blocks, x3 = self.xp, self.blocks, self.x3
        channels, n_components = x3.shape[1], a.shape[1]
        y = xp.empty(x3.shape, dtype=x3.dtype)
        if not relu:
            # Linear in x: y_i = (x_i - c) sum_k a_ik scale_k
            # + sum_k a_ik offset_k, both sums from one small product per
            # sample.
            w = xp.concatenate((scale, offset), axis=1).T

            def loop(share):
                expanded = blocks.scratch(2 * channels)
                for b in share:
                    e = expand(xp, w, a[b], expanded)
                    yb = y[b]
                    xp.multiply(self._centred(b, yb), e[:, :channels],
                                out=yb)
                    yb += e[:, channels:]
                    yield
        else:
            scale = blocks.per_channel(scale)
            offset = blocks.per_channel(offset)

            def loop(share):
                diff, z = blocks.scratch(), blocks.scratch()
                for b in share:
                    xc = self._centred(b, diff)
                    ab, yb = a[b], y[b]
                    if n_components == 0:
                        yb[...] = 0
                    for k in range(n_components):
                        # a_ik relu(z_ik), accumulated into y.
                        zk = yb if k == 0 else batch_blocks.part(
                            z, xc.shape[0])
                        xp.multiply(xc, scale[k], out=zk)
                        zk += offset[k]
                        xp.maximum(zk, 0, out=zk)
                        zk *= ab[:, k:k + 1]
                        if k:
                            yb += zk
                    yield
        blocks.map(loop)
        return y

    def gradient_sums(self, a, g3, mask, u):
        """The sums ``(K, C)`` of ``a m g`` and ``a m g (x - c)`` (float64);
        with a mask, also the first term of the gradient, ``g_i sum_k a_ik
        m_ik u_k``, for :meth:`input_gradient`."""
        if mask is None:
            return self._sums(a, g3)
        return self._masked_sums(a, g3, mask, u)

    def _sums(self, a, g3):
        xp, blocks = self.xp, self.blocks

        def loop(share):
            diff, product = blocks.scratch(), blocks.scratch()
            for b in share:
                xc = self._centred(b, diff)
                gb, ab = g3[b], a[b]
                gxc = xp.multiply(
                    gb, xc, out=batch_blocks.part(product, xc.shape[0]))
                yield xp.stack((_component_sums(xp, gb, ab),
                                _component_sums(xp, gxc, ab)))

        return tuple(blocks.sum(loop, (2, a.shape[1], self.x3.shape[1])))

    def _masked_sums(self, a, g3, mask, u):
        xp, blocks = self.xp, self.blocks
        sign = mask.sign
        if xp is numpy and (sign > 0).all():
            # gamma > 0 everywhere (the usual case): no multiplication by
            # the sign (checked on NumPy only: on CuPy it would wait for
            # the device).
            sign = None
        u = blocks.per_channel(u)
        thresholds = blocks.per_channel(mask.thresholds)
        n_components = a.shape[1]
        gx = self._first_term = xp.empty(self.x3.shape, dtype=self.x3.dtype)

        def loop(share):
            diff, product, on, weight = (blocks.scratch() for _ in range(4))
            for b in share:
                xc = self._centred(b, diff)
                rows = xc.shape[0]
                gb, ab, gxb = g3[b], a[b], gx[b]
                gxc = xp.multiply(gb, xc, out=batch_blocks.part(product, rows))
                if sign is not None:
                    xc = xp.multiply(xc, sign[:, None],
                                     out=batch_blocks.part(diff, rows))
                onk = batch_blocks.part(on, rows)
                sums = xp.empty((2, n_components, xc.shape[1]),
                                dtype=xc.dtype)
                if n_components == 0:
                    gxb[...] = 0
                for k in range(n_components):
                    # a_ik m_ik: its sums with g and g (x - c), and the
                    # first term of gx.
                    xp.greater(xc, thresholds[k], out=onk)
                    wk = gxb if k == 0 else batch_blocks.part(weight, rows)
                    xp.multiply(onk, ab[:, k:k + 1], out=wk)
                    sums[0, k] = xp.einsum('ncp,ncp->c', wk, gb)
                    sums[1, k] = xp.einsum('ncp,ncp->c', wk, gxc)
                    wk *= u[k]
                    if k:
                        gxb += wk
                gxb *= gb
                yield sums

        return tuple(blocks.sum(loop, (2, n_components, self.x3.shape[1])))

    def input_gradient(self, a, g3, mask, u, w1, w2):
        """The gradient of ``x`` ``(N, C, P)``: the terms in ``w1`` and
        ``w2`` (and, without a mask, the first term), expanded over the
        components with one small product per sample, added to the first
        term of :meth:`gradient_sums` with a mask."""
        xp, blocks = self.xp, self.blocks
        channels = self.x3.shape[1]
        w = [w1, w2]
        if mask is None:
            w.append(u)
            gx = xp.empty(self.x3.shape, dtype=self.x3.dtype)
        else:
            gx, self._first_term = self._first_term, None
        w = xp.concatenate(w, axis=1).T

        def loop(share):
            diff, expanded = blocks.scratch(), blocks.scratch(w.shape[0])
            for b in share:
                xc = self._centred(b, diff)
                e = expand(xp, w, a[b], expanded)
                gxb = gx[b]
                if mask is None:
                    xp.multiply(g3[b], e[:, 2 * channels:], out=gxb)
                    gxb += e[:, :channels]
                else:
                    gxb += e[:, :channels]
                e2 = e[:, channels:2 * channels]
                e2 *= xc
                gxb += e2
                yield

        blocks.map(loop)
        return gx


# ---------------------------------------------------------------------------
# Fused kernels


class _KernelPasses(object):

    """The passes as fused kernels (:attr:`module`: a module of
    ``mix_sums``, ``mix_forward`` and ``mix_grad_x``), each reading the
    batch once; their sums accumulated in double (C), or in partial sums
    over a few points added in float64 (CUDA)."""

    #: The kernels' module.
    module = None

    def __init__(self, xp, x3, shift):
        self.xp = xp
        self.x3 = x3
        self.shift = xp.zeros(x3.shape[1], x3.dtype) if shift is None \
            else shift

    def moment_sums(self, t3):
        """As :meth:`ArrayPasses.moment_sums` (``s`` in float64)."""
        sum_x, sum_sq = self.module.mix_sums(self.x3, t3, self.shift)
        return t3.sum(axis=(0, 2), dtype=numpy.float64), sum_x, sum_sq

    def output(self, a, scale, offset, relu):
        return self.module.mix_forward(self.x3, a, self.shift, scale, offset,
                                       relu)

    def gradient_sums(self, a, g3, mask, u):
        return tuple(self.module.mix_sums(self.x3, a, self.shift, g3, mask))

    def input_gradient(self, a, g3, mask, u, w1, w2):
        return self.module.mix_grad_x(self.x3, a, g3, self.shift, u, w1, w2,
                                      mask)


class CKernelPasses(_KernelPasses):

    """The passes as the C kernels of :mod:`mn_chainer.transform_kernels`
    (NumPy, where :func:`mn_chainer.cpu_kernels.available`)."""

    module = transform_kernels


class CudaPasses(_KernelPasses):

    """The passes as the CUDA kernels of :mod:`mn_chainer.kernels` (CuPy).
    """

    module = kernels
