"""Trainer extensions that monitor Mixture Normalization layers.

:class:`MixtureMonitor` records what the paper analyses in its Figs. 8 and 9:
the effective number of mixture components of every Mixture Normalization
(MN) layer over training, the component weights, and snapshots of the
per-channel mixtures (weights, means, variances) at chosen fractions of
training.
"""
import os

import numpy

import chainer
from chainer.training import extension
from chainer.training import trigger as trigger_module


def _to_cpu(array):
    return chainer.backend.CpuDevice().send(array)


def _fraction_key(fraction):
    """Formats a fraction of training as it appears in npz keys (``0.2``)."""
    return '{:g}'.format(fraction)


class MixtureMonitor(extension.Extension):

    """Trainer extension reporting the state of every MN layer of a model.

    At every ``trigger`` (each epoch by default) it writes, for every
    Mixture Normalization link of ``target`` (found with
    :func:`mn_chainer.links.iter_mixture_normalizations`, whose name is
    ``<name>`` below), the following values into the trainer's current
    observation, so that :class:`~chainer.training.extensions.LogReport`
    logs them:

    * ``mn/<name>/effective_k``: the number of mixture components left after
      pruning the components whose weight fell below ``min_weight`` in the
      last training step (the paper's Fig. 9), as a float;
    * ``mn/<name>/weight_<k>`` for ``k < n_components``: the mixing weights
      :math:`\\lambda_k` of the last fitted mixture, sorted in descending
      order (component indices of two fits are unrelated, since each fit
      starts from its own k-means++ seeding), and 0 for pruned components.

    The values are those of the last training step before the trigger
    fires (the extension runs with ``PRIORITY_WRITER``, as
    :func:`~chainer.training.extensions.observe_value` does, i.e. before
    LogReport reads the observation).

    When ``dump_fractions`` is given, the extension also saves each MN
    link's last mixture the first time training reaches each of those
    fractions of its length (e.g. ``(0.2, 0.4, 0.6, 0.8, 1.0)`` for the
    paper's Fig. 8) into an npz file with the keys
    ``<name>/<fraction>/weights`` (K_eff,),
    ``<name>/<fraction>/means`` (K_eff, C),
    ``<name>/<fraction>/variances`` (K_eff, C),
    ``<name>/<fraction>/iteration`` and ``<name>/<fraction>/epoch``
    (``epoch_detail`` at the dump), where ``<fraction>`` is formatted with
    ``'{:g}'`` (``0.2``, ``1``). The key ``fractions`` lists the fractions
    dumped so far. The file is rewritten after each dump, so a run stopped
    early keeps the snapshots it reached. ``<name>`` may itself contain
    ``/``; split keys from the right.

    Args:
        target (chainer.Link): The model whose MN links are monitored. The
            links are looked up at every call, so MN links swapped in after
            the extension is built are seen.
        trigger: When to report (a trigger or ``(period, unit)``).
        dump_fractions (sequence of float or None): Fractions of training
            in ``(0, 1]`` at which to dump the mixtures. ``None`` disables
            the dump.
        dump_path (str or None): The npz file to write. Relative paths are
            relative to the trainer's output directory; ``None`` means
            ``<trainer.out>/mixtures.npz``.
        total (tuple or None): Length of training as ``(length, unit)``
            with unit ``'epoch'`` or ``'iteration'``. ``None`` takes it from
            the trainer's stop trigger (``get_training_length()``).

    .. seealso::
        :func:`mn_chainer.plot.main` (``effective-k`` and ``mixture``
        commands), which draws Figs. 8 and 9 from these records.

    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER

    def __init__(self, target, trigger=(1, 'epoch'), dump_fractions=None,
                 dump_path=None, total=None):
        self._target = target
        self._report_trigger = trigger_module.get_trigger(trigger)
        if dump_fractions is None:
            fractions = ()
        else:
            fractions = tuple(sorted(float(f) for f in dump_fractions))
            for f in fractions:
                if not 0 < f <= 1:
                    raise ValueError(
                        'dump fractions must be in (0, 1], got {}'.format(f))
        self._fractions = fractions
        self._dump_path = dump_path
        if total is not None:
            length, unit = total
            if unit not in ('epoch', 'iteration') or length <= 0:
                raise ValueError(
                    'total must be (length > 0, "epoch" or "iteration"), '
                    'got {!r}'.format(total))
            total = float(length), unit
        self._total = total
        self._done = []
        self._records = {}

    def initialize(self, trainer):
        if self._fractions and self._total is None:
            get_length = getattr(
                trainer.stop_trigger, 'get_training_length', None)
            if get_length is None:
                raise ValueError(
                    'MixtureMonitor cannot tell the training length from '
                    'the stop trigger {!r}; pass total=(length, unit)'
                    .format(trainer.stop_trigger))
            length, unit = get_length()
            self._total = float(length), unit

    def _links(self):
        # Imported here: mn_chainer.links imports the heavier function and
        # GMM modules, which the rest of this module does not need.
        import mn_chainer.links
        return list(mn_chainer.links.iter_mixture_normalizations(
            self._target))

    def observe(self):
        """Returns the observation dict the extension reports now."""
        observation = {}
        for name, link in self._links():
            prefix = 'mn/{}/'.format(name)
            observation[prefix + 'effective_k'] = float(link.effective_k)
            weights = numpy.zeros(link.n_components, dtype=numpy.float64)
            mixture = link.last_mixture
            if mixture is not None:
                w = numpy.sort(numpy.asarray(
                    _to_cpu(mixture.weights), dtype=numpy.float64))[::-1]
                n = min(len(w), link.n_components)
                weights[:n] = w[:n]
            for k in range(link.n_components):
                observation[prefix + 'weight_{}'.format(k)] = float(
                    weights[k])
        return observation

    def _position(self, updater):
        length, unit = self._total
        if unit == 'epoch':
            return updater.epoch_detail / length
        return updater.iteration / length

    def __call__(self, trainer):
        if self._report_trigger(trainer):
            trainer.observation.update(self.observe())
        if self._fractions:
            position = self._position(trainer.updater)
            due = [f for f in self._fractions
                   if f not in self._done and position >= f - 1e-9]
            if due:
                self._dump(trainer, due)

    def _path(self, trainer):
        if self._dump_path is None:
            return os.path.join(trainer.out, 'mixtures.npz')
        return os.path.join(trainer.out, self._dump_path)

    def _dump(self, trainer, fractions):
        updater = trainer.updater
        links = self._links()
        for fraction in fractions:
            self._done.append(fraction)
            fkey = _fraction_key(fraction)
            for name, link in links:
                mixture = link.last_mixture
                if mixture is None:
                    continue
                prefix = '{}/{}/'.format(name, fkey)
                for field in ('weights', 'means', 'variances'):
                    self._records[prefix + field] = numpy.asarray(
                        _to_cpu(getattr(mixture, field)))
                self._records[prefix + 'iteration'] = numpy.asarray(
                    updater.iteration)
                self._records[prefix + 'epoch'] = numpy.asarray(
                    updater.epoch_detail)
        path = self._path(trainer)
        records = {}
        if os.path.exists(path):
            # Keep snapshots written before a resume (they are not in
            # memory any more); fresh ones override them.
            with numpy.load(path) as old:
                done = {_fraction_key(f) for f in self._done}
                for key in old.files:
                    parts = key.rsplit('/', 2)
                    if len(parts) == 3 and parts[1] in done:
                        records[key] = old[key]
        records.update(self._records)
        records['fractions'] = numpy.asarray(sorted(self._done))
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = path + '.tmp.npz'
        numpy.savez(tmp, **records)
        os.replace(tmp, path)

    def serialize(self, serializer):
        if hasattr(self._report_trigger, 'serialize'):
            self._report_trigger.serialize(serializer['report_trigger'])
        done = numpy.asarray(self._done, dtype=numpy.float64)
        if isinstance(serializer, chainer.serializer.Deserializer):
            try:
                done = serializer('done', None)
            except KeyError:
                done = None
            if done is not None:
                self._done = [float(f) for f in numpy.asarray(done)]
        else:
            serializer('done', done)
