"""mn-chainer: Mixture Normalization (Kalayeh & Shah) for Chainer and CuPy.

Subpackages are imported on use: :mod:`mn_chainer.gmm` and
:mod:`mn_chainer.kernels` need only NumPy (and CuPy on a GPU);
:mod:`mn_chainer.functions` and :mod:`mn_chainer.links` need Chainer.
"""
import warnings

__version__ = '0.1.0'

# ``import chainer.training`` imports Chainer's multi-GPU updater, which
# imports ``cupy.cuda.nccl``; where CuPy is installed without NCCL (every
# CPU-only machine) CuPy then warns that NCCL could not be loaded, on every
# command. Nothing here uses that updater (ChainerMN's ``pure_nccl``
# communicator reports a missing NCCL itself), so that one warning is
# silenced; every other CuPy warning stays.
warnings.filterwarnings(
    'ignore', message=r'\s*nccl library could not be loaded',
    category=UserWarning, module=r'cupy\._environment')
