"""Trainer extensions of the package's training scripts.

* :class:`MixtureMonitor` records what the paper analyses in its Figs. 8
  and 9: the effective number of mixture components of every Mixture
  Normalization (MN) layer over training, the component weights, and dumps
  of the per-channel mixtures (weights, means, variances).
* :class:`FIDEvaluator` reports the FID of a generator's samples (paper
  section 4.5).
* :class:`RandomStates`, :class:`RunRecord` and :class:`PlotReport` make a
  resumed run continue exactly where its snapshot stopped: the random
  streams of every worker, the settings the run started with, and the
  plots' points and trigger. :func:`snapshot` is the trainers' snapshot
  writer.
"""
import json
import os
import random
import time
import warnings
import zipfile
import zlib

import numpy

import chainer
from chainer.training import extension
from chainer.training import extensions
from chainer.training import trigger as trigger_module

import mn_chainer.fid
import mn_chainer.rundir


def _to_cpu(array):
    return chainer.backend.CpuDevice().send(array)


def _fraction_key(fraction):
    """Formats a fraction of training as it appears in npz keys (``0.2``)."""
    return '{:g}'.format(fraction)


def _is_loading(serializer):
    return isinstance(serializer, chainer.serializer.Deserializer)


def _serialize_json(serializer, key, obj):
    """Saves ``obj`` as JSON bytes, or loads it (None when absent)."""
    if not _is_loading(serializer):
        serializer(key, numpy.frombuffer(
            json.dumps(obj, sort_keys=True).encode('utf-8'), numpy.uint8))
        return obj
    try:
        data = serializer(key, None)
    except KeyError:
        return None
    if data is None:
        return None
    return json.loads(numpy.asarray(data, numpy.uint8).tobytes().decode(
        'utf-8'))


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

    It can also dump the MN links' last mixtures (the paper's Fig. 8) into
    an npz file: the first time training reaches each of ``dump_fractions``
    of its length (e.g. ``(0.2, 0.4, 0.6, 0.8, 1.0)``), and/or whenever
    ``dump_trigger`` fires (e.g. ``(1, 'epoch')``). Each dump of a link
    ``<name>`` is stored under the keys
    ``<name>/<fraction>/weights`` (K_eff,),
    ``<name>/<fraction>/means`` (K_eff, C),
    ``<name>/<fraction>/variances`` (K_eff, C),
    ``<name>/<fraction>/iteration`` and ``<name>/<fraction>/epoch``
    (``epoch_detail`` at the dump), where ``<fraction>`` is the requested
    fraction, or for a triggered dump the fraction of the training length
    reached, formatted with ``'{:g}'`` (``0.2``, ``1``). The key
    ``fractions`` lists them. ``<name>`` may itself contain ``/``; split
    keys from the right.

    The file is rewritten (atomically) after each dump with every dump so
    far, so a run stopped early keeps what it reached. The trainer's
    snapshots record which dumps were made; a resumed run reads their
    arrays back from ``previous_dump`` (by default the file it writes) and
    drops the dumps of a later, abandoned continuation, so the file of a
    resumed run equals that of an uninterrupted one.

    Args:
        target (chainer.Link): The model whose MN links are monitored. The
            links are looked up at every call, so MN links swapped in after
            the extension is built are seen.
        trigger: When to report (a trigger or ``(period, unit)``).
        dump_fractions (sequence of float or None): Fractions of training
            in ``(0, 1]`` at which to dump the mixtures.
        dump_path (str or None): The npz file to write. Relative paths are
            relative to the trainer's output directory; ``None`` means
            ``<trainer.out>/mixtures.npz``.
        total (tuple or None): Length of training as ``(length, unit)``
            with unit ``'epoch'`` or ``'iteration'``. ``None`` takes it from
            the trainer's stop trigger (``get_training_length()``).
        dump_trigger: When to dump (a trigger or ``(period, unit)``), or
            None.
        dump_layers (sequence of str or None): Names of the links to dump
            (default: all).
        previous_dump (str or None): The npz file holding the dumps of the
            run a snapshot was taken from, read once after a resume (the
            attribute ``previous_dump`` may be changed until training
            starts).

    .. seealso::
        :func:`mn_chainer.plot.main` (``effective-k`` and ``mixture``
        commands), which draws Figs. 8 and 9 from these records.

    """

    trigger = 1, 'iteration'
    priority = extension.PRIORITY_WRITER

    def __init__(self, target, trigger=(1, 'epoch'), dump_fractions=None,
                 dump_path=None, total=None, dump_trigger=None,
                 dump_layers=None, previous_dump=None):
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
        self._dump_trigger = None if dump_trigger is None else \
            trigger_module.get_trigger(dump_trigger)
        self._dump_layers = None if dump_layers is None else list(
            dump_layers)
        self._dump_path = dump_path
        self.previous_dump = previous_dump
        if total is not None:
            length, unit = total
            if unit not in ('epoch', 'iteration') or length <= 0:
                raise ValueError(
                    'total must be (length > 0, "epoch" or "iteration"), '
                    'got {!r}'.format(total))
            total = float(length), unit
        self._total = total
        # Dumps so far: dicts with 'fraction' (requested, or None for a
        # triggered dump), 'iteration', 'epoch' and 'mixtures' (name ->
        # (weights, means, variances)); 'mixtures' is None for a dump
        # restored from a snapshot until its arrays are read back.
        self._records = []

    def initialize(self, trainer):
        dumps = self._fractions or self._dump_trigger is not None
        if dumps and self._total is None:
            get_length = getattr(
                trainer.stop_trigger, 'get_training_length', None)
            if get_length is None:
                raise ValueError(
                    'MixtureMonitor cannot tell the training length from '
                    'the stop trigger {!r}; pass total=(length, unit)'
                    .format(trainer.stop_trigger))
            length, unit = get_length()
            self._total = float(length), unit
        if any(r['mixtures'] is None for r in self._records):
            self._read_back(self.previous_dump or self._path(trainer))
            self._write(trainer)

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

    def _position(self, iteration, epoch_detail):
        length, unit = self._total
        if unit == 'epoch':
            return epoch_detail / length
        return iteration / length

    def __call__(self, trainer):
        if self._report_trigger(trainer):
            trainer.observation.update(self.observe())
        updater = trainer.updater
        due = []
        if self._fractions:
            position = self._position(updater.iteration,
                                      updater.epoch_detail)
            done = {r['fraction'] for r in self._records}
            due = [f for f in self._fractions
                   if f not in done and position >= f - 1e-9]
        if self._dump_trigger is not None and self._dump_trigger(trainer):
            due.append(None)
        if due:
            mixtures = self._mixtures()
            for fraction in due:
                self._records.append({
                    'fraction': fraction, 'iteration': updater.iteration,
                    'epoch': updater.epoch_detail, 'mixtures': mixtures})
            self._write(trainer)

    def _mixtures(self):
        mixtures = {}
        for name, link in self._links():
            if self._dump_layers is not None and \
                    name not in self._dump_layers:
                continue
            mixture = link.last_mixture
            if mixture is not None:
                mixtures[name] = tuple(
                    numpy.asarray(_to_cpu(getattr(mixture, field)))
                    for field in ('weights', 'means', 'variances'))
        return mixtures

    def _path(self, trainer):
        if self._dump_path is None:
            return os.path.join(trainer.out, 'mixtures.npz')
        return os.path.join(trainer.out, self._dump_path)

    def _key(self, record):
        if record['fraction'] is not None:
            return record['fraction']
        return self._position(record['iteration'], record['epoch'])

    def _write(self, trainer):
        arrays = {}
        fractions = []
        for record in self._records:
            fraction = self._key(record)
            fractions.append(fraction)
            prefix = '{{}}/{}/'.format(_fraction_key(fraction))
            for name, fields in record['mixtures'].items():
                for field, value in zip(
                        ('weights', 'means', 'variances'), fields):
                    arrays[prefix.format(name) + field] = value
                arrays[prefix.format(name) + 'iteration'] = numpy.asarray(
                    record['iteration'])
                arrays[prefix.format(name) + 'epoch'] = numpy.asarray(
                    record['epoch'])
        arrays['fractions'] = numpy.asarray(sorted(set(fractions)),
                                            dtype=numpy.float64)
        mn_chainer.rundir.write_npz(self._path(trainer), arrays)

    def _read_back(self, path):
        """Fills the arrays of restored dumps from an earlier file."""
        found = {}
        if os.path.isfile(path):
            with numpy.load(path, allow_pickle=False) as npz:
                for key in npz.files:
                    parts = key.rsplit('/', 2)
                    if len(parts) == 3 and parts[2] == 'iteration':
                        name, fraction = parts[:2]
                        fields = tuple(npz['{}/{}/{}'.format(
                            name, fraction, field)] for field in (
                                'weights', 'means', 'variances'))
                        found.setdefault(int(npz[key]), {})[name] = fields
        kept = []
        for record in self._records:
            if record['mixtures'] is None:
                record['mixtures'] = found.get(record['iteration'])
            if record['mixtures'] is not None:
                kept.append(record)
        if len(kept) < len(self._records):
            warnings.warn('{}: {} of the {} mixture dumps recorded in the '
                          'snapshot are missing; they are not rewritten'
                          .format(path, len(self._records) - len(kept),
                                  len(self._records)))
        self._records = kept

    def serialize(self, serializer):
        if hasattr(self._report_trigger, 'serialize'):
            self._report_trigger.serialize(serializer['report_trigger'])
        if hasattr(self._dump_trigger, 'serialize'):
            with warnings.catch_warnings():
                # A snapshot of a run that did not dump: the trigger, called
                # at every iteration, starts from the current one.
                warnings.simplefilter('ignore')
                self._dump_trigger.serialize(serializer['dump_trigger'])
        meta = [{k: r[k] for k in ('fraction', 'iteration', 'epoch')}
                for r in self._records]
        meta = _serialize_json(serializer, 'dumps', meta)
        if _is_loading(serializer) and meta is not None:
            self._records = [dict(m, mixtures=None) for m in meta]


class FIDEvaluator(extension.Extension):

    """Reports ``FID`` of a generator's samples against real statistics.

    Samples are drawn in test mode (``chainer.config.train = False``: batch
    normalization's running averages, Mixture Normalization's queue of
    mixtures) from the same ``z`` at every evaluation. The real statistics
    are read from ``stats_path`` when it exists; otherwise they are computed
    from ``real_images`` at the first evaluation and cached there. See
    :mod:`mn_chainer.fid` for the network and the distance.

    Args:
        gen (chainer.Link): The generator, with ``make_hidden(n, rng)``.
        inception (mn_chainer.fid.InceptionV3FID): Pretrained extractor.
        real_images (numpy.ndarray): ``uint8`` images (N, 3, 32, 32), read
            only on a cache miss.
        stats_path (str): Cache of the real statistics (npz).
        n_samples (int): Generated samples per evaluation.
        batchsize (int): Batch size of generation and feature extraction.
        seed (int): Seed of the evaluation's ``z``.

    Raises:
        mn_chainer.fid.FIDUnavailableError: If ``inception`` has no
            pretrained weights (FID of a random network means nothing).

    """

    trigger = 10000, 'iteration'
    priority = extension.PRIORITY_WRITER

    def __init__(self, gen, inception, real_images, stats_path,
                 n_samples=50000, batchsize=100, seed=0):
        if not inception.pretrained:
            raise mn_chainer.fid.FIDUnavailableError(
                mn_chainer.fid.no_weights_message())
        self.gen = gen
        self.inception = inception
        self.real_images = real_images
        self.stats_path = stats_path
        self.n_samples = n_samples
        self.batchsize = batchsize
        self.seed = seed
        self._real = None

    def real_statistics(self):
        """``(mu, sigma)`` of the real images (cached in ``stats_path``)."""
        if self._real is None:
            images = self.real_images

            def batches():
                for x in mn_chainer.fid.iter_batches(images, self.batchsize):
                    yield x.astype(numpy.float32) / 127.5 - 1

            self._real = mn_chainer.fid.cached_statistics(
                self.inception, batches, self.stats_path,
                source='real training images')
        return self._real

    def _fake_batches(self):
        rng = numpy.random.RandomState(self.seed)
        done = 0
        while done < self.n_samples:
            n = min(self.batchsize, self.n_samples - done)
            z = self.gen.device.send(self.gen.make_hidden(n, rng))
            with chainer.using_config('train', False), \
                    chainer.no_backprop_mode():
                yield self.gen(z).array
            done += n

    def evaluate(self):
        """The FID of ``n_samples`` generated images."""
        mu_real, sigma_real = self.real_statistics()
        features = mn_chainer.fid.extract_features(
            self.inception, self._fake_batches())
        mu, sigma = mn_chainer.fid.compute_statistics(features)
        return mn_chainer.fid.frechet_distance(mu, sigma, mu_real, sigma_real)

    def __call__(self, trainer):
        chainer.report({'FID': self.evaluate()})


def _serialize_numpy_state(serializer, state):
    """Saves or loads a :meth:`numpy.random.RandomState.get_state` tuple."""
    kind, keys, pos, has_gauss, cached = state
    keys = serializer('keys', numpy.asarray(keys).copy())
    pos = serializer('pos', numpy.asarray(pos))
    has_gauss = serializer('has_gauss', numpy.asarray(has_gauss))
    cached = serializer('cached_gaussian', numpy.asarray(cached))
    return (kind, numpy.asarray(keys, dtype=numpy.uint32), int(pos),
            int(has_gauss), float(cached))


def _serialize_python_state(serializer, state):
    """Saves or loads a :func:`random.getstate` tuple."""
    version, internal, gauss_next = state
    internal = serializer('state', numpy.asarray(internal, numpy.uint64))
    gauss = float(serializer('gauss_next', numpy.asarray(
        numpy.nan if gauss_next is None else gauss_next)))
    return (version, tuple(int(v) for v in internal),
            None if numpy.isnan(gauss) else gauss)


class RandomStates(extension.Extension):

    """Keeps random number generators in the trainer's snapshots.

    Chainer's snapshots hold the model, optimizer, iterator positions and
    extension states, but not the generators of the shuffling order and of
    the data augmentation (Python's :mod:`random`, used by ChainerCV's
    transforms). This extension's :meth:`serialize` saves and restores the
    states of Python's :mod:`random`, NumPy's global generator and the
    given generators, so a resumed run continues the same random streams as
    an uninterrupted one.

    Under ChainerMN every worker has its own streams (each worker's
    augmentation is seeded from the seed and its rank) but only worker 0
    writes snapshots. With ``comm``, each call gathers the workers' states
    on worker 0, which saves them (worker ``r`` under ``worker<r>/``); on
    loading, each worker takes its own. The extension must therefore run at
    every snapshot, before it: give it the snapshot's trigger (it runs with
    ``PRIORITY_READER``, before the snapshot's lower priority).

    Args:
        generators (dict): Name -> :class:`numpy.random.RandomState`.
        comm: ChainerMN communicator, or None for one process.
        trigger: The snapshot's trigger.

    """

    priority = extension.PRIORITY_READER

    def __init__(self, generators=None, comm=None, trigger=(1, 'epoch')):
        self._generators = dict(generators or {})
        self._comm = comm
        self.trigger = trigger
        self._gathered = None

    def _get(self):
        return (random.getstate(), numpy.random.get_state(),
                [rng.get_state() for _, rng in self._sorted()])

    def _set(self, states):
        python, global_numpy, own = states
        random.setstate(python)
        numpy.random.set_state(global_numpy)
        for (_, rng), state in zip(self._sorted(), own):
            rng.set_state(state)

    def _sorted(self):
        return sorted(self._generators.items())

    def _serialize_states(self, serializer, states):
        python, global_numpy, own = states
        python = _serialize_python_state(serializer['python'], python)
        global_numpy = _serialize_numpy_state(serializer['numpy'],
                                              global_numpy)
        own = [_serialize_numpy_state(serializer[name], state)
               for (name, _), state in zip(self._sorted(), own)]
        return python, global_numpy, own

    def __call__(self, trainer):
        if self._comm is not None and self._comm.size > 1:
            self._gathered = self._comm.gather_obj(self._get())

    def serialize(self, serializer):
        rank = 0 if self._comm is None else self._comm.rank
        if _is_loading(serializer):
            if rank > 0:
                serializer = serializer['worker{}'.format(rank)]
            self._set(self._serialize_states(serializer, self._get()))
            return
        self._serialize_states(serializer, self._get())
        if self._comm is not None and self._comm.size > 1:
            if self._gathered is None:
                raise RuntimeError(
                    'RandomStates did not run before this snapshot; give '
                    'it the snapshot\'s trigger')
            for r in range(1, self._comm.size):
                self._serialize_states(serializer['worker{}'.format(r)],
                                       self._gathered[r])


class RunRecord(extension.Extension):

    """Keeps a run's settings in its snapshots.

    A resume reads them back with :meth:`read` before it builds anything,
    so that a flag that contradicts the snapshot can be refused (or applied
    and recorded) instead of being recorded and ignored. The extension does
    nothing when called.

    Args:
        settings (dict): JSON-serializable settings (``args.json``).

    """

    trigger = 1, 'epoch'
    priority = extension.PRIORITY_READER
    name = 'run_record'

    def __init__(self, settings):
        self.settings = settings

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        _serialize_json(serializer, 'settings', self.settings)

    @classmethod
    def read(cls, snapshot):
        """The settings recorded in a trainer snapshot file.

        Returns:
            dict or None: None for a snapshot without a record (written
            before the record existed).

        Raises:
            ValueError: If the file is not a readable npz archive (the
                message names it).

        """
        key = 'extensions/{}/settings'.format(cls.name)
        try:
            with numpy.load(snapshot, allow_pickle=False) as npz:
                if key not in npz.files:
                    return None
                data = npz[key]
            return json.loads(data.tobytes().decode('utf-8'))
        except (OSError, ValueError, EOFError, KeyError,
                zipfile.BadZipFile, zlib.error) as e:
            raise ValueError('{} is not a readable trainer snapshot ({}: '
                             '{})'.format(snapshot, type(e).__name__, e))


class PlotReport(extensions.PlotReport):

    """Chainer's :class:`~chainer.training.extensions.PlotReport`, resumable.

    Chainer 7.8.1's ``PlotReport.serialize`` saves the plotted points but
    neither the state of its interval trigger nor the running summary: after
    a resume the fresh trigger fires at the first iteration (a point at the
    epoch of the snapshot, made of one batch of the next epoch) and the next
    point misses that batch. This subclass saves both, so the plots of a
    resumed run equal those of an uninterrupted one. Arguments are those of
    Chainer's class.
    """

    def serialize(self, serializer):
        super(PlotReport, self).serialize(serializer)
        if hasattr(self._trigger, 'serialize'):
            self._trigger.serialize(serializer['_trigger'])
        self._summary.serialize(serializer['_summary'])


#: Environment variable (tests only): seconds the snapshot writer of
#: :func:`snapshot` sleeps after writing a snapshot's temporary file and
#: before moving it in place, so that a test can kill a run mid-snapshot.
SNAPSHOT_DELAY_ENV = 'MN_CHAINER_TEST_SNAPSHOT_DELAY'


def snapshot(filename):
    """The trainers' snapshot extension.

    Chainer's :func:`~chainer.training.extensions.snapshot` with its
    default writer, which saves into a temporary folder of the run
    directory and renames the file: a kill leaves no torn snapshot, only
    the folder, which :func:`mn_chainer.rundir.remove_temporaries` removes
    at the next start.

    Args:
        filename (str): File name template, e.g.
            ``'snapshot_epoch_{.updater.epoch}'``.

    """
    writer = None
    delay = float(os.environ.get(SNAPSHOT_DELAY_ENV) or 0)
    if delay > 0:
        def save_slowly(path, target):
            chainer.serializers.save_npz(path, target)
            time.sleep(delay)
        writer = extensions.snapshot_writers.SimpleWriter(
            savefun=save_slowly)
    return extensions.snapshot(filename=filename, writer=writer)
