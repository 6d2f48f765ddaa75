"""Links of Mixture Normalization."""
from mn_chainer.links.conv_2d_bn_activ import Conv2DBNActiv  # NOQA
from mn_chainer.links.finetuning import finetune  # NOQA
from mn_chainer.links.finetuning import start_finetuning  # NOQA
from mn_chainer.links.mixture_normalization import inference_weights  # NOQA
from mn_chainer.links.mixture_normalization import MixtureNormalization  # NOQA
from mn_chainer.links.multi_node_mixture_normalization import MultiNodeMixtureNormalization  # NOQA
from mn_chainer.links.swap import is_batch_normalization  # NOQA
from mn_chainer.links.swap import iter_mixture_normalizations  # NOQA
from mn_chainer.links.swap import replace_batch_normalization  # NOQA
