"""MixtureNormalization link: training, inference (Eqs. 38-39), state."""
import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

import mn_chainer.links as ML
import mn_reference


def _activations(shape=(16, 4, 3, 3), seed=0, dtype=numpy.float32):
    rs = numpy.random.RandomState(seed)
    modes = rs.randint(0, 3, size=(shape[0], 1) + shape[2:])
    x = rs.randn(*shape) * 0.5 + 3 * modes
    return x.astype(dtype)


def _train_steps(link, n, seed=10, shape=(16, 4, 3, 3)):
    outputs = []
    for i in range(n):
        outputs.append(link(_activations(shape, seed + i)).array)
    return outputs


def test_train_output_and_queued_statistics():
    link = ML.MixtureNormalization(4, n_components=3, seed=0)
    x = _activations(dtype=numpy.float64)
    link.gamma.array[...] = [1.0, 0.5, 2.0, 1.5]
    link.beta.array[...] = [0.0, 0.1, -0.2, 0.3]
    with chainer.using_config('train', True):
        y = link(x)
    tau = link._last_tau
    # tau is a posterior: rows sum to one over the effective components.
    numpy.testing.assert_allclose(tau.sum(axis=1), 1, rtol=1e-10)
    assert tau.shape[1] == link.effective_k >= 1
    expected = mn_reference.mixture_normalization(
        x, tau, link.gamma.array, link.beta.array, link.eps)
    numpy.testing.assert_allclose(y.array, expected, rtol=1e-5, atol=1e-5)
    pi, mean, var = mn_reference.component_stats(x, tau)
    k = link.effective_k
    assert link.queue_length == 1
    numpy.testing.assert_allclose(link.queue_weights[0, :k], pi, rtol=1e-6)
    numpy.testing.assert_allclose(link.queue_means[0, :k], mean, rtol=1e-5,
                                  atol=1e-6)
    numpy.testing.assert_allclose(link.queue_variances[0, :k], var,
                                  rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(link.last_mixture.weights, pi, rtol=1e-6)


def test_three_modes_are_found():
    link = ML.MixtureNormalization(4, n_components=3, seed=0)
    link(_activations())
    assert link.effective_k == 3
    assert sorted(numpy.round(link.last_mixture.means[:, 0] / 3)) == [0, 1, 2]


@pytest.mark.parametrize('relu', [False, True])
def test_before_training_equals_fresh_batch_normalization(relu):
    x = _activations()
    link = ML.MixtureNormalization(4, relu=relu)
    bn = L.BatchNormalization(4)
    with chainer.using_config('train', False):
        y = link(x).array
        expected = bn(x).array
    if relu:
        expected = numpy.maximum(expected, 0)
    numpy.testing.assert_allclose(y, expected, rtol=1e-6)


@pytest.mark.parametrize('n_steps', [2, 5, 7])  # partial, full, wrapped
@pytest.mark.parametrize('relu', [False, True])
def test_inference_matches_eqs_38_39(n_steps, relu):
    link = ML.MixtureNormalization(4, n_components=3, queue_size=5,
                                   decay=0.8, relu=relu, seed=1)
    link.gamma.array[...] = [1.0, 0.5, 2.0, 1.5]
    link.beta.array[...] = [0.0, 0.1, -0.2, 0.3]
    queue = []
    for i in range(n_steps):
        x = _activations(seed=20 + i, dtype=numpy.float64)
        link(x)
        tau = link._last_tau
        pi, mean, var = mn_reference.component_stats(x, tau)
        k = numpy.zeros(3)
        k[:len(pi)] = pi
        pad = numpy.zeros((3, 4))
        mean_p, var_p = pad.copy(), pad + 1
        mean_p[:len(pi)], var_p[:len(pi)] = mean, var
        queue.append((k, mean_p, var_p))
    queue = queue[-5:]
    assert link.queue_length == len(queue)
    x = _activations(seed=99, dtype=numpy.float64)
    with chainer.using_config('train', False):
        y = link(x).array
    expected = mn_reference.inference(
        x, queue, link.gamma.array, link.beta.array, 0.8, link.eps, relu)
    numpy.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_inference_weights_sum_to_one():
    for length in (1, 3, 10):
        w = ML.inference_weights(length, 0.9)
        assert w.shape == (length,)
        numpy.testing.assert_allclose(w.sum(), 1)
        numpy.testing.assert_allclose(w[-1], 0.1 / (1 - 0.9 ** length))
        assert numpy.all(numpy.diff(w) > 0)  # newest weighs most


def test_k1_link_is_batch_normalization_in_training():
    x = _activations(dtype=numpy.float64)
    gy = numpy.random.RandomState(3).randn(*x.shape)
    mn = ML.MixtureNormalization(4, n_components=1, dtype=numpy.float64)
    bn = L.BatchNormalization(4, dtype=numpy.float64)
    results = []
    for link in (mn, bn):
        xv = chainer.Variable(x.copy())
        y = link(xv)
        y.grad = gy
        y.backward()
        results.append((y.array, xv.grad, link.gamma.grad, link.beta.grad))
    for ours, theirs in zip(*results):
        numpy.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-9)


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
                                    dict(queue_size=3), dict(size=5)])
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


def test_replace_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        ML.replace_batch_normalization(_Small(), ['conv9'])
    assert 'conv9' in str(e.value) and '/blocks/0' in str(e.value)


def test_bad_input_errors_name_the_layer():
    model = _Small()
    ML.replace_batch_normalization(model, ['bn'], n_components=3)
    link = model.bn
    with pytest.raises(ValueError, match="'bn'.*expected 4 channels"):
        link(numpy.zeros((8, 5), numpy.float32))
    x = _activations()
    x[0, 0, 0, 0] = numpy.nan
    with pytest.raises(ValueError, match="'bn'.*non-finite"):
        link(x)
    with pytest.raises(ValueError, match="'bn'.*2 points.*n_components=3"):
        link(numpy.zeros((2, 4), numpy.float32))
    with pytest.raises(ValueError, match="'bn'.*shape"):
        link(numpy.zeros((4,), numpy.float32))
    with pytest.raises(TypeError, match="'bn'.*floating"):
        link(numpy.zeros((8, 4), numpy.int32))
    with pytest.raises(ValueError, match='n_components'):
        ML.MixtureNormalization(4, n_components=0)
    with pytest.raises(ValueError, match='decay'):
        ML.MixtureNormalization(4, decay=1.0)


def test_lazy_size_and_float16_input():
    link = ML.MixtureNormalization(n_components=2, seed=0)
    x = _activations().astype(numpy.float16)
    y = link(x)
    assert y.dtype == numpy.float16 and link.size == 4
    assert link.gamma.dtype == numpy.float32
    with chainer.using_config('train', False):
        assert numpy.isfinite(link(x).array).all()


def test_degenerate_batch_stays_finite():
    link = ML.MixtureNormalization(4, n_components=3, seed=0)
    x = numpy.ones((8, 4, 2, 2), numpy.float32)
    y = link(x)
    assert numpy.isfinite(y.array).all() and link.effective_k == 1
    F.sum(y).backward()
