"""Mixture Normalization over the global batch of a ChainerMN job."""
import copy

from chainer import backend
import numpy

from mn_chainer import data_parallel
from mn_chainer.links import mixture_normalization


class CommunicatorReducer(data_parallel.Reducer):

    """A :class:`~mn_chainer.data_parallel.Reducer` over a ChainerMN
    communicator.

    One ``comm.allreduce`` (a sum) per call, after the null stream has
    finished writing the buffer when it lives on a GPU.

    Args:
        comm: A ChainerMN communicator.
    """

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.rank
        self.size = comm.size

    def allreduce(self, array):
        xp = backend.get_array_module(array)
        if xp is not numpy:
            xp.cuda.Stream.null.synchronize()
        return self.comm.allreduce(array)


class MultiNodeMixtureNormalization(
        mixture_normalization.MixtureNormalization):

    """Mixture Normalization with the mixture of all workers' points.

    In data-parallel training each worker sees only its share of the batch;
    this link fits one mixture to the union of every worker's points and
    normalizes by the global per-component statistics, the way ChainerMN's
    :class:`~chainermn.links.MultiNodeBatchNormalization` does for BN:

    * the K-means++ seeding runs on the same gathered sample on every
      worker (at most :data:`mn_chainer.data_parallel.SEED_POINTS` points)
      with the same random stream (the layer's seed is broadcast from rank 0);
    * every K-means and EM step sums its sufficient statistics (sum of the
      responsibilities, responsibility-weighted sums of ``x`` and ``x^2``)
      over the workers with one all-reduce;
    * the normalization uses the global component statistics, and its
      backward all-reduces the per-component gradient sums.

    Every worker therefore ends a step with the same mixture and pushes the
    same entry onto its queue; inference then needs no communication.

    Fine-tuning works as for the single-process link, with one population
    mixture fitted to the union of every worker's sample: every worker must
    run the finetune batches and :meth:`fit_population` (as
    :func:`mn_chainer.links.finetune` does), since that fit communicates.

    Args:
        size (int, tuple of ints or None): Number of channels.
        comm: ChainerMN communicator.
        args: The other positional arguments of
            :class:`~mn_chainer.links.MixtureNormalization`, in its (BN's)
            order: ``decay``, ``eps``, ``dtype``, ...
        kwargs: Its keyword arguments (``n_components``, ...).

    .. seealso:: :class:`mn_chainer.links.MixtureNormalization`
    """

    def __init__(self, size, comm, *args, **kwargs):
        super(MultiNodeMixtureNormalization, self).__init__(
            size, *args, **kwargs)
        self.comm = comm
        # The seeding must draw the same numbers everywhere.
        self.seed = _bcast(comm, self.seed)
        self._comm_reducer = CommunicatorReducer(comm)

    def _reducer(self):
        return self._comm_reducer

    def reseed(self, seed):
        super(MultiNodeMixtureNormalization, self).reseed(
            _bcast(self.comm, int(seed)))

    def __deepcopy__(self, memo):
        # The communicator is shared by the copies, never copied (as in
        # ChainerMN's MultiNodeBatchNormalization).
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key not in ('comm', '_comm_reducer'):
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new


def _bcast(comm, obj):
    """Rank 0's ``obj`` on every worker."""
    return comm.bcast_obj(obj if comm.rank == 0 else None, root=0)
