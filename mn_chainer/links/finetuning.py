"""Fine-tune the normalization layers of a whole model (population statistics).

Batch normalization computes *population statistics* by running training
batches through a layer called with ``finetune=True`` after
``start_finetuning()``; :class:`~mn_chainer.links.MixtureNormalization` does
the same with its population mixture.  A model's ``forward`` (or a wrapper
such as :class:`~chainer.links.Classifier`) rarely passes ``finetune`` down
to its norms, so :func:`finetune` adds it while it runs: a
:class:`~chainer.LinkHook` calls every BN and MN link of the model with
``finetune=True``.  This is what a trainer needs before its final
evaluation::

    train_iter = chainer.iterators.SerialIterator(train, 256, repeat=False)
    mn_chainer.links.finetune(model, train_iter, device=device)
    # test mode now uses the population statistics of every BN and MN link
"""
import warnings

import chainer
from chainer.dataset import convert

from mn_chainer.links import mixture_normalization
from mn_chainer.links import swap


def _normalizations(model):
    """The BN and MN links of ``model`` (itself included)."""
    return [link for link in model.links()
            if swap.is_batch_normalization(link) or isinstance(
                link, mixture_normalization.MixtureNormalization)]


def _bypasses_link_hooks(link):
    # ChainerMN's MultiNodeBatchNormalization overrides __call__.
    return type(link).__call__ is not chainer.Link.__call__


class FinetuneHook(chainer.LinkHook):

    """Calls every BN and MN link with ``finetune=True`` while active.

    Use as a context manager (``with FinetuneHook(): model(x)``) in training
    mode; links called with an explicit ``finetune`` keep it.
    """

    name = 'FinetuneHook'

    def forward_preprocess(self, args):
        link = args.link
        if swap.is_batch_normalization(link) or isinstance(
                link, mixture_normalization.MixtureNormalization):
            # The dict is the one forward() receives (Link.__call__).
            args.kwargs.setdefault('finetune', True)


def start_finetuning(model):
    """Call ``start_finetuning()`` on every BN and MN link of ``model``.

    Returns:
        int: Number of links reset.
    """
    links = _normalizations(model)
    for link in links:
        link.start_finetuning()
    return len(links)


def finetune(model, iterator, n_batches=None,
             converter=convert.concat_examples, device=None):
    """Compute the population statistics of every BN and MN link of a model.

    Calls :func:`start_finetuning`, runs ``n_batches`` batches of
    ``iterator`` (all of them, when None) through ``model`` in training
    mode without backpropagation, with ``finetune=True`` for every BN and MN
    link (:class:`FinetuneHook`), and fits every MN link's population
    mixture (:meth:`~mn_chainer.links.MixtureNormalization.fit_population`;
    with ChainerMN, call this on every worker).  Afterwards test mode uses
    BN's population mean and variance and MN's population mixture, until
    the next training step.  Parameters and the MN queues are not changed.
    As for BN, other train-mode behaviour (e.g. dropout) is active during
    the passes.

    Args:
        model (~chainer.Link): The model, called as the updater would call
            it: ``model(*in_arrays)`` for a tuple, ``model(**in_arrays)``
            for a dict.
        iterator (~chainer.dataset.Iterator): Training batches; reset first
            when it can be.  With ``n_batches=None`` it must not repeat.
        n_batches (int or None): Number of batches to run.
        converter: Converts a batch to the model's input arrays.
        device: Device the arrays are sent to (as for ``converter``).

    Returns:
        int: Number of batches run.
    """
    if n_batches is None and getattr(iterator, 'repeat', False):
        raise ValueError('finetune: give n_batches for a repeating iterator')
    if n_batches is not None and n_batches < 1:
        raise ValueError('finetune: n_batches must be positive, got '
                         '{!r}'.format(n_batches))
    skipped = [path for path, link in model.namedlinks()
               if swap.is_batch_normalization(link)
               and _bypasses_link_hooks(link)]
    if skipped:
        warnings.warn('finetune: {} ({}) cannot be called with finetune=True '
                      'by a link hook; their running averages are kept'
                      .format(', '.join(skipped), type(model).__name__))
    if hasattr(iterator, 'reset'):
        iterator.reset()
    start_finetuning(model)
    count = 0
    with chainer.using_config('train', True), \
            chainer.no_backprop_mode(), FinetuneHook():
        for batch in iterator:
            in_arrays = converter(batch, device)
            if isinstance(in_arrays, tuple):
                model(*in_arrays)
            elif isinstance(in_arrays, dict):
                model(**in_arrays)
            else:
                model(in_arrays)
            count += 1
            if count == n_batches:
                break
    for link in model.links():
        if isinstance(link, mixture_normalization.MixtureNormalization):
            link.fit_population()
    return count
