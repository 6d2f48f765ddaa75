"""Reservoir sample of the finetune points (Vitter's Algorithm R).

Compared with a row-by-row Algorithm R written here from the definition,
which draws the same numbers; its uniformity is checked statistically.
"""
import unittest

import numpy
import pytest

from chainer import testing

import backends
from backends import skip_gpu_tests_without_gpu  # NOQA: F401 (fixture)
from mn_chainer.links import reservoir


def _algorithm_r(rows, capacity, seed):
    """One row at a time: keep row t with probability capacity / (t + 1)."""
    rng = numpy.random.RandomState(seed)
    sample = []
    for t, row in enumerate(rows):
        if t < capacity:
            sample.append(row)
            continue
        slot = rng.randint(0, t + 1)
        if slot < capacity:
            sample[slot] = row
    return numpy.array(sample)


def _offer(sample, rows, blocks, send=lambda a: a):
    start = 0
    for size in blocks:
        sample.add(send(rows[start:start + size]))
        start += size
    assert start == len(rows)


@testing.inject_backend_tests(None, backends.BACKENDS)
class TestReservoir(unittest.TestCase):

    def test_equals_row_by_row_algorithm(self, backend_config):
        rows = numpy.random.RandomState(0).randn(500, 3)
        for capacity, blocks in ((10, [500]), (10, [3, 7, 1, 489]),
                                 (64, [100] * 5), (499, [250, 250]),
                                 (1, [1] * 500)):
            sample = reservoir.Reservoir(capacity, seed=7)
            _offer(sample, rows, blocks, backend_config.get_array)
            assert sample.n_seen == 500
            numpy.testing.assert_array_equal(
                backends.to_cpu(sample.sample),
                _algorithm_r(rows, capacity, 7))

    def test_keeps_everything_below_capacity(self, backend_config):
        rows = numpy.arange(30, dtype=numpy.float32).reshape(10, 3)
        sample = reservoir.Reservoir(16, seed=0)
        _offer(sample, rows, [4, 6], backend_config.get_array)
        numpy.testing.assert_array_equal(backends.to_cpu(sample.sample),
                                         rows)
        rows[...] = -1  # kept rows are copies
        assert (backends.to_cpu(sample.sample) >= 0).all()


def test_every_row_equally_likely():
    n, capacity, trials = 50, 10, 4000
    rows = numpy.arange(n, dtype=numpy.float64)[:, None]
    counts = numpy.zeros(n)
    for seed in range(trials):
        sample = reservoir.Reservoir(capacity, seed=seed)
        _offer(sample, rows, [7, 13, 30])
        kept = sample.sample[:, 0].astype(int)
        assert len(numpy.unique(kept)) == capacity
        counts[kept] += 1
    # Binomial(trials, capacity / n) per row: within 5 standard deviations.
    p = capacity / n
    z = (counts - trials * p) / numpy.sqrt(trials * p * (1 - p))
    assert numpy.abs(z).max() < 5, z
    # No drift from the first rows to the last.
    assert abs(counts[:25].sum() - counts[25:].sum()) < 5 * numpy.sqrt(
        2 * 25 * trials * p * (1 - p))


def test_bad_arguments():
    with pytest.raises(ValueError, match='capacity'):
        reservoir.Reservoir(0, seed=0)
    sample = reservoir.Reservoir(4, seed=0)
    with pytest.raises(ValueError, match='shape'):
        sample.add(numpy.zeros(3))
    sample.add(numpy.zeros((2, 3)))
    with pytest.raises(ValueError, match='4 columns but the sample has 3'):
        sample.add(numpy.zeros((2, 4)))
