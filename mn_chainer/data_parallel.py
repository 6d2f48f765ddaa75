"""Sums over the workers of a data-parallel mixture fit.

In data-parallel training every worker holds a share of the batch, and
Mixture Normalization fits one mixture to the union of the shares
(DESIGN §1.1 over the global batch, as ChainerMN's
``MultiNodeBatchNormalization`` normalizes by global statistics).  Each
step of the fit and of the transform packs its sufficient statistics (the
sums of the responsibilities and the responsibility-weighted sums of the
points) into one buffer and sums it over the workers with one all-reduce:
:func:`allreduce_packed`.  The K-means++ seeding runs on the same gathered
sample on every worker: :func:`gather_points`.

A :class:`Reducer` is what does the summing; the base class is the
single-worker reducer (the identity) and
:class:`mn_chainer.links.MultiNodeMixtureNormalization` uses one over a
ChainerMN communicator.  This module imports NumPy alone and works on NumPy
and CuPy arrays alike (``xp`` is the arrays' module).
"""

#: Points gathered from all workers for the K-means++ seeding.
SEED_POINTS = 4096


class Reducer(object):

    """Sums arrays over the workers of a data-parallel job.

    :func:`mn_chainer.gmm.fit_gmm` and
    :func:`mn_chainer.functions.mixture_normalization` take a reducer to fit
    and normalize by the statistics of the union of every worker's points
    (see :func:`allreduce_packed`).  This base class is the single-worker
    reducer (the identity); subclasses override :meth:`allreduce`.

    Attributes:
        rank (int): This worker's index.
        size (int): Number of workers.
    """

    rank = 0
    size = 1

    def allreduce(self, array):
        """Return the element-wise sum of ``array`` over the workers."""
        return array


def allreduce_packed(xp, reducer, *arrays):
    """Sum several arrays over the workers with one all-reduce.

    The arrays are packed into one flat buffer, summed by
    ``reducer.allreduce`` once and unpacked.

    Args:
        xp: The arrays' module (NumPy or CuPy).
        reducer (Reducer): The workers' reducer; None (or a single worker)
            returns the arrays unchanged.
        arrays: Arrays of one dtype, any shapes.

    Returns:
        tuple: The summed arrays, in the order and shapes given.
    """
    if reducer is None or reducer.size == 1:
        return arrays
    flat = reducer.allreduce(xp.concatenate([a.ravel() for a in arrays]))
    out, start = [], 0
    for a in arrays:
        out.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return tuple(out)


def worker_random_state(xp, rng, reducer):
    """A random state of this worker's own, split off the shared ``rng``.

    Every worker draws one seed from ``rng`` (the same on all of them, as
    they share the stream) and adds its rank: the workers' local subsamples
    differ while the shared stream stays in step.
    """
    seed = int(rng.randint(0, 2 ** 31 - 1, size=1).tolist()[0])
    return xp.random.RandomState((seed + reducer.rank) % (2 ** 32))


def gather_points(xp, x, reducer, local_rng, total):
    """The union of all workers' points (ordered by rank), the same on all.

    Where there are more than :data:`SEED_POINTS` points in all
    (``total``), every worker contributes ``SEED_POINTS // size`` of its
    points at most, drawn at random from ``local_rng()``.  Two all-reduces:
    the counts, then the points (each worker writes its rows of a zeroed
    buffer).

    Args:
        xp: The arrays' module.
        x: This worker's points ``(n, d)``.
        reducer (Reducer): The workers' reducer.
        local_rng: Callable returning this worker's random state (called
            where there are more than :data:`SEED_POINTS` points).
        total (int): Number of points over all workers.

    Returns:
        The gathered points ``(n_all, d)``.
    """
    if reducer.size == 1:
        return x
    n_local = x.shape[0]
    if total > SEED_POINTS:
        rs = local_rng()  # drawn here on every worker: the streams agree
        n_local = min(n_local, max(1, SEED_POINTS // reducer.size))
        if n_local < x.shape[0]:
            x = x[rs.choice(x.shape[0], size=n_local, replace=False)]
    counts = xp.zeros(reducer.size, dtype=x.dtype)
    counts[reducer.rank] = n_local
    counts, = allreduce_packed(xp, reducer, counts)
    counts = [int(c) for c in counts.tolist()]
    start = sum(counts[:reducer.rank])
    gathered = xp.zeros((sum(counts), x.shape[1]), dtype=x.dtype)
    gathered[start:start + n_local] = x
    gathered, = allreduce_packed(xp, reducer, gathered)
    return gathered
