"""The paper's result tables, kept as package data.

The numbers of Kalayeh & Shah, *Training Faster by Separating Modes of
Variation in Batch-normalized Models* (TPAMI 2019) are transcribed in
``mn_chainer/data/paper_results.json``. Presets
(:mod:`mn_chainer.presets`), comparison tools and the README read them from
there through :func:`load_paper_results`.
"""
import copy
import functools
import json
import os


#: Path of the transcribed tables (installed as package data).
PAPER_RESULTS_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'data', 'paper_results.json')


@functools.lru_cache(maxsize=None)
def _load():
    if not os.path.isfile(PAPER_RESULTS_PATH):
        raise FileNotFoundError(
            'package data {} is missing; reinstall mn-chainer'.format(
                PAPER_RESULTS_PATH))
    with open(PAPER_RESULTS_PATH, encoding='utf-8') as f:
        return json.load(f)


def load_paper_results():
    """Returns the paper's tables as a dictionary.

    The top-level keys name the tables (``'table2_cifar_cnn'``,
    ``'table3_cifar_cnn_steps'``, ``'table4_inception_v3'``, ...); the
    ``'units'`` entry documents the units of the numbers. Every call returns
    a fresh deep copy, so callers may modify it.

    Returns:
        dict: The parsed content of ``mn_chainer/data/paper_results.json``.

    """
    return copy.deepcopy(_load())
