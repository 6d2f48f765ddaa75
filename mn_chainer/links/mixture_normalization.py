"""Mixture Normalization layer: a drop-in for ``L.BatchNormalization``."""
import warnings

import numpy

import chainer
from chainer import configuration
import chainer.functions
from chainer import initializers
from chainer import link
from chainer.utils import argument
from chainer.utils import type_check
from chainer import variable

from mn_chainer import gmm
import mn_chainer.functions
from mn_chainer.links import reservoir


# Random streams of a layer besides its training fits (the seed sequence of
# a training fit is ``(seed, n_fits)``; these append a stream id).
_FINETUNE_STREAM = 1
_RESERVOIR_STREAM = 2
_POPULATION_STREAM = 3


def inference_weights(length, decay):
    """Weights ``w_l`` of the queued mixtures (paper Eq. 39).

    ``w_l = decay**(L-l) * (1-decay) / (1-decay**L)`` for ``l = 1..L``,
    oldest first (``l = L`` is the newest); they sum to one.

    Args:
        length (int): Number of queued mixtures ``L`` (``>= 1``).
        decay (float): ``lambda`` in ``(0, 1)``.

    Returns:
        numpy.ndarray: float64 weights, shape ``(L,)``.
    """
    exponents = numpy.arange(length - 1, -1, -1, dtype=numpy.float64)
    return decay ** exponents * (1 - decay) / (1 - decay ** length)


def _check_positive_int(name, value):
    if (isinstance(value, bool)
            or not isinstance(value, (int, numpy.integer)) or value < 1):
        raise ValueError('{} must be a positive integer, got {!r}'.format(
            name, value))
    return int(value)


