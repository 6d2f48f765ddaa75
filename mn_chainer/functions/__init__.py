"""Differentiable functions of Mixture Normalization."""
from mn_chainer.functions.mixture_normalization import fixed_mixture_normalization  # NOQA
from mn_chainer.functions.mixture_normalization import mixture_normalization  # NOQA
from mn_chainer.functions.mixture_normalization import MixtureNormalization  # NOQA
from mn_chainer.functions.mixture_normalization import MixtureNormalizationGrad  # NOQA
from mn_chainer.functions.mixture_normalization import statistics_shift  # NOQA
