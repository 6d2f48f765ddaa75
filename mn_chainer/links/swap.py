"""Swap a model's batch normalization links for Mixture Normalization.

:func:`replace_batch_normalization` is how every model of the project (and
any user model) gets its MN layers: the network is built with
:class:`chainer.links.BatchNormalization` (or ChainerMN's
``MultiNodeBatchNormalization``) and the named ones are replaced in place;
:func:`iter_mixture_normalizations` finds them again (for logging, dumps and
fine-tuning).  This module sits above the two MN links, which know nothing
of it.
"""
import sys

import numpy

import chainer

from mn_chainer.links import mixture_normalization
from mn_chainer.links import multi_node_mixture_normalization


def replace_batch_normalization(chain, names, **mn_kwargs):
    """Swap named ``BatchNormalization`` links of a model for MN links.

    Names are resolved through the model protocol when the chain has it:
    ``chain.expand_norm_layer(name)`` turns a layer name (e.g. ``'inc2/0'``)
    into the norm names that "MN at layer *name*" replaces, and
    ``chain.norm_links()`` maps every norm name to its link path.  Without
    the protocol, names are link paths (``'/block/bn'`` or ``'block/bn'``)
    of :class:`~chainer.links.BatchNormalization` links.

    Each replacement has the replaced link's size, ``axis``, ``eps``, dtype
    and ``gamma``/``beta`` values (BN's ``decay``, a moving-average rate,
    is not carried over: MN's ``decay`` is the ``lambda`` of Eq. 39);
    ``mn_kwargs`` go to
    :class:`~mn_chainer.links.MixtureNormalization` (``n_components``,
    ``em_iter``, ``relu``, ``seed``, ...; its default is the plain
    transform, ``relu=False``).  With ``seed`` given, the i-th replaced link
    gets ``seed + i``.  With ``comm`` (a ChainerMN communicator) given, the
    replacements are
    :class:`~mn_chainer.links.MultiNodeMixtureNormalization` links that fit
    and normalize over the global batch.

    Args:
        chain (~chainer.Chain): The model (modified in place).
        names (str or list of str): Names to replace.
        mn_kwargs: Arguments of :class:`MixtureNormalization`.

    Returns:
        list of str: The norm names replaced, in order.
    """
    if isinstance(names, str):
        names = [names]
    norm_links = _norm_links(chain)
    resolved = []
    for name in names:
        if hasattr(chain, 'expand_norm_layer'):
            expanded = chain.expand_norm_layer(name)
        else:
            expanded = [name]
        for norm_name in expanded:
            key = _lookup(norm_links, norm_name)
            if key is None:
                raise ValueError(
                    'unknown normalization layer {!r}; valid names: {}'
                    .format(norm_name, ', '.join(norm_links)))
            if key not in resolved:
                resolved.append(key)
    seed = mn_kwargs.pop('seed', None)
    for i, key in enumerate(resolved):
        parent, child = _parent_of(chain, norm_links[key])
        old = (parent[int(child)] if isinstance(parent, chainer.ChainList)
               else getattr(parent, child))
        if isinstance(old, mixture_normalization.MixtureNormalization):
            continue
        if not is_batch_normalization(old):
            raise ValueError('{!r} ({}) is a {}, not a BatchNormalization'
                             .format(key, norm_links[key],
                                     type(old).__name__))
        new = _mixture_from_batch_normalization(
            old, dict(mn_kwargs, seed=None if seed is None else seed + i))
        new.layer_name = key.lstrip('/')
        if isinstance(parent, chainer.ChainList):
            parent[int(child)] = new
        else:
            delattr(parent, child)
            with parent.init_scope():
                setattr(parent, child, new)
    return resolved


def iter_mixture_normalizations(chain):
    """Yield ``(name, link)`` for every :class:`MixtureNormalization`.

    The name is the link's ``layer_name`` when it was set by
    :func:`replace_batch_normalization`, else its path in ``chain``.
    """
    for path, link in chain.namedlinks(skipself=True):
        if isinstance(link, mixture_normalization.MixtureNormalization):
            yield (link.layer_name or path.lstrip('/')), link


def is_batch_normalization(link):
    """Whether ``link`` is a BN link that MN can replace.

    :class:`chainer.links.BatchNormalization` (and subclasses), or ChainerMN's
    ``MultiNodeBatchNormalization`` (not a subclass of it).
    """
    classes = (chainer.links.BatchNormalization,)
    multi_node = _multi_node_batch_normalization_class()
    if multi_node is not None:
        classes += (multi_node,)
    return isinstance(link, classes)


def _multi_node_batch_normalization_class():
    # A ChainerMN link exists only once its module is imported, so it is not
    # imported here (importing ChainerMN loads MPI and, on a machine without
    # NCCL, warns).
    if 'chainermn.links.batch_normalization' not in sys.modules:
        return None
    try:
        from chainermn.links import batch_normalization
    except ImportError:
        return None
    return batch_normalization.MultiNodeBatchNormalization


def _lookup(norm_links, name):
    for key in (name, '/' + name):
        if key in norm_links:
            return key
    return None


def _norm_links(chain):
    if hasattr(chain, 'norm_links'):
        return chain.norm_links()
    return {path: path for path, link in chain.namedlinks(skipself=True)
            if is_batch_normalization(link) or isinstance(
                link, mixture_normalization.MixtureNormalization)}


def _parent_of(chain, path):
    parts = [p for p in path.split('/') if p]
    parent = chain
    for part in parts[:-1]:
        parent = (parent[int(part)] if isinstance(parent, chainer.ChainList)
                  else getattr(parent, part))
    return parent, parts[-1]


def _mixture_from_batch_normalization(bn, mn_kwargs):
    size = None if bn.avg_mean is None else bn.avg_mean.shape
    kwargs = dict(eps=bn.eps, use_gamma=bn.gamma is not None,
                  use_beta=bn.beta is not None,
                  axis=getattr(bn, 'axis', None))
    if bn.avg_mean is not None:
        kwargs['dtype'] = bn.avg_mean.dtype
    kwargs.update(mn_kwargs)
    comm = kwargs.pop('comm', None)
    if comm is None:
        new = mixture_normalization.MixtureNormalization(size, **kwargs)
    else:
        new = multi_node_mixture_normalization.MultiNodeMixtureNormalization(
            size, comm, **kwargs)
    if size is not None:
        if new.gamma is not None and bn.gamma.array is not None:
            new.gamma.array[...] = bn.gamma.array
        if new.beta is not None and bn.beta.array is not None:
            new.beta.array[...] = bn.beta.array
    if bn.xp is not numpy:
        new.to_device(bn.device)
    return new
