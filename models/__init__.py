"""Model zoo of the paper's experiments, with named normalization layers.

Every model is a :class:`chainer.Chain` built with ``L.BatchNormalization``
links and declares their public names through two methods:

* ``norm_links()`` -> ``OrderedDict`` mapping each public norm name (for
  example ``'conv3'`` or ``'inc2/0/2/4'``) to the link's path inside the model
  (as in ``model.namedlinks(skipself=True)``, e.g. ``'/conv3/bn'``);
* ``expand_norm_layer(name)`` -> list of public norm names that the paper's
  "MN at layer *name*" replaces (a single norm name expands to itself).

:func:`mn_chainer.links.replace_batch_normalization` uses them to swap the
named norms for Mixture Normalization.
"""
import importlib


#: Registered architectures: name -> ``'module:Class'``.
MODELS = {
    'cifar_cnn': 'models.cifar_cnn:CifarCNN',
    'inception_v3': 'models.inception_v3:InceptionV3',
    'densenet': 'models.densenet:DenseNet',
    'densenet40': 'models.densenet:DenseNet40',
    'densenet100': 'models.densenet:DenseNet100',
}


def get_model_class(name):
    """Return the model class registered as ``name``."""
    try:
        target = MODELS[name]
    except KeyError:
        raise ValueError('unknown model {!r}; valid models: {}'.format(
            name, ', '.join(sorted(MODELS))))
    module_name, class_name = target.split(':')
    return getattr(importlib.import_module(module_name), class_name)


def get_model(name, *args, **kwargs):
    """Build the model registered as ``name`` with the given arguments."""
    return get_model_class(name)(*args, **kwargs)


def get_model_from_settings(settings, comm=None):
    """Build the predictor that a CIFAR run's settings describe.

    Args:
        settings (dict): A run's resolved settings (its ``args.json``):
            ``model``, ``n_class``, ``widths`` and, for MN runs,
            ``mn_layers``, ``n_components``, ``em_iter``, ``mn_relu`` (if
            absent: :data:`models.normalization.MN_DEFAULTS`) and ``seed``
            (the seed of the MN fits).
        comm: A ChainerMN communicator for multi-node MN (None: one
            process).

    Returns:
        chainer.Chain: The freshly initialised predictor.
    """
    kwargs = {}
    if settings.get('widths'):
        kwargs['widths'] = tuple(settings['widths'])
    mn_kwargs = None
    if settings.get('mn_layers'):
        mn_kwargs = dict(n_components=settings['n_components'],
                         em_iter=settings['em_iter'], seed=settings['seed'])
        if settings.get('mn_relu') is not None:
            mn_kwargs['relu'] = settings['mn_relu']
        if comm is not None:
            mn_kwargs['comm'] = comm
    return get_model(settings['model'], n_class=settings['n_class'],
                     mn_layers=settings.get('mn_layers') or None,
                     mn_kwargs=mn_kwargs, **kwargs)
