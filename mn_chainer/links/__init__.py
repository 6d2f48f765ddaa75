"""Links of Mixture Normalization."""
from mn_chainer.links.mixture_normalization import inference_weights  # NOQA
from mn_chainer.links.mixture_normalization import iter_mixture_normalizations  # NOQA
from mn_chainer.links.mixture_normalization import MixtureNormalization  # NOQA
from mn_chainer.links.mixture_normalization import replace_batch_normalization  # NOQA
from mn_chainer.links.multi_node_mixture_normalization import MultiNodeMixtureNormalization  # NOQA
