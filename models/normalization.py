"""The one BN -> MN swap of every model of the paper.

Every model here is built with batch normalization and takes ``mn_layers``
and ``mn_kwargs``; :func:`use_mixture_normalization` swaps the named norms
for :class:`mn_chainer.links.MixtureNormalization` with the defaults of
:data:`MN_DEFAULTS`.
"""
import mn_chainer.links


#: Defaults of the MN layers of the paper's models (given keys override).
#: Every norm that the paper replaces in them is followed by a ReLU (CIFAR
#: CNN and Inception-V3: convolution, norm, ReLU; DenseNet: norm, ReLU,
#: convolution; DCGAN generator: deconvolution, norm, ReLU), and "the
#: paper's models use" the per-component rectification of Eq. 40
#: (DESIGN §1.2), hence ``relu=True``.  The link's own default is the plain
#: transform (``relu=False``, Eq. 34), the drop-in for any BN.
MN_DEFAULTS = {'relu': True}


def use_mixture_normalization(model, mn_layers, mn_kwargs=None):
    """Swap the norms named ``mn_layers`` of ``model`` for MN links.

    Args:
        model (~chainer.Chain): A model of this package (it has the model
            protocol ``norm_links()`` / ``expand_norm_layer(name)``).
        mn_layers (list of str or None): Layer or norm names (see the
            model's ``expand_norm_layer``); None or empty swaps nothing.
        mn_kwargs (dict or None): Arguments of
            :class:`~mn_chainer.links.MixtureNormalization` (and ``comm``,
            ``seed``: see
            :func:`~mn_chainer.links.replace_batch_normalization`) over
            :data:`MN_DEFAULTS`.

    Returns:
        list of str: The norm names replaced, in order.
    """
    if not mn_layers:
        return []
    kwargs = dict(MN_DEFAULTS, **(mn_kwargs or {}))
    return mn_chainer.links.replace_batch_normalization(
        model, mn_layers, **kwargs)
