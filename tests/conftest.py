"""Test configuration: slow tests run only with ``--runslow``.

This file imports neither Chainer nor CuPy, so the GMM and kernel tests
also run on a machine that has only NumPy and CuPy.
"""
import pytest


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked slow (training runs)')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long run, skipped unless '
                            '--runslow is given')
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (skipped '
                            'without one)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)
