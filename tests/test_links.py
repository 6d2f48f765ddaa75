"""MixtureNormalization link: training, inference (Eqs. 38-39), population
statistics (fine-tuning), BN's interface, state.

The numeric tests run on every backend of :data:`backends.BACKENDS` (CuPy
where a GPU exists) and compare with float64 NumPy references written from
the equations (:mod:`mn_reference`) or with Chainer's own batch
normalization at K = 1.
"""
import inspect
import unittest
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import testing
from chainer.utils import type_check

import backends
from backends import skip_gpu_tests_without_gpu  # NOQA: F401 (fixture)
import mn_chainer.links as ML
import mn_reference


to_cpu = backends.to_cpu


def _activations(shape=(16, 4, 3, 3), seed=0, dtype=numpy.float32):
    """Three well separated modes along every channel (offsets 0, 3, 6)."""
    rs = numpy.random.RandomState(seed)
    modes = rs.randint(0, 3, size=(shape[0], 1) + shape[2:])
    x = rs.randn(*shape) * 0.5 + 3 * modes
    return x.astype(dtype)


def _train_steps(link, n, seed=10, shape=(16, 4, 3, 3), device=None,
                 **kwargs):
    outputs = []
    for i in range(n):
        x = _activations(shape, seed + i)
        if device is not None:
            x = device.send(x)
        outputs.append(to_cpu(link(x, **kwargs)))
    return outputs


def _set_affine(link):
    link.gamma.array[...] = link.xp.asarray([1.0, 0.5, 2.0, 1.5])
    link.beta.array[...] = link.xp.asarray([0.0, 0.1, -0.2, 0.3])


def _padded(pi, mean, var, k=3, c=4):
    """A queue entry with absent components (weight 0) filled in."""
    weights, means, variances = numpy.zeros(k), numpy.zeros((k, c)), \
        numpy.ones((k, c))
    weights[:len(pi)], means[:len(pi)], variances[:len(pi)] = pi, mean, var
    return weights, means, variances


def _check_k1_is_batch_normalization(backend_config, x, bn_kwargs,
                                     mn_kwargs):
    """Training outputs and gradients of MN at K = 1 equal BN's."""
    gy = numpy.random.RandomState(1).randn(*x.shape)
    results = []
    for link in (L.BatchNormalization(dtype=numpy.float64, **bn_kwargs),
                 ML.MixtureNormalization(dtype=numpy.float64, n_components=1,
                                         **mn_kwargs)):
        link.to_device(backend_config.device)
        xv = chainer.Variable(backend_config.get_array(x))
        y = link(xv)
        y.grad = backend_config.get_array(gy)
        y.backward()
        results.append([to_cpu(a) for a in (
            y, xv.grad, link.gamma.grad, link.beta.grad)])
        assert link.gamma.shape == link.beta.shape == results[-1][2].shape
    for ours, theirs in zip(results[1], results[0]):
        numpy.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------
# Training and queue inference (every backend)


