"""Statistics over seeds: means, standard errors and paired differences.

A comparison of BN and MN on short runs is stated over several seeds
(DESIGN.md §3): each quantity is a mean over the runs of a group with its
standard error (the sample standard deviation, ``ddof=1``, over the square
root of the number of runs), and an MN group is compared with the BN group
by the paired difference over the seeds both ran, with a Student-t interval.

With one run there is no standard error: the functions return ``None``
where a standard error or an interval is undefined, never NaN, and the
callers say so. This module needs NumPy and SciPy only.
"""
import collections
import math

import numpy
import scipy.stats


class Estimate(collections.namedtuple('Estimate', ['mean', 'se', 'n'])):

    """A mean over ``n`` runs and its standard error.

    Attributes:
        mean (float or None): The mean (``None`` when ``n == 0``).
        se (float or None): Standard error of the mean, ``std(ddof=1) /
            sqrt(n)``; ``None`` when ``n < 2`` (undefined).
        n (int): Number of values.

    """

    __slots__ = ()


class PairedDifference(collections.namedtuple('PairedDifference', [
        'mean', 'se', 'n', 'low', 'high', 'confidence', 'seeds', 'only_a',
        'only_b'])):

    """The mean of ``a[s] - b[s]`` over the seeds ``s`` of both groups.

    Attributes:
        mean (float or None): Mean difference (``None`` without shared
            seeds).
        se (float or None): Its standard error (``None`` for fewer than two
            shared seeds).
        n (int): Number of shared seeds (pairs).
        low, high (float or None): Bounds of the two-sided Student-t
            interval with ``n - 1`` degrees of freedom (``None`` for fewer
            than two pairs).
        confidence (float): Confidence level of the interval.
        seeds (list): The shared seeds, sorted.
        only_a, only_b (list): Seeds present in one group only (left out
            of the pairs), sorted.

    """

    __slots__ = ()


def mean_se(values):
    """Mean and standard error of the mean.

    Args:
        values (array-like of shape (n,)): One value per run.

    Returns:
        Estimate: ``se`` is ``std(values, ddof=1) / sqrt(n)``, ``None`` for
        ``n < 2``; ``mean`` is ``None`` for ``n == 0``.

    """
    values = numpy.asarray(values, dtype=numpy.float64).ravel()
    n = len(values)
    if n == 0:
        return Estimate(None, None, 0)
    mean = float(values.mean())
    se = None if n < 2 else float(values.std(ddof=1) / math.sqrt(n))
    return Estimate(mean, se, n)


def mean_se_columns(values):
    """Column-wise mean and standard error of a ``(runs, points)`` array.

    Args:
        values (array-like of shape (n, m)): Row ``i`` is run ``i``'s series.

    Returns:
        tuple: ``(mean, se)``, arrays of shape ``(m,)``; ``se`` is ``None``
        when there is a single run.

    """
    values = numpy.asarray(values, dtype=numpy.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError('expected a non-empty (runs, points) array, got '
                         'shape {}'.format(values.shape))
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2:
        return mean, None
    return mean, values.std(axis=0, ddof=1) / math.sqrt(n)


def t_interval(mean, se, n, confidence=0.95):
    """Two-sided Student-t confidence interval of a mean of ``n`` values.

    ``mean -/+ t_{(1 + confidence) / 2, n - 1} * se``.

    Returns:
        tuple or None: ``(low, high)``; ``None`` when ``n < 2`` or ``se`` is
        ``None``.

    """
    if not 0 < confidence < 1:
        raise ValueError('confidence must be in (0, 1), got {}'.format(
            confidence))
    if n < 2 or se is None or mean is None:
        return None
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    return mean - half, mean + half


def paired_difference(a, b, confidence=0.95):
    """Paired difference ``a - b`` over the seeds both groups ran.

    Args:
        a, b (dict): Seed -> value (e.g. each run's windowed accuracy).
        confidence (float): Level of the t-interval.

    Returns:
        PairedDifference: Only shared seeds are paired; the others are
        listed in ``only_a``/``only_b``.

    """
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    est = mean_se(diffs)
    interval = t_interval(est.mean, est.se, est.n, confidence)
    low, high = interval if interval is not None else (None, None)
    return PairedDifference(
        est.mean, est.se, est.n, low, high, confidence, seeds,
        sorted(set(a) - set(b)), sorted(set(b) - set(a)))


def windowed_mean(values, window=3):
    """Mean of the last ``window`` values (the whole series if shorter).

    The windowed metric of a run: the mean of its last evaluations, less
    sensitive to the epoch-to-epoch swings of short runs than the last or
    the best value alone (DESIGN.md §3, the paper's Fig. 2 band).

    Raises:
        ValueError: For an empty series or ``window < 1``.

    """
    if window < 1:
        raise ValueError('window must be >= 1, got {}'.format(window))
    values = numpy.asarray(values, dtype=numpy.float64).ravel()
    if not len(values):
        raise ValueError('no values to average')
    return float(values[-window:].mean())


def first_reach(iterations, values, target):
    """Iteration count of the first value that is ``>= target``.

    The paper's acceleration metric (Tables III, V, VI) at the resolution
    of the evaluations.

    Args:
        iterations (array-like of shape (n,)): Updates done at each
            evaluation.
        values (array-like of shape (n,)): The accuracies.
        target (float): Accuracy to reach.

    Returns:
        int or None: ``None`` when the target is never reached.

    """
    values = numpy.asarray(values, dtype=numpy.float64)
    reached = numpy.flatnonzero(values >= target)
    if not len(reached):
        return None
    return int(numpy.asarray(iterations)[reached[0]])