def _as_shape(size):
    """``size`` (int or tuple of ints) as a tuple of positive ints."""
    shape = (size,) if isinstance(size, (int, numpy.integer)) else size
    try:
        return tuple(_check_positive_int('size', s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError('size must be a positive int or a tuple of them, '
                         'got {!r}'.format(size))


def _as_axis(axis):
    """``axis`` (None, int or ascending tuple of ints) as a tuple."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, numpy.integer)) else axis
    try:
        axes = tuple(axes)
    except TypeError:
        axes = ()
    if (not axes or any(isinstance(a, bool) or not isinstance(
            a, (int, numpy.integer)) or a < 0 for a in axes)
            or any(a >= b for a, b in zip(axes, axes[1:]))):
        raise ValueError('axis must be a non-negative int or a tuple of them '
                         'in ascending order, got {!r}'.format(axis))
    return tuple(int(a) for a in axes)


class _Layout(object):
    """How an input maps to points: the canonical view ``(N', d, *S)``.

    The axes in ``point_axes`` index the points and the other axes (the
    *feature axes*) form each point's channel vector, as ``axis`` does for
    :class:`~chainer.links.BatchNormalization`.  The link normalizes a view
    whose axis 1 holds the ``d`` channels and whose other axes index the
    points: ``x`` itself for the usual ``(N, C, *spatial)`` input, a reshape
    when the feature axes are ``1 .. f``, else a transpose to
    ``(points, features)`` flattened to ``(m, d)``.
    """

    def __init__(self, shape, point_axes):
        ndim = len(shape)
        self.shape = tuple(shape)
        self.point_axes = point_axes
        self.feature_axes = tuple(i for i in range(ndim)
                                  if i not in point_axes)
        self.feature_shape = tuple(shape[i] for i in self.feature_axes)
        self.n_points = int(numpy.prod([shape[i] for i in point_axes],
                                       dtype=numpy.int64))
        self.size = int(numpy.prod(self.feature_shape, dtype=numpy.int64))
        f = len(self.feature_axes)
        self._contiguous = self.feature_axes == tuple(range(1, 1 + f))
        self._perm = point_axes + self.feature_axes
        if self.feature_axes == (1,):
            self.canonical_shape = self.shape
        elif self._contiguous:
            self.canonical_shape = ((shape[0], self.size)
                                    + self.shape[1 + f:])
        else:
            self.canonical_shape = (self.n_points, self.size)

    def to_canonical(self, x):
        """``x`` (array or Variable) in the canonical view."""
        if self.canonical_shape == self.shape:
            return x
        if not self._contiguous:
            x = chainer.functions.transpose(x, self._perm)
        return chainer.functions.reshape(x, self.canonical_shape)

    def from_canonical(self, y):
        """Inverse of :meth:`to_canonical`."""
        if self.canonical_shape == self.shape:
            return y
        if self._contiguous:
            return chainer.functions.reshape(y, self.shape)
        y = chainer.functions.reshape(
            y, tuple(self.shape[i] for i in self._perm))
        return chainer.functions.transpose(
            y, tuple(int(i) for i in numpy.argsort(self._perm)))


class MixtureNormalization(link.Link):

    """Mixture normalization layer on outputs of linear or conv functions.

    A drop-in replacement for :class:`chainer.links.BatchNormalization`
    that normalizes every activation vector by the statistics of the
    Gaussian mixture components it belongs to (Kalayeh & Shah, paper
    Eqs. 34-37, or Eq. 40 with ``relu=True``).  The points are the channel
    vectors ``x[n, :, h, w]`` (in general: the axes in ``axis`` index the
    points, the others form the channel vector, as for BN); one diagonal
    mixture with ``n_components`` components is fitted to them per training
    mini-batch, outside the graph (:func:`mn_chainer.gmm.fit_gmm`: K-means++
    seeding, K-means and EM steps, pruning of components lighter than
    ``min_weight``).  With ``n_components=1`` it is batch normalization in
    training mode.

    It runs in three modes, like BN:

    * **Training** (``chainer.config.train`` True): fit the mixture to this
      mini-batch, normalize with the ``tau``-weighted component statistics
      (:func:`mn_chainer.functions.mixture_normalization`), and push those
      statistics ``(pi, mean, var)`` onto a queue of the last
      ``queue_size`` mixtures (never the activations themselves).  A
      training step discards the population mixture (below).
    * **Fine-tuning** (training mode, called with ``finetune=True``, after
      :meth:`start_finetuning`): normalize as in training, but leave the
      queue alone and add the batch's points to a seeded reservoir sample
      of at most ``population_sample_size`` points
      (:class:`~mn_chainer.links.reservoir.Reservoir`).  When test mode
      first needs it (or :meth:`fit_population` is called) one *population
      mixture* is fitted to that sample, with ``population_em_iter``
      K-means plus EM iterations, and its ``tau``-weighted statistics
      replace the queue in test mode until the next training step without
      ``finetune`` or the next :meth:`start_finetuning`.  This is the analog
      of BN's population statistics.
    * **Testing** (``chainer.config.train`` False): each point is normalized
      under every queued mixture with its posterior under that mixture, and
      the results are averaged with weights
      ``w_l = decay**(L-l) (1-decay) / (1-decay**L)`` (Eqs. 38-39; ``l = L``
      is the newest); with a population mixture, under that one mixture
      alone (Eqs. 38-39 with one entry, ``w = 1``).  The posterior uses the
      variances plus ``eps``.  Before any training step the layer behaves
      like a fresh :class:`~chainer.links.BatchNormalization` in test mode
      (mean 0, variance 1), rectified when ``relu`` is True.

    What differs from BN: test mode averages the *outputs* of the queued
    normalizations (each with its own posterior) rather than normalizing
    with running averages; the component variances are the biased
    (responsibility-weighted) batch variances, where BN's running variance
    is unbiased; there is no ``avg_mean``/``avg_var`` (hence no
    ``initial_avg_mean``/``initial_avg_var``).

    The queue, its length, the fit counter, the seed and the population
    mixture are serialized, so :func:`chainer.serializers.save_npz` and
    :func:`~chainer.serializers.load_npz` round-trip a trained (and
    fine-tuned) layer and resumed training draws the same random numbers.
    The reservoir sample itself is not saved (up to
    ``population_sample_size * C`` values): saving fits the population
    mixture first, and fine-tuning a loaded layer starts a new sample.

    Args:
        size (int, tuple of ints or None): Channels ``C`` (or the shape of
            the channel axes, as for BN); None infers it from the first
            input.
        decay (float): ``lambda`` of the inference weights (Eq. 39), in
            ``(0, 1)``; BN's moving-average decay has the same position.
        eps (float): Added to the variances for numerical stability.
        dtype: Parameter dtype (float16 maps to float32, like BN).
        use_gamma (bool): Learn the scale ``gamma`` (else fixed to 1).
        use_beta (bool): Learn the shift ``beta`` (else fixed to 0).
        initial_gamma: Initializer of ``gamma`` (default 1).
        initial_beta: Initializer of ``beta`` (default 0).
        axis (int, tuple of ints or None): Axes that index the points (in
            ascending order); the remaining axes form the channel vector.
            None: every axis but axis 1 (and, when ``size`` is a tuple of
            length ``f``, but axes ``1 .. f``), as for BN.
        initial_avg_mean: Accepted for BN's signature only; must be None
            (MN keeps no running mean; a value raises ValueError).
        initial_avg_var: Likewise (no running variance).
        n_components (int): Number of mixture components ``K``
            (keyword-only, like every argument below).
        em_iter (int): The paper's "EM iter." (K-means plus EM iterations,
            split evenly; see :func:`mn_chainer.gmm.split_em_iter`).
        kmeans_iters (int): Overrides the K-means share of ``em_iter``.
        em_iters (int): Overrides the EM share of ``em_iter``.
        n_trials (int): K-means++ candidates per centre (default
            ``2 + floor(ln K)``).
        sample_ratio (float): Fraction of the points the mixture is fitted
            on (paper: 25% or more is accurate enough).
        min_weight (float): Components lighter than this are dropped.
        reg_covar (float): Variance floor of the fit.
        relu (bool): Rectify per component (Eq. 40) — use where the layer
            is followed by a ReLU, as the paper's models do.
        queue_size (int): ``L``, the number of mixtures kept for inference.
        seed (int or None): Seed of the layer's fits; None draws one from
            NumPy's global generator (so ``numpy.random.seed`` fixes it).
        population_sample_size (int): Most points kept from the finetune
            batches for the population mixture.
        population_em_iter (int): "EM iter." of the population fit (split
            evenly between K-means and EM like ``em_iter``).

    Attributes:
        gamma (~chainer.Parameter): Scaling parameter.
        beta (~chainer.Parameter): Shifting parameter.
        queue_weights, queue_means, queue_variances: The queued mixtures,
            oldest first, shapes ``(L, K)``, ``(L, K, C)``, ``(L, K, C)``;
            pruned components have weight 0.
        queue_length (int): Number of valid queue entries.
        n_fits (int): Number of mixtures fitted in training so far.
        population_weights, population_means, population_variances: The
            population mixture, shapes ``(K,)``, ``(K, C)``, ``(K, C)``
            (pruned components have weight 0); valid when
            ``population_points > 0``.
        population_points (int): Size of the sample the population mixture
            was fitted to (0: no population mixture).
        last_mixture (~mn_chainer.gmm.Mixture): The statistics used to
            normalize the last training batch (pruned components removed),
            or None before training.
        effective_k (int): Number of components of ``last_mixture``
            (0 before training).
        layer_name (str): Name used in error messages (set by
            :func:`replace_batch_normalization`).

    .. seealso:: :func:`mn_chainer.functions.mixture_normalization`,
        :func:`mn_chainer.links.finetune`
    """

    gamma = None
    beta = None
    layer_name = None

    def __init__(self, size=None, decay=0.9, eps=2e-5, dtype=None,
                 use_gamma=True, use_beta=True, initial_gamma=None,
                 initial_beta=None, axis=None, initial_avg_mean=None,
                 initial_avg_var=None, *, n_components=3, em_iter=2,
                 kmeans_iters=None, em_iters=None, n_trials=None,
                 sample_ratio=1.0, min_weight=0.01, reg_covar=1e-6,
                 relu=False, queue_size=10, seed=None,
                 population_sample_size=65536, population_em_iter=20):
        super(MixtureNormalization, self).__init__()
        for name, value in (('initial_avg_mean', initial_avg_mean),
                            ('initial_avg_var', initial_avg_var)):
            if value is not None:
                raise ValueError(
                    'MixtureNormalization keeps no running mean or '
                    'variance (test mode uses the queue of mixtures, paper '
                    'Eqs. 38-39, or the population mixture): {} must be '
                    'None'.format(name))
        default_kmeans, default_em = gmm.split_em_iter(em_iter)
        self.kmeans_iters, self.em_iters, _ = gmm.check_fit_settings(
            n_components,
            default_kmeans if kmeans_iters is None else kmeans_iters,
            default_em if em_iters is None else em_iters, n_trials,
            sample_ratio, min_weight, reg_covar)
        self.population_kmeans_iters, self.population_em_iters = \
            gmm.split_em_iter(_check_positive_int('population_em_iter',
                                                  population_em_iter))
        if not 0 < decay < 1:
            raise ValueError('decay must be in (0, 1), got {!r}'.format(decay))
        if not eps > 0:
            raise ValueError('eps must be positive, got {!r}'.format(eps))
        self.n_components = int(n_components)
        self.decay = float(decay)
        self.eps = float(eps)
        self.axis = _as_axis(axis)
        self.n_trials = n_trials
        self.sample_ratio = float(sample_ratio)
        self.min_weight = float(min_weight)
        self.reg_covar = float(reg_covar)
        self.relu = bool(relu)
        self.queue_size = _check_positive_int('queue_size', queue_size)
        self.population_sample_size = _check_positive_int(
            'population_sample_size', population_sample_size)
        self._highprec_dtype = chainer.get_dtype(
            dtype, map_mixed16=numpy.float32)
        self._feature_shape = None if size is None else _as_shape(size)
        self._rng = None
        self._last_tau = None
        self._fit_shift = None  # origin of the transform's sums (_fit)
        self.last_mixture = None
        self._reservoir = None
        self._population_stale = False
        self._n_finetune_batches = 0

        self.queue_weights = None
        self.queue_means = None
        self.queue_variances = None
        self.register_persistent('queue_weights')
        self.register_persistent('queue_means')
        self.register_persistent('queue_variances')
        self.queue_length = 0
        self.register_persistent('queue_length')
        self.n_fits = 0
        self.register_persistent('n_fits')
        if seed is None:
            seed = numpy.random.randint(0, 2 ** 31 - 1)
        self.seed = int(seed)
        self.register_persistent('seed')
        # Serialized by serialize() (older files lack them).
        self.population_weights = None
        self.population_means = None
        self.population_variances = None
        self.population_points = 0

        with self.init_scope():
            if use_gamma:
                if initial_gamma is None:
                    initial_gamma = 1
                gamma_initializer = initializers._get_initializer(
                    initial_gamma)
                gamma_initializer.dtype = self._highprec_dtype
                self.gamma = variable.Parameter(gamma_initializer)
            if use_beta:
                if initial_beta is None:
                    initial_beta = 0
                beta_initializer = initializers._get_initializer(initial_beta)
                beta_initializer.dtype = self._highprec_dtype
                self.beta = variable.Parameter(beta_initializer)

        if self._feature_shape is not None:
            self._initialize_params(self._feature_shape)

    # -- state ------------------------------------------------------------

    @property
    def size(self):
        """Channels ``C`` of a point (None before lazy initialization)."""
        if self.queue_means is None:
            return None
        return int(self.queue_means.shape[2])

    @property
    def effective_k(self):
        """Components kept in the last training fit (0 before training)."""
        if self.last_mixture is None:
            return 0
        return self.last_mixture.n_components

    @property
    def printable_specs(self):
        specs = [('size', self.size), ('decay', self.decay),
                 ('eps', self.eps), ('dtype', self._highprec_dtype),
                 ('use_gamma', self.gamma is not None),
                 ('use_beta', self.beta is not None),
                 ('n_components', self.n_components),
                 ('relu', self.relu)]
        for spec in specs:
            yield spec

    def _initialize_params(self, feature_shape):
        self._feature_shape = tuple(feature_shape)
        size = int(numpy.prod(feature_shape, dtype=numpy.int64))
        xp = self.xp
        dtype = self._highprec_dtype
        length, k = self.queue_size, self.n_components
        with chainer.using_device(self.device):
            self.queue_weights = xp.zeros((length, k), dtype=dtype)
            self.queue_means = xp.zeros((length, k, size), dtype=dtype)
            self.queue_variances = xp.ones((length, k, size), dtype=dtype)
        self._allocate_population(size)
        if self.gamma is not None:
            self.gamma.initialize(self._feature_shape)
        if self.beta is not None:
            self.beta.initialize(self._feature_shape)

    def _allocate_population(self, size):
        xp = self.xp
        dtype = self._highprec_dtype
        k = self.n_components
        with chainer.using_device(self.device):
            self.population_weights = xp.zeros((k,), dtype=dtype)
            self.population_means = xp.zeros((k, size), dtype=dtype)
            self.population_variances = xp.ones((k, size), dtype=dtype)

    def reseed(self, seed):
        """Set the seed of the layer's mixture fits and restart its stream."""
        self.seed = int(seed)
        self.n_fits = 0

    def _rng_for(self, *stream):
        """The layer's generator, seeded from ``(seed,) + stream``."""
        xp = self.xp
        if self._rng is None or not isinstance(self._rng,
                                               xp.random.RandomState):
            self._rng = xp.random.RandomState(0)
        state = numpy.random.SeedSequence((self.seed,) + stream)
        self._rng.seed(int(state.generate_state(1)[0]))
        return self._rng

    def _next_rng(self):
        rng = self._rng_for(self.n_fits)
        self.n_fits += 1
        return rng

    def _reducer(self):
        """Sums statistics over data-parallel workers (None: local batch)."""
        return None

    def _name(self):
        return self.layer_name or self.name or type(self).__name__

    def device_resident_accept(self, visitor):
        super(MixtureNormalization, self).device_resident_accept(visitor)
        # The state outside the registered persistents moves along.
        for name in self._POPULATION_KEYS + ('_last_tau',):
            array = getattr(self, name)
            if isinstance(array, chainer.get_array_types()):
                setattr(self, name, visitor.visit_array(array))
        if self._reservoir is not None and self._reservoir.sample is not None:
            self._reservoir.sample = visitor.visit_array(
                self._reservoir.sample)
        self._rng = None

    # -- serialization ----------------------------------------------------

    _POPULATION_KEYS = ('population_weights', 'population_means',
                        'population_variances')

    def serialize(self, serializer):
        loading = isinstance(serializer, chainer.serializer.Deserializer)
        if loading:
            self._check_saved_queue(serializer)
        else:
            self.fit_population()  # save what test mode would use
        super(MixtureNormalization, self).serialize(serializer)
        if loading and self.queue_means is not None:
            self._adopt_loaded_arrays()
        self._serialize_population(serializer, loading)

    def _check_saved_queue(self, serializer):
        try:
            saved = serializer('queue_means', None)
        except KeyError:
            return
        if saved is None:
            return
        saved = tuple(saved.shape)
        if self.queue_means is not None:
            expected = tuple(self.queue_means.shape)
            matches = saved == expected
        else:
            # An unsized layer adopts the saved channels, not another K or L.
            expected = (self.queue_size, self.n_components, 'C')
            matches = len(saved) == 3 and saved[:2] == expected[:2]
        if not matches:
            raise ValueError(
                'MixtureNormalization {!r}: the saved queue has shape {} '
                '(queue_size, n_components, channels) but this layer has {}'
                .format(self._name(), saved, expected))

    def _adopt_loaded_arrays(self):
        # An unsized layer receives the file's (host) arrays and shapes: move
        # them to the layer's device and size the rest of its state.
        for name in ('queue_weights', 'queue_means', 'queue_variances'):
            setattr(self, name, self.device.send(getattr(self, name)))
        if self._feature_shape is None:
            self._feature_shape = (
                tuple(self.gamma.shape) if self.gamma is not None
                and self.gamma.array is not None else (self.size,))
            self._allocate_population(self.size)

    def _serialize_population(self, serializer, loading):
        if self.population_means is None:
            return
        try:
            points = serializer('population_points', self.population_points)
            for name in self._POPULATION_KEYS:
                serializer(name, getattr(self, name))
        except KeyError:  # saved before the population mixture existed
            points = 0
        if loading:
            self.population_points = int(points)
            self._reservoir = None
            self._population_stale = False

    # -- input ------------------------------------------------------------

    def _invalid(self, expect, actual, problem):
        return type_check.InvalidType(
            expect, actual, 'MixtureNormalization {!r}: {}'.format(
                self._name(), problem))

    def _layout(self, x):
        """Check ``x`` (a raw array) and return its :class:`_Layout`."""
        if x.dtype.kind != 'f':
            raise self._invalid(
                'x.dtype.kind == f', x.dtype,
                'input must be floating point, got dtype {}'.format(x.dtype))
        f = 1 if self._feature_shape is None else len(self._feature_shape)
        if self.axis is None:
            if x.ndim < 1 + f:
                raise self._invalid(
                    'x.ndim >= {}'.format(1 + f), x.ndim,
                    'input must have shape (N, C, *spatial), got shape '
                    '{}'.format(x.shape))
            point_axes = (0,) + tuple(range(1 + f, x.ndim))
        else:
            if self.axis[-1] >= x.ndim or len(self.axis) == x.ndim:
                raise self._invalid(
                    'max(axis) < x.ndim > len(axis)', x.ndim,
                    'axis={} needs an input with more than {} dimensions '
                    '(the others form the channel vector), got shape {}'
                    .format(self.axis, max(len(self.axis), self.axis[-1]),
                            x.shape))
            point_axes = self.axis
        layout = _Layout(x.shape, point_axes)
        if (self._feature_shape is not None
                and layout.feature_shape != self._feature_shape):
            expected = ('{} channels'.format(self._feature_shape[0])
                        if f == 1 else 'channel shape {}'.format(
                            self._feature_shape))
            raise self._invalid(
                'x.shape[channel axes] == {}'.format(self._feature_shape),
                layout.feature_shape,
                'expected {}, got input of shape {}'.format(
                    expected, x.shape))
        return layout

    def _parameters(self, size):
        """``gamma`` and ``beta`` as ``(C,)`` (flattened channel shape)."""
        xp = self.xp
        out = []
        for param, fill in ((self.gamma, 1), (self.beta, 0)):
            if param is None:
                with chainer.using_device(self.device):
                    param = xp.full(size, fill, dtype=self._highprec_dtype)
            elif param.ndim != 1:
                param = chainer.functions.reshape(param, (size,))
            out.append(param)
        return out

    # -- forward ----------------------------------------------------------

    def forward(self, x, **kwargs):
        """forward(self, x, finetune=False)

        Normalize ``x`` (see the class docstring for the three modes).

        Args:
            x (~chainer.Variable or :ref:`ndarray`): Input; by default of
                shape ``(N, C, *spatial)``.
            finetune (bool): In training mode, normalize as in training but
                collect the points for the population mixture instead of
                updating the queue (ignored in test mode), as BN's
                ``finetune`` does.

        Returns:
            ~chainer.Variable: Output of the shape and dtype of ``x``.
        """
        finetune, = argument.parse_kwargs(
            kwargs, ('finetune', False),
            test='test argument is not supported anymore. '
                 'Use chainer.using_config')
        x_array = x.array if isinstance(x, variable.Variable) else x
        layout = self._layout(x_array)
        if self.queue_means is None:
            self._initialize_params(layout.feature_shape)
        xc = layout.to_canonical(x)
        xc_array = xc.array if isinstance(xc, variable.Variable) else xc
        gamma, beta = self._parameters(layout.size)
        if configuration.config.train:
            y = self._forward_train(xc, xc_array, gamma, beta, finetune,
                                    layout.n_points)
        else:
            y = self._forward_test(xc, xc_array, gamma, beta)
        return layout.from_canonical(y)

    def _fit(self, x_array, rng):
        """Fit the mixture of this batch; returns ``tau (N, K_eff, ...)``.

        Also sets ``_fit_shift``, the fitted mixture's
        :func:`~mn_chainer.functions.statistics_shift`: the origin about
        which the transform sums this batch's statistics, the same on every
        worker (accurate far from zero in float32, in one all-reduce).
        """
        points = gmm.to_points(x_array)
        if points.shape[0] < self.n_components:
            raise ValueError(
                'MixtureNormalization {!r}: the batch has {} points '
                '(N*H*W) but n_components={}; use a larger batch or fewer '
                'components'.format(self._name(), points.shape[0],
                                    self.n_components))
        try:
            mixture, resp = gmm.fit_gmm(
                points, self.n_components, kmeans_iters=self.kmeans_iters,
                em_iters=self.em_iters, n_trials=self.n_trials,
                sample_ratio=self.sample_ratio, min_weight=self.min_weight,
                reg_covar=self.reg_covar, rng=rng,
                return_posterior=True, reducer=self._reducer())
        except gmm.NonFiniteError as e:
            raise gmm.NonFiniteError(
                'MixtureNormalization {!r}: {}, in the input of shape {}'
                .format(self._name(), e, x_array.shape)) from e
        self._fit_shift = mn_chainer.functions.statistics_shift(
            mixture.weights, mixture.means, mixture.variances, self.eps)
        return gmm.from_points(resp.astype(points.dtype, copy=False),
                               x_array.shape)

    def _forward_train(self, x, x_array, gamma, beta, finetune, n_points):
        if n_points == 1:
            warnings.warn(
                'MixtureNormalization {!r}: a batch with no more than one '
                'point has been given in training mode; the layer will '
                'always output beta for such batches. This could be caused '
                'by incorrect configuration in your code (such as running '
                'evaluation while chainer.config.train=True), but could '
                'also happen in the last batch of training if a '
                'non-repeating iterator is used.'.format(self._name()),
                UserWarning)
        recomputing = configuration.config.in_recomputing
        if recomputing and self._last_tau is not None:
            tau = self._last_tau  # same normalization, no second fit
        elif finetune:
            tau = self._fit(x_array, self._rng_for(
                self.n_fits, _FINETUNE_STREAM, self._n_finetune_batches))
        else:
            tau = self._fit(x_array, self._next_rng())
        node = mn_chainer.functions.MixtureNormalization(
            self.eps, self.relu, self._reducer(), self._fit_shift)
        y, = node.apply((x, tau, gamma, beta))
        if not recomputing:
            self._last_tau = tau
            if finetune:
                self._collect(x_array)
            else:
                self._discard_population()
                self._push(node.pi, node.mean, node.var)
        return y

    def _push(self, weights, means, variances):
        self.last_mixture = gmm.Mixture(weights, means, variances)
        if self.queue_length == self.queue_size:
            for name in ('queue_weights', 'queue_means', 'queue_variances'):
                array = getattr(self, name)
                array[:-1] = array[1:].copy()
            position = self.queue_size - 1
        else:
            position = self.queue_length
            self.queue_length += 1
        self._store((self.queue_weights[position],
                     self.queue_means[position],
                     self.queue_variances[position]),
                    weights, means, variances)

    @staticmethod
    def _store(slots, weights, means, variances):
        """Write a pruned mixture into fixed-K arrays (absent: weight 0)."""
        slot_weights, slot_means, slot_variances = slots
        k_eff = weights.shape[0]
        slot_weights[...] = 0
        slot_means[...] = 0
        slot_variances[...] = 1
        dtype = slot_weights.dtype
        slot_weights[:k_eff] = weights.astype(dtype)
        slot_means[:k_eff] = means.astype(dtype)
        slot_variances[:k_eff] = variances.astype(dtype)

    # -- population statistics (fine-tuning) -------------------------------

    def start_finetuning(self):
        """Start a new population sample (and drop the population mixture).

        Like :meth:`chainer.links.BatchNormalization.start_finetuning`: can
        be skipped the first time, must be called before fine-tuning again.
        Until the next ``finetune`` batch, test mode uses the queue.
        """
        self._discard_population()
        reducer = self._reducer()
        rank = 0 if reducer is None else reducer.rank
        self._reservoir = reservoir.Reservoir(
            self.population_sample_size,
            int(numpy.random.SeedSequence(
                (self.seed, self.n_fits, _RESERVOIR_STREAM, rank))
                .generate_state(1)[0]))
        self._n_finetune_batches = 0

    def _discard_population(self):
        self._reservoir = None
        self._population_stale = False
        self.population_points = 0

    def _collect(self, x_array):
        if self._reservoir is None:
            self.start_finetuning()
        points = gmm.to_points(x_array)
        if points.dtype == numpy.float16:
            points = points.astype(numpy.float32)
        self._reservoir.add(points)
        self._n_finetune_batches += 1
        self._population_stale = True

    def fit_population(self):
        """The population mixture, fitted first if new points arrived.

        Fits one mixture to the reservoir sample of the finetune batches
        (``population_em_iter`` K-means plus EM iterations) and keeps its
        ``tau``-weighted statistics, computed as a training step computes
        the statistics it normalizes with.  With a ChainerMN link every
        worker must call it (:func:`mn_chainer.links.finetune` does).

        Returns:
            ~mn_chainer.gmm.Mixture: ``(weights, means, variances)`` with
            the pruned components removed, or None when there is no
            population mixture (test mode then uses the queue).
        """
        if self._population_stale:
            self._fit_population(self._reservoir.sample)
            self._population_stale = False
        if self.population_points == 0:
            return None
        present = self.population_weights > 0
        return gmm.Mixture(self.population_weights[present],
                           self.population_means[present],
                           self.population_variances[present])

    def _fit_population(self, sample):
        if sample.shape[0] < self.n_components:
            raise ValueError(
                'MixtureNormalization {!r}: the finetune batches gave {} '
                'points but n_components={}'.format(
                    self._name(), sample.shape[0], self.n_components))
        reducer = self._reducer()
        _, resp = gmm.fit_gmm(
            sample, self.n_components,
            kmeans_iters=self.population_kmeans_iters,
            em_iters=self.population_em_iters, n_trials=self.n_trials,
            min_weight=self.min_weight, reg_covar=self.reg_covar,
            rng=self._rng_for(self.n_fits, _POPULATION_STREAM),
            return_posterior=True, reducer=reducer)
        size = sample.shape[1]
        gamma, beta = (self.xp.full(size, v, dtype=sample.dtype)
                       for v in (1, 0))
        node = mn_chainer.functions.MixtureNormalization(
            self.eps, self.relu, reducer)
        with chainer.no_backprop_mode():
            node.apply((sample, resp.astype(sample.dtype, copy=False),
                        gamma, beta))
        self._store((self.population_weights, self.population_means,
                     self.population_variances), node.pi, node.mean,
                    node.var)
        self.population_points = int(round(float(node.s.sum())))

    # -- inference --------------------------------------------------------

    def _forward_test(self, x, x_array, gamma, beta):
        xp = self.xp
        if self.fit_population() is None and self.queue_length == 0:
            size = x_array.shape[1]
            y = chainer.functions.fixed_batch_normalization(
                x, gamma, beta, xp.zeros(size, dtype=self._highprec_dtype),
                xp.ones(size, dtype=self._highprec_dtype), self.eps)
            return chainer.functions.relu(y) if self.relu else y
        coefficients, means, variances = self.inference_components(x_array)
        return mn_chainer.functions.fixed_mixture_normalization(
            x, coefficients, gamma, beta, means, variances, self.eps,
            self.relu)

    def inference_components(self, x_array):
        """Components and per-point coefficients of the inference rule.

        For every mixture ``l`` that test mode uses (the population mixture
        alone when there is one, ``w = 1``; else the queued mixtures,
        weighted by :func:`inference_weights`), the posterior ``tau^l`` of
        each point is computed under that mixture (variances plus ``eps``);
        the coefficients are ``w_l tau^l_ik / sqrt(pi^l_k)`` (Eqs. 38-39).

        Args:
            x_array: Input in the canonical view ``(N, C, *spatial)``.

        Returns:
            tuple: ``coefficients (N, L*K, *spatial)``, ``means (L*K, C)``,
            ``variances (L*K, C)``.
        """
        if self.fit_population() is not None:
            return self._components(
                x_array, self.population_weights[None],
                self.population_means[None], self.population_variances[None],
                numpy.ones(1))
        length = self.queue_length
        # Valid entries are always [0, queue_length), oldest first.
        return self._components(
            x_array, self.queue_weights[:length], self.queue_means[:length],
            self.queue_variances[:length],
            inference_weights(length, self.decay))

    def _components(self, x_array, weights, means, variances, entry_weights):
        xp = self.xp
        length, k = weights.shape
        dtype = numpy.float32 if x_array.dtype == numpy.float16 \
            else x_array.dtype
        weights = weights.astype(dtype)
        means = means.astype(dtype)
        variances = variances.astype(dtype)
        points = gmm.to_points(x_array).astype(dtype, copy=False)
        if not bool(xp.isfinite(points).all()):
            raise ValueError(
                'MixtureNormalization {!r}: non-finite activations (NaN or '
                'Inf) in the input of shape {}'.format(self._name(),
                                                       x_array.shape))
        # One common shift for every mixture (posteriors do not change
        # under a common translation): one pass, not one per entry.
        points, newest = gmm.centre(points, gmm.Mixture(
            weights[-1], means[-1], variances[-1]))
        shift = means[-1] - newest.means
        resp = xp.stack([gmm.posterior(points, gmm.Mixture(
            weights[entry], means[entry] - shift, variances[entry] + self.eps),
            check_finite=False) for entry in range(length)], axis=1)
        present = weights > 0
        scale = xp.where(present, 1 / xp.sqrt(xp.where(present, weights, 1)),
                         0)
        w = xp.asarray(entry_weights, dtype=dtype)
        resp *= (w[:, None] * scale)[None]
        coefficients = gmm.from_points(resp.reshape(-1, length * k),
                                       x_array.shape)
        return (coefficients, means.reshape(length * k, -1),
                variances.reshape(length * k, -1))