@testing.inject_backend_tests(None, backends.BACKENDS)
class TestTraining(unittest.TestCase):

    def test_output_and_queued_statistics(self, backend_config):
        link = ML.MixtureNormalization(4, n_components=3, seed=0)
        link.to_device(backend_config.device)
        _set_affine(link)
        x = _activations(dtype=numpy.float64)
        with chainer.using_config('train', True):
            y = link(backend_config.get_array(x))
        tau = to_cpu(link._last_tau)
        # tau is a posterior: rows sum to one over the effective components.
        numpy.testing.assert_allclose(tau.sum(axis=1), 1, rtol=1e-10)
        assert tau.shape[1] == link.effective_k >= 1
        gamma, beta = to_cpu(link.gamma), to_cpu(link.beta)
        expected = mn_reference.mixture_normalization(
            x, tau, gamma, beta, link.eps)
        numpy.testing.assert_allclose(to_cpu(y), expected, rtol=1e-5,
                                      atol=1e-5)
        pi, mean, var = mn_reference.component_stats(x, tau)
        k = link.effective_k
        assert link.queue_length == 1
        numpy.testing.assert_allclose(to_cpu(link.queue_weights)[0, :k], pi,
                                      rtol=1e-6)
        numpy.testing.assert_allclose(to_cpu(link.queue_means)[0, :k], mean,
                                      rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(to_cpu(link.queue_variances)[0, :k],
                                      var, rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(to_cpu(link.last_mixture.weights), pi,
                                      rtol=1e-6)

    def test_three_modes_are_found(self, backend_config):
        link = ML.MixtureNormalization(4, n_components=3, seed=0)
        link.to_device(backend_config.device)
        link(backend_config.get_array(_activations()))
        assert link.effective_k == 3
        means = to_cpu(link.last_mixture.means)
        assert sorted(numpy.round(means[:, 0] / 3)) == [0, 1, 2]

    def test_k1_is_batch_normalization(self, backend_config):
        _check_k1_is_batch_normalization(
            backend_config, _activations(dtype=numpy.float64), {'size': 4},
            {'size': 4})

    def test_degenerate_batch_stays_finite(self, backend_config):
        link = ML.MixtureNormalization(4, n_components=3, seed=0)
        link.to_device(backend_config.device)
        x = backend_config.get_array(numpy.ones((8, 4, 2, 2), numpy.float32))
        y = link(x)
        assert numpy.isfinite(to_cpu(y)).all() and link.effective_k == 1
        F.sum(y).backward()

    def test_float16_input(self, backend_config):
        link = ML.MixtureNormalization(n_components=2, seed=0)
        link.to_device(backend_config.device)
        x = backend_config.get_array(_activations().astype(numpy.float16))
        y = link(x)
        assert y.dtype == numpy.float16 and link.size == 4
        assert link.gamma.dtype == numpy.float32
        link(x, finetune=True)
        with chainer.using_config('train', False):
            assert numpy.isfinite(to_cpu(link(x))).all()


@testing.parameterize(*testing.product({'relu': [False, True]}))
@testing.inject_backend_tests(None, backends.BACKENDS)
class TestInference(unittest.TestCase):

    def test_before_training_equals_fresh_batch_normalization(
            self, backend_config):
        x = backend_config.get_array(_activations())
        link = ML.MixtureNormalization(4, relu=self.relu)
        bn = L.BatchNormalization(4)
        link.to_device(backend_config.device)
        bn.to_device(backend_config.device)
        with chainer.using_config('train', False):
            y = to_cpu(link(x))
            expected = to_cpu(bn(x))
        if self.relu:
            expected = numpy.maximum(expected, 0)
        numpy.testing.assert_allclose(y, expected, rtol=1e-6)

    def test_matches_eqs_38_39(self, backend_config):
        for n_steps in (2, 5, 7):  # partial, full, wrapped queue
            self._check_queue(backend_config, n_steps)

    def _check_queue(self, backend_config, n_steps):
        link = ML.MixtureNormalization(4, n_components=3, queue_size=5,
                                       decay=0.8, relu=self.relu, seed=1)
        link.to_device(backend_config.device)
        _set_affine(link)
        queue = []
        for i in range(n_steps):
            x = _activations(seed=20 + i, dtype=numpy.float64)
            link(backend_config.get_array(x))
            pi, mean, var = mn_reference.component_stats(
                x, to_cpu(link._last_tau))
            queue.append(_padded(pi, mean, var))
        queue = queue[-5:]
        assert link.queue_length == len(queue)
        x = _activations(seed=99, dtype=numpy.float64)
        with chainer.using_config('train', False):
            y = to_cpu(link(backend_config.get_array(x)))
        expected = mn_reference.inference(
            x, queue, to_cpu(link.gamma), to_cpu(link.beta), 0.8, link.eps,
            self.relu)
        numpy.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_inference_weights_sum_to_one():
    for length in (1, 3, 10):
        w = ML.inference_weights(length, 0.9)
        assert w.shape == (length,)
        numpy.testing.assert_allclose(w.sum(), 1)
        numpy.testing.assert_allclose(w[-1], 0.1 / (1 - 0.9 ** length))
        assert numpy.all(numpy.diff(w) > 0)  # newest weighs most


# ---------------------------------------------------------------------------
# Population statistics (fine-tuning)


def _points(batches):
    return numpy.concatenate([mn_reference.points_of(b) for b in batches])


@testing.inject_backend_tests(None, backends.BACKENDS)
class TestPopulation(unittest.TestCase):

    def setUp(self):
        rs = numpy.random.RandomState(0)
        # Gaussian activations with a large offset and unequal scales.
        scale = numpy.array([2, 1, .5, 3])[:, None, None]
        self.batches = [rs.randn(16, 4, 3, 3) * scale + 50 for _ in range(6)]
        self.x = rs.randn(8, 4, 3, 3) * scale + 50

    def _link(self, backend_config, **kwargs):
        kwargs.setdefault('dtype', numpy.float64)
        link = ML.MixtureNormalization(4, seed=0, **kwargs)
        link.to_device(backend_config.device)
        return link

    def _finetune(self, link, backend_config, batches=None):
        link.start_finetuning()
        for b in self.batches if batches is None else batches:
            link(backend_config.get_array(b), finetune=True)

    def _test(self, link, backend_config, x=None):
        with chainer.using_config('train', False):
            return to_cpu(link(backend_config.get_array(
                self.x if x is None else x)))

    def test_k1_pools_every_point(self, backend_config):
        link = self._link(backend_config, n_components=1)
        _set_affine(link)
        _train_steps(link, 2, device=backend_config.device)
        self._finetune(link, backend_config)
        points = _points(self.batches)
        population = link.fit_population()
        assert link.population_points == len(points) == 6 * 144
        numpy.testing.assert_allclose(to_cpu(population.means)[0],
                                      points.mean(axis=0), rtol=1e-12)
        # The biased variance of the pooled points, as in training.
        numpy.testing.assert_allclose(to_cpu(population.variances)[0],
                                      points.var(axis=0), rtol=1e-9)
        # Test mode is Chainer's fixed BN with the pooled statistics.
        expected = F.fixed_batch_normalization(
            self.x, to_cpu(link.gamma), to_cpu(link.beta),
            points.mean(axis=0), points.var(axis=0), link.eps).array
        numpy.testing.assert_allclose(self._test(link, backend_config),
                                      expected, rtol=1e-9, atol=1e-9)

    def test_k1_agrees_with_batch_normalization_finetuning(
            self, backend_config):
        mn = self._link(backend_config, n_components=1)
        bn = L.BatchNormalization(4, dtype=numpy.float64)
        bn.to_device(backend_config.device)
        for link in (mn, bn):
            _train_steps(link, 2, device=backend_config.device)
            link.start_finetuning()
            for b in self.batches:
                link(backend_config.get_array(b), finetune=True)
        mn.fit_population()
        # Same batch sizes: BN's average of batch means is the pooled mean.
        numpy.testing.assert_allclose(
            to_cpu(mn.population_means)[0], to_cpu(bn.avg_mean), rtol=1e-12)
        # BN averages the B = 6 batches' unbiased variances (m = 144 points
        # each); MN takes the biased variance of the B m pooled points.  On
        # Gaussian data their ratio is 1 with standard deviation
        # sqrt(2 (B - 1)) / (m B) = 3.7e-3 (measured: 3.7e-3 over 2,000
        # draws); 6 standard deviations is 2.2e-2.  An output
        # gamma x_hat + beta then moves by at most |x_hat| * 2.2e-2 / 2.
        tol = 6 * numpy.sqrt(2 * 5) / (144 * 6)
        ratio = to_cpu(mn.population_variances)[0] / to_cpu(bn.avg_var)
        numpy.testing.assert_allclose(ratio, 1, atol=tol)
        y_bn = self._test(bn, backend_config)
        y_mn = self._test(mn, backend_config)
        numpy.testing.assert_allclose(
            y_mn, y_bn, atol=numpy.abs(y_bn).max() * tol / 2)
        # ...and exactly what BN gives with MN's population statistics.
        bn.avg_var[...] = mn.population_variances[0]
        numpy.testing.assert_allclose(y_mn, self._test(bn, backend_config),
                                      rtol=1e-9, atol=1e-9)

    def test_mixture_is_inferred_with_one_entry(self, backend_config):
        for relu in (False, True):
            link = self._link(backend_config, n_components=3, relu=relu)
            _set_affine(link)
            batches = [_activations(seed=40 + i, dtype=numpy.float64)
                       for i in range(4)]
            _train_steps(link, 3, device=backend_config.device)
            self._finetune(link, backend_config, batches)
            population = [to_cpu(a) for a in link.fit_population()]
            assert len(population[0]) == 3
            assert sorted(numpy.round(population[1][:, 0] / 3)) == [0, 1, 2]
            # A converged EM solution on the sample: one more E-step and
            # M-step (float64 reference) leaves it in place.
            points = _points(batches)
            tau = mn_reference.diag_gaussian_posterior(points, *population)
            pi, mean, var = mn_reference.component_stats(
                points[:, :, None], tau[:, :, None])
            for ours, reference in zip(population, (pi, mean, var)):
                numpy.testing.assert_allclose(ours, reference, rtol=1e-4,
                                              atol=1e-6)
            # Test mode: Eqs. 38-39 with the population mixture alone.
            x = _activations(seed=99, dtype=numpy.float64)
            expected = mn_reference.inference(
                x, [population], to_cpu(link.gamma), to_cpu(link.beta),
                link.decay, link.eps, relu)
            numpy.testing.assert_allclose(self._test(link, backend_config, x),
                                          expected, rtol=1e-6, atol=1e-8)

    def test_queue_is_used_again_after_training_or_start(
            self, backend_config):
        link = self._link(backend_config, n_components=2)
        _train_steps(link, 3, device=backend_config.device)
        queue_output = self._test(link, backend_config)
        state = [to_cpu(a).copy() for a in (
            link.queue_weights, link.queue_means, link.queue_variances)]
        n_fits, mixture = link.n_fits, link.last_mixture
        self._finetune(link, backend_config)
        # Fine-tuning leaves the training state alone...
        for before, name in zip(state, ('queue_weights', 'queue_means',
                                        'queue_variances')):
            numpy.testing.assert_array_equal(to_cpu(getattr(link, name)),
                                             before)
        assert link.n_fits == n_fits and link.last_mixture is mixture
        # ...and test mode uses the population mixture.
        population_output = self._test(link, backend_config)
        assert numpy.abs(population_output - queue_output).max() > 1e-3
        # finetune in test mode is ignored (as by BN).
        with chainer.using_config('train', False):
            numpy.testing.assert_array_equal(
                to_cpu(link(backend_config.get_array(self.x),
                            finetune=True)), population_output)
        link.start_finetuning()
        numpy.testing.assert_array_equal(self._test(link, backend_config),
                                         queue_output)
        self._finetune(link, backend_config)
        numpy.testing.assert_array_equal(self._test(link, backend_config),
                                         population_output)
        _train_steps(link, 1, device=backend_config.device)
        assert link.population_points == 0
        assert link.fit_population() is None

    def test_more_batches_refit(self, backend_config):
        link = self._link(backend_config, n_components=1)
        self._finetune(link, backend_config, self.batches[:2])
        first = self._test(link, backend_config)
        link(backend_config.get_array(self.batches[2]), finetune=True)
        assert link.population_points == 2 * 144  # not refitted yet
        second = self._test(link, backend_config)
        assert link.population_points == 3 * 144
        assert numpy.abs(first - second).max() > 1e-6

    def test_sample_is_bounded_and_seeded(self, backend_config):
        outputs = []
        for _ in range(2):
            link = self._link(backend_config, n_components=2,
                              population_sample_size=100)
            self._finetune(link, backend_config)
            link.fit_population()
            assert link.population_points == 100
            assert link._reservoir.sample.shape == (100, 4)
            outputs.append(self._test(link, backend_config))
        numpy.testing.assert_array_equal(*outputs)

    def test_first_finetune_batch_starts_a_sample(self, backend_config):
        link = self._link(backend_config, n_components=1)
        for b in self.batches[:2]:
            link(backend_config.get_array(b), finetune=True)
        link.fit_population()
        assert link.population_points == 2 * 144

    def test_recomputing_collects_nothing(self, backend_config):
        link = self._link(backend_config, n_components=1)
        link.start_finetuning()
        x = backend_config.get_array(self.batches[0])
        link(x, finetune=True)
        with chainer.using_config('in_recomputing', True):
            link(x, finetune=True)
        assert link._reservoir.n_seen == 144

    def test_serialization_round_trip(self, backend_config):
        link = self._link(backend_config, n_components=2, queue_size=4)
        _train_steps(link, 3, device=backend_config.device)
        self._finetune(link, backend_config)  # not fitted yet
        target = chainer.serializers.DictionarySerializer()
        link.serialize(target)  # fits first: saves what test mode uses
        assert int(target.target['population_points']) == 6 * 144
        loaded = ML.MixtureNormalization(4, n_components=2, queue_size=4,
                                         dtype=numpy.float64)
        loaded.to_device(backend_config.device)
        loaded.serialize(chainer.serializers.NpzDeserializer(target.target))
        assert loaded.population_points == 6 * 144
        numpy.testing.assert_array_equal(self._test(loaded, backend_config),
                                         self._test(link, backend_config))
        # A finetune batch after loading starts a new sample.
        loaded(backend_config.get_array(self.batches[0]), finetune=True)
        loaded.fit_population()
        assert loaded.population_points == 144


def test_file_without_population_loads(tmp_path):
    link = ML.MixtureNormalization(4, n_components=2, seed=0)
    _train_steps(link, 2)
    path = str(tmp_path / 'old.npz')
    chainer.serializers.save_npz(path, link)
    with numpy.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files
                  if not k.startswith('population')}
    assert len(arrays) == 8
    numpy.savez(path, **arrays)  # as written before population statistics
    loaded = ML.MixtureNormalization(4, n_components=2)
    chainer.serializers.load_npz(path, loaded)
    assert loaded.population_points == 0 and loaded.queue_length == 2
    x = _activations(seed=5)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(link(x).array, loaded(x).array)


# ---------------------------------------------------------------------------
# BN's interface: signature, axis, call, errors


def test_signature_extends_batch_normalization():
    bn = inspect.signature(L.BatchNormalization.__init__).parameters
    mn = inspect.signature(ML.MixtureNormalization.__init__).parameters
    positional = [p for p in mn.values()
                  if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [
        (p.name, p.default) for p in bn.values()]
    rest = [p for p in mn.values() if p.kind != p.POSITIONAL_OR_KEYWORD]
    assert {p.kind for p in rest} == {inspect.Parameter.KEYWORD_ONLY}
    assert {'n_components', 'em_iter', 'relu', 'queue_size', 'seed',
            'population_sample_size'} <= {p.name for p in rest}


def test_positional_arguments_in_bn_order():
    link = ML.MixtureNormalization(3, 0.8, 1e-3, numpy.float64, False, True,
                                   None, 0.5, None)
    assert (link.size, link.decay, link.eps) == (3, 0.8, 1e-3)
    assert link.gamma is None and link.beta.dtype == numpy.float64
    numpy.testing.assert_array_equal(link.beta.array, 0.5)
    assert ML.MixtureNormalization((3,)).size == 3
    with pytest.raises(TypeError):
        ML.MixtureNormalization(3, 0.9, 2e-5, None, True, True, None, None,
                                None, None, None, 5)
    for name in ('initial_avg_mean', 'initial_avg_var'):
        with pytest.raises(ValueError, match='no running mean.*' + name):
            ML.MixtureNormalization(3, **{name: 0})
    for bad in (0, (3, 0), 'a', 2.5):
        with pytest.raises(ValueError, match='size'):
            ML.MixtureNormalization(bad)
    for bad in ((2, 0), (-1,), (), 1.5, (True,)):
        with pytest.raises(ValueError, match='axis'):
            ML.MixtureNormalization(axis=bad)


@testing.inject_backend_tests(None, backends.BACKENDS)
class TestAxis(unittest.TestCase):

    def test_k1_matches_batch_normalization_axis(self, backend_config):
        x = numpy.random.RandomState(0).randn(5, 3, 4, 2) * 2 + 1
        for axis in (0, (0, 2), (0, 2, 3), (1, 3), (0, 1, 3)):
            _check_k1_is_batch_normalization(
                backend_config, x, {'axis': axis}, {'axis': axis})

    def test_k1_matches_batch_normalization_size_tuple(self, backend_config):
        x = numpy.random.RandomState(0).randn(5, 3, 4, 2) * 2 + 1
        _check_k1_is_batch_normalization(
            backend_config, x, {'size': (3, 4)}, {'size': (3, 4)})

    def test_axis_is_the_point_axes(self, backend_config):
        # axis=(0, 2) of (N, C, H, W): the points are the (C, W) matrices
        # x[n, :, h, :] flattened; the same seed fits the same mixture.
        x = _activations((6, 3, 4, 5), seed=3)
        points = x.transpose(0, 2, 1, 3).reshape(24, 15)
        outputs = []
        for kwargs, data in (({'axis': (0, 2)}, x), ({'size': 15}, points)):
            link = ML.MixtureNormalization(n_components=2, seed=1, **kwargs)
            link.to_device(backend_config.device)
            y = to_cpu(link(backend_config.get_array(data)))
            with chainer.using_config('train', False):
                y_test = to_cpu(link(backend_config.get_array(data + 1)))
            outputs.append((y, y_test))
        assert link.size == 15
        for ours, theirs in zip(*outputs):
            numpy.testing.assert_allclose(
                ours.transpose(0, 2, 1, 3).reshape(24, 15), theirs,
                rtol=1e-6, atol=1e-6)


def test_wrong_shape_is_invalid_type_naming_the_layer():
    model = _Small()
    ML.replace_batch_normalization(model, ['bn'], n_components=3)
    link = model.bn
    with pytest.raises(type_check.InvalidType, match="'bn'.*expected 4 "
                       "channels.*shape \\(8, 5\\)"):
        link(numpy.zeros((8, 5), numpy.float32))
    with pytest.raises(type_check.InvalidType, match="'bn'.*shape"):
        link(numpy.zeros((4,), numpy.float32))
    with pytest.raises(type_check.InvalidType, match="'bn'.*floating"):
        link(numpy.zeros((8, 4), numpy.int32))
    axis_link = ML.MixtureNormalization(axis=(0, 2))
    with pytest.raises(type_check.InvalidType, match='axis=\\(0, 2\\)'):
        axis_link(numpy.zeros((8, 4), numpy.float32))
    sized = ML.MixtureNormalization((3, 4))
    with pytest.raises(type_check.InvalidType, match='channel shape'):
        sized(numpy.zeros((2, 3, 5, 2), numpy.float32))


def test_other_bad_input_errors_name_the_layer():
    model = _Small()
    ML.replace_batch_normalization(model, ['bn'], n_components=3)
    link = model.bn
    x = _activations()
    x[0, 0, 0, 0] = numpy.nan
    with pytest.raises(ValueError, match="'bn'.*non-finite"):
        link(x)
    with pytest.raises(ValueError, match="'bn'.*2 points.*n_components=3"):
        link(numpy.zeros((2, 4), numpy.float32))
    with pytest.raises(ValueError, match='n_components'):
        ML.MixtureNormalization(4, n_components=0)
    with pytest.raises(ValueError, match='decay'):
        ML.MixtureNormalization(4, decay=1.0)
    with pytest.raises(ValueError, match='population_sample_size'):
        ML.MixtureNormalization(4, population_sample_size=0)
    with pytest.raises(ValueError, match='population_em_iter'):
        ML.MixtureNormalization(4, population_em_iter=-1)


def test_call_arguments_as_batch_normalization():
    link = ML.MixtureNormalization(4, n_components=1, seed=0)
    x = _activations()
    link(x, finetune=False)
    with pytest.raises(ValueError, match='using_config'):
        link(x, test=True)
    with pytest.raises(TypeError, match="unexpected keyword.*'foo'"):
        link(x, foo=1)


@pytest.mark.parametrize('shape', [(1, 4), (1, 4, 1, 1)])
def test_batch_of_one_warns_and_returns_beta_as_batch_normalization(shape):
    x = numpy.random.RandomState(0).randn(*shape).astype(numpy.float32)
    outputs = []
    for link in (L.BatchNormalization(4),
                 ML.MixtureNormalization(4, n_components=1)):
        link.beta.array[...] = [0.1, -0.2, 0.3, 0.4]
        with pytest.warns(UserWarning, match='no more than one'):
            outputs.append(link(x).array)
    numpy.testing.assert_allclose(outputs[1], outputs[0], atol=1e-6)
    numpy.testing.assert_allclose(outputs[1].reshape(4), [0.1, -0.2, 0.3,
                                                          0.4], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ML.MixtureNormalization(4, n_components=1)(
            numpy.ones((2, 4), numpy.float32))


# ---------------------------------------------------------------------------
# State: serialization and seeds


def test_serialization_round_trip(tmp_path):
    link = ML.MixtureNormalization(4, n_components=3, queue_size=4, seed=2)
    _train_steps(link, 6)
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    loaded = ML.MixtureNormalization(4, n_components=3, queue_size=4)
    chainer.serializers.load_npz(path, loaded)
    x = _activations(seed=50)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(link(x).array, loaded(x).array)
    assert loaded.queue_length == 4 and loaded.n_fits == 6
    # Training continues with the same random stream.
    numpy.testing.assert_array_equal(_train_steps(link, 2, seed=70),
                                     _train_steps(loaded, 2, seed=70))


@pytest.mark.parametrize('kwargs', [dict(n_components=2),
                                    dict(queue_size=3), dict(size=5),
                                    dict(size=None, n_components=5),
                                    dict(size=None, queue_size=3)])
def test_loading_a_different_queue_is_a_clear_error(tmp_path, kwargs):
    link = ML.MixtureNormalization(4, n_components=3, queue_size=4)
    _train_steps(link, 1)
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    args = dict(size=4, n_components=3, queue_size=4)
    args.update(kwargs)
    other = ML.MixtureNormalization(**args)
    with pytest.raises(ValueError, match='saved queue has shape'):
        chainer.serializers.load_npz(path, other)


def test_unsized_layer_adopts_the_saved_size(tmp_path):
    link = ML.MixtureNormalization(4, n_components=3, queue_size=4, seed=1)
    _set_affine(link)
    _train_steps(link, 2)
    link.start_finetuning()
    _train_steps(link, 2, seed=30, finetune=True)
    path = str(tmp_path / 'mn.npz')
    chainer.serializers.save_npz(path, link)
    loaded = ML.MixtureNormalization(None, n_components=3, queue_size=4)
    chainer.serializers.load_npz(path, loaded)
    assert loaded.size == 4 and loaded.population_points == 2 * 144
    numpy.testing.assert_array_equal(loaded.gamma.array, link.gamma.array)
    x = _activations(seed=50)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(link(x).array, loaded(x).array)
    with pytest.raises(type_check.InvalidType, match='expected 4 channels'):
        loaded(numpy.zeros((8, 5), numpy.float32))


def test_same_seed_same_results_and_reseed():
    a = ML.MixtureNormalization(4, seed=5)
    b = ML.MixtureNormalization(4, seed=5)
    c = ML.MixtureNormalization(4, seed=6)
    ya, yb, yc = (_train_steps(link, 3) for link in (a, b, c))
    for u, v in zip(ya, yb):
        numpy.testing.assert_array_equal(u, v)
    a.reseed(5)
    for u, v in zip(_train_steps(a, 3), ya):
        numpy.testing.assert_array_equal(u, v)
    assert c.seed != a.seed


# ---------------------------------------------------------------------------
# Swapping BN for MN in a model, fine-tuning a whole model


class _Small(chainer.Chain):
    def __init__(self):
        super(_Small, self).__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, pad=1)
            self.bn = L.BatchNormalization(4)
            self.blocks = chainer.ChainList(L.BatchNormalization(4),
                                            L.BatchNormalization(4))

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        for norm in self.blocks:
            h = norm(h)
        return h


def test_replace_batch_normalization():
    model = _Small()
    model.bn.gamma.array[...] = 2
    model.blocks[1].beta.array[...] = 0.5
    replaced = ML.replace_batch_normalization(
        model, ['bn', 'blocks/1'], n_components=2, relu=True, seed=7)
    assert replaced == ['/bn', '/blocks/1']
    assert isinstance(model.bn, ML.MixtureNormalization)
    assert isinstance(model.blocks[0], L.BatchNormalization)
    assert isinstance(model.blocks[1], ML.MixtureNormalization)
    assert model.bn.n_components == 2 and model.bn.relu
    assert (model.bn.seed, model.blocks[1].seed) == (7, 8)
    numpy.testing.assert_array_equal(model.bn.gamma.array, 2)
    numpy.testing.assert_array_equal(model.blocks[1].beta.array, 0.5)
    names = [n for n, _ in ML.iter_mixture_normalizations(model)]
    assert sorted(names) == ['blocks/1', 'bn']
    # The new links are registered: they train and are optimized.
    params = {id(p) for _, p in model.namedparams()}
    assert id(model.bn.gamma) in params
    assert id(model.blocks[1].gamma) in params
    y = model(numpy.random.RandomState(0).randn(4, 3, 5, 5).astype('f'))
    F.sum(y).backward()
    assert model.bn.gamma.grad is not None


def test_replace_keeps_axis_and_shape():
    model = chainer.Sequential(L.BatchNormalization(axis=(0, 2)))
    x = numpy.random.RandomState(0).randn(6, 3, 4).astype('f')
    model(x)  # BN sizes itself: its channels are axis 1
    ML.replace_batch_normalization(model, ['0'], n_components=1)
    assert model[0].axis == (0, 2) and model[0].gamma.shape == (3,)
    wide = chainer.Sequential(L.BatchNormalization((3, 4)))
    ML.replace_batch_normalization(wide, ['0'], n_components=1)
    assert wide[0].gamma.shape == (3, 4) and wide[0].size == 12


def test_replace_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        ML.replace_batch_normalization(_Small(), ['conv9'])
    assert 'conv9' in str(e.value) and '/blocks/0' in str(e.value)


def test_a_link_named_like_chainermn_bn_is_not_batch_normalization():
    class MultiNodeBatchNormalization(chainer.Link):
        avg_mean = None

    model = chainer.Sequential(MultiNodeBatchNormalization())
    assert not ML.is_batch_normalization(model[0])
    with pytest.raises(ValueError, match='unknown normalization layer'):
        ML.replace_batch_normalization(model, ['/0'])


class _Net(chainer.Chain):
    """conv-BN-ReLU, conv-MN-ReLU, linear: a model whose forward passes no
    ``finetune`` to its norms."""

    def __init__(self):
        super(_Net, self).__init__()
        with self.init_scope():
            self.c1 = ML.Conv2DBNActiv(3, 4, 3, pad=1)
            self.c2 = ML.Conv2DBNActiv(4, 4, 3, pad=1)
            self.fc = L.Linear(4 * 4 * 4, 3)
        ML.replace_batch_normalization(self, ['c2/bn'], n_components=2,
                                       relu=True, seed=0)

    def forward(self, x):
        return self.fc(self.c2(self.c1(x)))


def test_finetune_a_whole_model():
    rs = numpy.random.RandomState(0)
    images = rs.randn(40, 3, 4, 4).astype('f')
    data = chainer.datasets.TupleDataset(images,
                                         rs.randint(0, 3, 40).astype('i'))
    model = L.Classifier(_Net())
    net = model.predictor
    x_test = rs.randn(5, 3, 4, 4).astype('f')
    for _ in range(2):
        model(*chainer.dataset.concat_examples(data[:10]))
    with chainer.using_config('train', False):
        before = net(x_test).array
    queue = net.c2.bn.queue_means.copy()
    reference = L.BatchNormalization(4)
    reference.avg_mean[...] = 7  # replaced by the population mean
    iterator = chainer.iterators.SerialIterator(data, 16, repeat=False,
                                                shuffle=False)
    assert ML.finetune(model, iterator) == 3
    # BN got finetune=True: its statistics are the population's.
    with chainer.no_backprop_mode():
        reference.start_finetuning()
        for i in range(0, 40, 16):
            h = net.c1.conv(images[i:i + 16])
            reference(h, finetune=True)
    numpy.testing.assert_allclose(net.c1.bn.avg_mean, reference.avg_mean,
                                  rtol=1e-5)
    assert net.c1.bn.N == 3
    # MN: population mixture of the 40 * 16 points, queue untouched.
    assert net.c2.bn.population_points == 40 * 16
    numpy.testing.assert_array_equal(net.c2.bn.queue_means, queue)
    with chainer.using_config('train', False):
        after = net(x_test).array
    assert numpy.abs(after - before).max() > 1e-4
    # Only n_batches batches (iterator reset first).
    assert ML.finetune(model, iterator, n_batches=2) == 2
    assert net.c2.bn.population_points == 32 * 16 and net.c1.bn.N == 2
    assert ML.start_finetuning(model) == 2
    assert net.c1.bn.N == 0 and net.c2.bn.fit_population() is None
    repeating = chainer.iterators.SerialIterator(data, 16)
    with pytest.raises(ValueError, match='n_batches'):
        ML.finetune(model, repeating)


def test_device_transfer_moves_the_population_state():
    class Recorder(chainer.device_resident.DeviceResidentsVisitor):
        def __init__(self):
            self.arrays = []

        def visit_device_resident(self, device_resident):
            pass

        def visit_array(self, arr):
            self.arrays.append(arr)
            return arr.copy()

        def visit_variable(self, param):
            pass

    link = ML.MixtureNormalization(4, n_components=2, seed=0)
    _train_steps(link, 1)
    _train_steps(link, 1, finetune=True)
    state = {name: getattr(link, name) for name in (
        'population_weights', 'population_means', 'population_variances',
        'queue_means', '_last_tau')}
    sample = link._reservoir.sample
    recorder = Recorder()
    link.device_resident_accept(recorder)
    visited = {id(a) for a in recorder.arrays}
    assert {id(a) for a in state.values()} | {id(sample)} <= visited
    for name, array in state.items():
        assert getattr(link, name) is not array  # replaced by the copy
    assert link._reservoir.sample is not sample


def test_conv_2d_bn_activ_as_chainercv():
    import chainercv.links
    x = numpy.random.RandomState(0).randn(2, 3, 6, 6).astype('f')
    ours = ML.Conv2DBNActiv(3, 4, 3, pad=1, norm_kwargs={'eps': 1e-3})
    theirs = chainercv.links.Conv2DBNActiv(3, 4, 3, pad=1,
                                           bn_kwargs={'eps': 1e-3})
    assert sorted(n for n, _ in ours.namedparams()) == sorted(
        n for n, _ in theirs.namedparams())  # same snapshot keys
    ours.conv.W.array[...] = theirs.conv.W.array
    numpy.testing.assert_array_equal(ours(x).array, theirs(x).array)
    assert ours.bn.eps == 1e-3 and ours.conv.b is None
    lazy = ML.Conv2DBNActiv(4, 3, activ=None, nobias=False)  # no in_channels
    y = lazy(x)
    assert lazy.conv.W.shape == (4, 3, 3, 3) and lazy.conv.b is not None
    assert (y.array < 0).any()  # no activation
