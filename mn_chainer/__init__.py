"""mn-chainer: Mixture Normalization (Kalayeh & Shah) for Chainer and CuPy.

Subpackages are imported on use: :mod:`mn_chainer.gmm` and
:mod:`mn_chainer.kernels` need only NumPy (and CuPy on a GPU);
:mod:`mn_chainer.functions` and :mod:`mn_chainer.links` need Chainer.
"""

__version__ = '0.1.0'
