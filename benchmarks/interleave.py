"""Interleaved timing of several variants, for the BN vs MN benchmarks.

On a shared machine the load changes during a run; timing the variants
one after the other lets such a change hit one of them only.  Here every
round times one call of each variant in turn, in reverse order every other
round (which cancels a linear drift), so that the variants see the same
load and a ratio taken within each round (:func:`round_ratios`) is far
steadier than the ratio of two separately measured times.
"""
import statistics
import time

import numpy


def synchronizer(device):
    """A function that waits for ``device`` (no-op on the CPU)."""
    if device.xp is numpy:
        return lambda: None
    return device.device.synchronize


#: Clocks a benchmark may time with: wall time, or the CPU time of the
#: whole process (all its threads), which other processes of a shared
#: machine disturb far less (but which misses time spent waiting, e.g. for
#: a GPU).
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def add_transform_argument(parser):
    """``--transform fused|array``: the MN transform's loops as its fused
    kernels or as the array operations (the A/B of
    :func:`mn_chainer.functions.transform_passes.using_kernels`)."""
    parser.add_argument('--transform', choices=('fused', 'array'),
                        default='fused',
                        help='The loops of the MN transform: its fused '
                        'kernels where they apply (C on the CPU, CUDA on '
                        'a GPU), or array operations over blocks (the '
                        'reference; the fit is the same either way)')


def interleaved(calls, rounds, sync, warmup=1, clock=time.perf_counter):
    """Seconds per call of each of ``calls`` (zero-argument functions).

    Args:
        calls (sequence): The variants.
        rounds (int): Timed rounds (one call of each variant per round).
        sync: Waits for the device (see :func:`synchronizer`).
        warmup (int): Untimed rounds first.
        clock: A function giving seconds (see :data:`CLOCKS`).

    Returns:
        list: One list of ``rounds`` times (seconds) per variant.
    """
    times = [[] for _ in calls]
    for r in range(warmup + rounds):
        order = list(range(len(calls)))
        if r % 2:
            order.reverse()
        for i in order:
            sync()
            start = clock()
            calls[i]()
            sync()
            if r >= warmup:
                times[i].append(clock() - start)
    return times


def round_ratios(times, reference):
    """Per-round ratios ``times / reference`` (same rounds)."""
    return [t / r for t, r in zip(times, reference)]


def median_ratio(times, reference):
    """Median over the rounds of ``times / reference``."""
    return statistics.median(round_ratios(times, reference))
