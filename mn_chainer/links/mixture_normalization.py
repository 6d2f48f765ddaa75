"""Mixture Normalization layer: a drop-in for ``L.BatchNormalization``."""
import numpy

import chainer
from chainer import configuration
from chainer import initializers
from chainer import link
import chainer.functions
from chainer import variable

from mn_chainer import gmm
import mn_chainer.functions


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


class MixtureNormalization(link.Link):

    """Mixture normalization layer on outputs of linear or conv functions.

    A drop-in replacement for :class:`chainer.links.BatchNormalization`
    that normalizes every activation vector by the statistics of the
    Gaussian mixture components it belongs to (Kalayeh & Shah, paper
    Eqs. 34-37, or Eq. 40 with ``relu=True``).  The points are the channel
    vectors ``x[n, :, h, w]``; one diagonal mixture with ``n_components``
    components is fitted to them per training mini-batch, outside the graph
    (:func:`mn_chainer.gmm.fit_gmm`: K-means++ seeding, K-means and EM steps,
    pruning of components lighter than ``min_weight``).

    It runs in two modes, switched by ``chainer.config.train``:

    * **Training**: fit the mixture to this mini-batch, normalize with the
      ``tau``-weighted component statistics
      (:func:`mn_chainer.functions.mixture_normalization`), and push those
      statistics ``(pi, mean, var)`` onto a queue of the last
      ``queue_size`` mixtures (never the activations themselves).
    * **Testing**: each point is normalized under every queued mixture with
      its posterior under that mixture, and the results are averaged with
      weights ``w_l = decay**(L-l) (1-decay) / (1-decay**L)`` (Eqs. 38-39;
      ``l = L`` is the newest).  The posterior uses the queued variances
      plus ``eps``.  Before any training step the layer behaves like a
      fresh :class:`~chainer.links.BatchNormalization` in test mode (mean
      0, variance 1), rectified when ``relu`` is True.

    The queue, its length, the fit counter and the seed are persistent
    values, so :func:`chainer.serializers.save_npz` and
    :func:`~chainer.serializers.load_npz` round-trip a trained layer and
    resumed training draws the same random numbers.

    Args:
        size (int or None): Number of channels ``C``; None infers it from
            the first input.
        n_components (int): Number of mixture components ``K``.
        decay (float): ``lambda`` of the inference weights (Eq. 39).
        eps (float): Added to the variances for numerical stability.
        dtype: Parameter dtype (float16 maps to float32, like BN).
        use_gamma (bool): Learn the scale ``gamma`` (else fixed to 1).
        use_beta (bool): Learn the shift ``beta`` (else fixed to 0).
        initial_gamma: Initializer of ``gamma`` (default 1).
        initial_beta: Initializer of ``beta`` (default 0).
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

    Attributes:
        gamma (~chainer.Parameter): Scaling parameter.
        beta (~chainer.Parameter): Shifting parameter.
        queue_weights, queue_means, queue_variances: The queued mixtures,
            oldest first, shapes ``(L, K)``, ``(L, K, C)``, ``(L, K, C)``;
            pruned components have weight 0.
        queue_length (int): Number of valid queue entries.
        n_fits (int): Number of mixtures fitted so far.
        last_mixture (~mn_chainer.gmm.Mixture): The statistics used to
            normalize the last training batch (pruned components removed),
            or None before training.
        effective_k (int): Number of components of ``last_mixture``
            (0 before training).
        layer_name (str): Name used in error messages (set by
            :func:`replace_batch_normalization`).

    .. seealso:: :func:`mn_chainer.functions.mixture_normalization`
    """

    gamma = None
    beta = None
    layer_name = None

    def __init__(self, size=None, n_components=3, decay=0.9, eps=2e-5,
                 dtype=None, use_gamma=True, use_beta=True,
                 initial_gamma=None, initial_beta=None, em_iter=2,
                 kmeans_iters=None, em_iters=None, n_trials=None,
                 sample_ratio=1.0, min_weight=0.01, reg_covar=1e-6,
                 relu=False, queue_size=10, seed=None):
        super(MixtureNormalization, self).__init__()
        default_kmeans, default_em = gmm.split_em_iter(em_iter)
        self.kmeans_iters, self.em_iters, _ = gmm.check_fit_settings(
            n_components,
            default_kmeans if kmeans_iters is None else kmeans_iters,
            default_em if em_iters is None else em_iters, n_trials,
            sample_ratio, min_weight, reg_covar)
        if not 0 < decay < 1:
            raise ValueError('decay must be in (0, 1), got {!r}'.format(decay))
        if not eps > 0:
            raise ValueError('eps must be positive, got {!r}'.format(eps))
        if not (isinstance(queue_size, (int, numpy.integer))
                and queue_size >= 1):
            raise ValueError('queue_size must be a positive integer, got '
                             '{!r}'.format(queue_size))
        self.n_components = int(n_components)
        self.decay = float(decay)
        self.eps = float(eps)
        self.n_trials = n_trials
        self.sample_ratio = float(sample_ratio)
        self.min_weight = float(min_weight)
        self.reg_covar = float(reg_covar)
        self.relu = bool(relu)
        self.queue_size = int(queue_size)
        self._highprec_dtype = chainer.get_dtype(
            dtype, map_mixed16=numpy.float32)
        self._rng = None
        self._last_tau = None
        self._fit_shift = None  # origin of the transform's sums (_fit)
        self.last_mixture = None

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

        if size is not None:
            self._initialize_params(size)

    # -- state ------------------------------------------------------------

    @property
    def size(self):
        """Number of channels (None before lazy initialization)."""
        if self.queue_means is None:
            return None
        return int(self.queue_means.shape[2])

    @property
    def effective_k(self):
        """Components kept in the last training fit (0 before training)."""
        if self.last_mixture is None:
            return 0
        return self.last_mixture.n_components

    def _initialize_params(self, size):
        xp = self.xp
        dtype = self._highprec_dtype
        length, k = self.queue_size, self.n_components
        self.queue_weights = xp.zeros((length, k), dtype=dtype)
        self.queue_means = xp.zeros((length, k, size), dtype=dtype)
        self.queue_variances = xp.ones((length, k, size), dtype=dtype)
        if self.gamma is not None:
            self.gamma.initialize(size)
        if self.beta is not None:
            self.beta.initialize(size)

    def reseed(self, seed):
        """Set the seed of the layer's mixture fits and restart its stream."""
        self.seed = int(seed)
        self.n_fits = 0

    def _next_rng(self):
        xp = self.xp
        if self._rng is None or not isinstance(self._rng,
                                               xp.random.RandomState):
            self._rng = xp.random.RandomState(0)
        state = numpy.random.SeedSequence((self.seed, self.n_fits))
        self._rng.seed(int(state.generate_state(1)[0]))
        self.n_fits += 1
        return self._rng

    def _reducer(self):
        """Sums statistics over data-parallel workers (None: local batch)."""
        return None

    def _name(self):
        return self.layer_name or self.name or type(self).__name__

    def serialize(self, serializer):
        if isinstance(serializer, chainer.serializer.Deserializer):
            self._check_saved_queue(serializer)
        super(MixtureNormalization, self).serialize(serializer)

    def _check_saved_queue(self, serializer):
        if self.queue_means is None:
            return
        try:
            saved = serializer('queue_means', None)
        except KeyError:
            return
        if saved is None:
            return
        expected = self.queue_means.shape
        if tuple(saved.shape) != tuple(expected):
            raise ValueError(
                'MixtureNormalization {!r}: the saved queue has shape {} '
                '(queue_size, n_components, channels) but this layer has {}'
                .format(self._name(), tuple(saved.shape), tuple(expected)))

    # -- forward ----------------------------------------------------------

    def _check_input(self, x):
        if x.ndim < 2:
            raise ValueError(
                'MixtureNormalization {!r}: input must have shape (N, C, '
                '*spatial), got shape {}'.format(self._name(), x.shape))
        if x.dtype.kind != 'f':
            raise TypeError(
                'MixtureNormalization {!r}: input must be floating point, '
                'got dtype {}'.format(self._name(), x.dtype))
        if self.size is not None and x.shape[1] != self.size:
            raise ValueError(
                'MixtureNormalization {!r}: expected {} channels, got input '
                'of shape {}'.format(self._name(), self.size, x.shape))

    def _parameters(self, size):
        xp = self.xp
        gamma = self.gamma
        if gamma is None:
            gamma = xp.ones(size, dtype=self._highprec_dtype)
        beta = self.beta
        if beta is None:
            beta = xp.zeros(size, dtype=self._highprec_dtype)
        return gamma, beta

    def forward(self, x):
        """Normalize ``x`` (see the class docstring for the two modes)."""
        x_array = x.array if isinstance(x, variable.Variable) else x
        self._check_input(x_array)
        if self.queue_means is None:
            self._initialize_params(x_array.shape[1])
        gamma, beta = self._parameters(x_array.shape[1])
        if configuration.config.train:
            return self._forward_train(x, x_array, gamma, beta)
        return self._forward_test(x, x_array, gamma, beta)

    def _fit(self, x_array):
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
                reg_covar=self.reg_covar, rng=self._next_rng(),
                return_posterior=True, reducer=self._reducer())
        except ValueError as e:
            if 'non-finite' in str(e):
                raise ValueError(
                    'MixtureNormalization {!r}: non-finite activations (NaN '
                    'or Inf) in the input of shape {}'.format(
                        self._name(), x_array.shape))
            raise
        self._fit_shift = mn_chainer.functions.statistics_shift(
            mixture.weights, mixture.means, mixture.variances, self.eps)
        return gmm.from_points(resp.astype(points.dtype, copy=False),
                               x_array.shape)

    def _forward_train(self, x, x_array, gamma, beta):
        if configuration.config.in_recomputing and self._last_tau is not None:
            tau = self._last_tau  # same normalization, no second fit
        else:
            tau = self._fit(x_array)
        node = mn_chainer.functions.MixtureNormalization(
            self.eps, self.relu, self._reducer(), self._fit_shift)
        y, = node.apply((x, tau, gamma, beta))
        if not configuration.config.in_recomputing:
            self._last_tau = tau
            self._push(node.pi, node.mean, node.var)
        return y

    def _push(self, weights, means, variances):
        dtype = self.queue_means.dtype
        self.last_mixture = gmm.Mixture(weights, means, variances)
        k_eff = weights.shape[0]
        if self.queue_length == self.queue_size:
            for name in ('queue_weights', 'queue_means', 'queue_variances'):
                array = getattr(self, name)
                array[:-1] = array[1:].copy()
            position = self.queue_size - 1
        else:
            position = self.queue_length
            self.queue_length += 1
        self.queue_weights[position] = 0
        self.queue_means[position] = 0
        self.queue_variances[position] = 1
        self.queue_weights[position, :k_eff] = weights.astype(dtype)
        self.queue_means[position, :k_eff] = means.astype(dtype)
        self.queue_variances[position, :k_eff] = variances.astype(dtype)

    def _forward_test(self, x, x_array, gamma, beta):
        xp = self.xp
        if self.queue_length == 0:
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

        For every queued mixture ``l`` (weights ``pi^l``, means, variances)
        the posterior ``tau^l`` of each point is computed under that mixture
        (variances plus ``eps``); the coefficients are
        ``w_l tau^l_ik / sqrt(pi^l_k)`` (Eqs. 38-39).

        Returns:
            tuple: ``coefficients (N, L*K, *spatial)``, ``means (L*K, C)``,
            ``variances (L*K, C)``.
        """
        xp = self.xp
        length, k = self.queue_length, self.n_components
        dtype = numpy.float32 if x_array.dtype == numpy.float16 \
            else x_array.dtype
        # Valid entries are always [0, queue_length), oldest first.
        weights = self.queue_weights[:length].astype(dtype)
        means = self.queue_means[:length].astype(dtype)
        variances = self.queue_variances[:length].astype(dtype)
        points = gmm.to_points(x_array).astype(dtype, copy=False)
        if not bool(xp.isfinite(points).all()):
            raise ValueError(
                'MixtureNormalization {!r}: non-finite activations (NaN or '
                'Inf) in the input of shape {}'.format(self._name(),
                                                       x_array.shape))
        # One common shift for every queued mixture (posteriors do not
        # change under a common translation): one pass, not one per entry.
        points, newest = gmm.centre(points, gmm.Mixture(
            weights[-1], means[-1], variances[-1]))
        shift = means[-1] - newest.means
        points_sq = points * points
        log_resp = []
        for entry in range(length):
            mixture = gmm.Mixture(weights[entry], means[entry] - shift,
                                  variances[entry] + self.eps)
            log_resp.append(gmm._e_step(xp, points, mixture, points_sq)[0])
        resp = gmm._exp_normal(xp, xp.stack(log_resp, axis=1))  # (m, L, K)
        present = weights > 0
        scale = xp.where(present, 1 / xp.sqrt(xp.where(present, weights, 1)),
                         0)
        w = xp.asarray(inference_weights(length, self.decay), dtype=dtype)
        resp *= (w[:, None] * scale)[None]
        coefficients = gmm.from_points(resp.reshape(-1, length * k),
                                       x_array.shape)
        return (coefficients, means.reshape(length * k, -1),
                variances.reshape(length * k, -1))


def replace_batch_normalization(chain, names, **mn_kwargs):
    """Swap named ``BatchNormalization`` links of a model for MN links.

    Names are resolved through the model protocol when the chain has it:
    ``chain.expand_norm_layer(name)`` turns a layer name (e.g. ``'inc2/0'``)
    into the norm names that "MN at layer *name*" replaces, and
    ``chain.norm_links()`` maps every norm name to its link path.  Without
    the protocol, names are link paths (``'/block/bn'`` or ``'block/bn'``)
    of :class:`~chainer.links.BatchNormalization` links.

    Each replacement has the replaced link's size, ``eps``, dtype and
    ``gamma``/``beta`` values; ``mn_kwargs`` go to
    :class:`MixtureNormalization` (``n_components``, ``em_iter``, ``relu``,
    ``seed``, ...).  With ``seed`` given, the i-th replaced link gets
    ``seed + i``.  With ``comm`` (a ChainerMN communicator) given, the
    replacements are :class:`MultiNodeMixtureNormalization` links that fit
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
        if isinstance(old, MixtureNormalization):
            continue
        if not _is_batch_normalization(old):
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


