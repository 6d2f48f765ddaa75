"""The batch in blocks: how the NumPy loops of the transform run.

The forward and backward passes of
:func:`~mn_chainer.functions.mixture_normalization` visit the batch in blocks
of samples (:class:`Blocks`): the K per-component steps of the ReLU form
(Eq. 40) and the few steps of the plain form then run on arrays that stay
in a core's cache, and the blocks are shared among threads.  On CuPy the
batch is one block.
"""
import concurrent.futures
import functools
import threading

import numpy
try:
    import threadpoolctl
except ImportError:  # optional: without it BLAS keeps its own threads
    threadpoolctl = None

from mn_chainer import cpu_kernels


#: Bytes of activations in a block: small enough that a block and the
#: scratch of a loop over it stay in a core's L2 cache, where NumPy's
#: operations run faster than over whole arrays in main memory.
BLOCK_BYTES = 1 << 18

#: Threads among which the NumPy loops share the blocks (contiguous shares,
#: one per thread; NumPy releases the GIL inside its operations).  None:
#: as many as the fit's C kernels use (:func:`mn_chainer.cpu_kernels.
#: n_threads`: ``MN_CHAINER_CPU_THREADS``, else the CPUs available).  The
#: results do not depend on it: the sums of the blocks are added in block
#: order.
THREADS = None

#: Elements of activations below which a pass is not split further among
#: threads (waking one costs ~0.1 ms).
MIN_ELEMENTS_PER_THREAD = 1 << 18


def n_threads():
    """Threads the loops use (:data:`THREADS`)."""
    return cpu_kernels.n_threads() if THREADS is None else max(1, THREADS)


def limits_blas():
    """Whether BLAS runs on one thread inside the loops (with
    :mod:`threadpoolctl` installed; see :class:`_OneBlasThread`)."""
    return threadpoolctl is not None


@functools.lru_cache(maxsize=None)
def _pool(workers):
    """The loops' pool of ``workers`` threads (made once)."""
    return concurrent.futures.ThreadPoolExecutor(
        workers, thread_name_prefix='mn_chainer_transform')


class _OneBlasThread(object):

    """While a loop of the transform runs: BLAS on one thread.

    The matrix products of the loops are small (``K`` columns, one block of
    samples); a multi-threaded BLAS wakes its threads for each of them,
    which costs more than the product (up to three times the time of the
    plain transform's products on two busy cores), and the loops' own
    threads already share the work.  Uses :mod:`threadpoolctl` when it is
    installed (a no-op otherwise); the limit is process-wide, set while
    any loop runs and restored after the last one.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._controller = None
        self._limiter = None

    def __enter__(self):
        with self._lock:
            if self._users == 0 and threadpoolctl is not None:
                if self._controller is None:
                    self._controller = threadpoolctl.ThreadpoolController()
                self._limiter = self._controller.limit(limits=1,
                                                       user_api='blas')
            self._users += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


_one_blas_thread = _OneBlasThread()


class Blocks(object):

    """Blocks of samples of activations ``(N, C, P)`` and their scratch.

    :meth:`map` runs a loop over the blocks, in shares for the threads
    (the whole batch as one block on CuPy; see :data:`BLOCK_BYTES` and
    :data:`THREADS`); :meth:`scratch` gives arrays with room for one block.
    """

    def __init__(self, xp, shape, dtype):
        self.xp = xp
        self.n, self.channels, self.size = shape
        self.dtype = dtype
        sample = self.channels * self.size
        if xp is numpy:
            step = BLOCK_BYTES // max(sample * dtype.itemsize, 1)
            parts = min(n_threads(),
                        self.n * sample // MIN_ELEMENTS_PER_THREAD)
        else:
            step, parts = self.n, 1
        self.step = max(1, min(self.n, step))
        blocks = [slice(start, min(start + self.step, self.n))
                  for start in range(0, self.n, self.step)]
        parts = max(1, min(parts, len(blocks)))
        self.shares = [blocks[len(blocks) * p // parts:
                              len(blocks) * (p + 1) // parts]
                       for p in range(parts)]

    def map(self, loop):
        """``loop(blocks)`` for every share of the blocks, the first on this
        thread; returns the lists it returns, concatenated in block order
        (so that their sum does not depend on the threads)."""
        if self.xp is not numpy:
            return list(loop(self.shares[0]))
        with _one_blas_thread:
            futures = [_pool(len(self.shares) - 1).submit(
                lambda share: list(loop(share)), share)
                for share in self.shares[1:]]
            out = list(loop(self.shares[0]))
            for future in futures:
                out.extend(future.result())
        return out

    def sum(self, loop, shape):
        """The float64 sum of the arrays of ``shape`` that ``loop(blocks)``
        yields per block (see :meth:`map`)."""
        total = self.xp.zeros(shape, dtype=numpy.float64)
        for part in self.map(loop):
            total += part
        return total

    def scratch(self, channels=None, dtype=None):
        """An uninitialised array for one block, ``(step, channels, P)``."""
        return self.xp.empty(
            (self.step, self.channels if channels is None else channels,
             self.size), dtype=self.dtype if dtype is None else dtype)

    def per_channel(self, values):
        """Per-channel values ``(K, C)`` laid out against a sample.

        On NumPy, ``(K, C, P)`` (contiguous): an operation of a block with
        one of them then runs along whole samples, twice as fast as along
        rows of ``P`` values.  On CuPy, the view ``(K, C, 1)``.
        """
        values = values[:, :, None]
        if self.xp is not numpy:
            return values
        return self.xp.ascontiguousarray(self.xp.broadcast_to(
            values, values.shape[:2] + (self.size,)))


def part(scratch, rows):
    """The first ``rows`` samples of a scratch array (the last block)."""
    return scratch if scratch.shape[0] == rows else scratch[:rows]
