"""A bounded uniform random sample of the rows of a stream of arrays.

:class:`~mn_chainer.links.MixtureNormalization` fits its *population
mixture* (the analog of batch normalization's population statistics) to a
sample of the points of the finetune batches.  Keeping every point of a
pass over a training set is out of the question (CIFAR-10 at ``conv3`` of
the CIFAR CNN: 2.4 million points of 256 channels), so the layer keeps a
reservoir sample: after ``n`` rows have been offered, the reservoir holds
``min(n, capacity)`` of them and every ``capacity``-subset of the rows seen is
equally likely (Vitter's Algorithm R, 1985).

The sample lives on the rows' device (NumPy or CuPy); the replacement draws
come from a seeded NumPy generator on the host, so the same seed selects the
same rows on the CPU and on a GPU.  No Chainer import.
"""
import numpy

from mn_chainer import gmm


class Reservoir(object):

    """Uniform random sample of at most ``capacity`` rows (Algorithm R).

    Rows are offered in blocks (:meth:`add`); the first ``capacity`` rows
    fill the sample, and the row with 0-based index ``t >= capacity`` then
    replaces the sample's row ``r`` when a uniform draw ``r`` in ``[0, t]``
    is below ``capacity`` (otherwise it is dropped).  Within a block, a slot
    drawn twice keeps the later row, exactly as the row-by-row algorithm.

    Args:
        capacity (int): Largest number of rows kept (``>= 1``).
        seed (int): Seed of the replacement draws.

    Attributes:
        capacity (int): The bound.
        n_seen (int): Number of rows offered so far.
        sample: The rows kept, ``(min(n_seen, capacity), d)`` (``None``
            before the first row).
    """

    def __init__(self, capacity, seed):
        if not (isinstance(capacity, (int, numpy.integer)) and capacity >= 1):
            raise ValueError('capacity must be a positive integer, got '
                             '{!r}'.format(capacity))
        self.capacity = int(capacity)
        self.n_seen = 0
        self.sample = None
        self._rng = numpy.random.RandomState(seed)

    def add(self, rows):
        """Offer the rows of a ``(b, d)`` array (kept rows are copied)."""
        if rows.ndim != 2:
            raise ValueError('rows must have shape (b, d), got shape {}'
                             .format(rows.shape))
        if self.sample is not None and rows.shape[1] != self.sample.shape[1]:
            raise ValueError('rows have {} columns but the sample has {}'
                             .format(rows.shape[1], self.sample.shape[1]))
        xp = gmm.get_array_module(rows)
        b = rows.shape[0]
        n_fill = min(max(self.capacity - self.n_seen, 0), b)
        if n_fill:
            head = rows[:n_fill]
            self.sample = (head.copy() if self.sample is None
                           else xp.concatenate((self.sample, head)))
        if n_fill < b:
            offsets = numpy.arange(n_fill, b)
            slots = self._rng.randint(0, self.n_seen + offsets + 1)
            kept = slots < self.capacity
            # Later rows overwrite earlier ones drawn for the same slot.
            slots, offsets = slots[kept][::-1], offsets[kept][::-1]
            slots, first = numpy.unique(slots, return_index=True)
            if slots.size:
                self.sample[xp.asarray(slots)] = rows[xp.asarray(
                    offsets[first])]
        self.n_seen += b