def _is_batch_normalization(link):
    # L.BatchNormalization, or ChainerMN's MultiNodeBatchNormalization
    # (not a subclass of it; not imported here, as it needs MPI).
    return isinstance(link, chainer.links.BatchNormalization) or (
        type(link).__name__ == 'MultiNodeBatchNormalization'
        and hasattr(link, 'avg_mean'))


def _lookup(norm_links, name):
    for key in (name, '/' + name):
        if key in norm_links:
            return key
    return None


def _norm_links(chain):
    if hasattr(chain, 'norm_links'):
        return chain.norm_links()
    return {path: path for path, l in chain.namedlinks(skipself=True)
            if isinstance(l, (chainer.links.BatchNormalization,
                              MixtureNormalization))}


def _parent_of(chain, path):
    parts = [p for p in path.split('/') if p]
    parent = chain
    for part in parts[:-1]:
        parent = (parent[int(part)] if isinstance(parent, chainer.ChainList)
                  else getattr(parent, part))
    return parent, parts[-1]


def _mixture_from_batch_normalization(bn, mn_kwargs):
    size = None if bn.avg_mean is None else bn.avg_mean.shape[0]
    kwargs = dict(eps=bn.eps, use_gamma=bn.gamma is not None,
                  use_beta=bn.beta is not None)
    if bn.avg_mean is not None:
        kwargs['dtype'] = bn.avg_mean.dtype
    kwargs.update(mn_kwargs)
    comm = kwargs.pop('comm', None)
    if comm is None:
        new = MixtureNormalization(size, **kwargs)
    else:
        from mn_chainer.links import multi_node_mixture_normalization
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


def iter_mixture_normalizations(chain):
    """Yield ``(name, link)`` for every :class:`MixtureNormalization`.

    The name is the link's ``layer_name`` when it was set by
    :func:`replace_batch_normalization`, else its path in ``chain``.
    """
    for path, l in chain.namedlinks(skipself=True):
        if isinstance(l, MixtureNormalization):
            yield (l.layer_name or path.lstrip('/')), l
