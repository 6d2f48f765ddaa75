import chainer
import chainer.links as L
import numpy
import pytest

import mn_chainer.links
from models import densenet


def _bn_paths(model):
    return {path for path, link in model.namedlinks(skipself=True)
            if isinstance(link, L.BatchNormalization)}


@pytest.mark.parametrize('kwargs,n,dim', [
    ({'layers_per_block': 5}, 5, 196),     # Table VII, "20 layers"
    ({'layers_per_block': 12}, 12, 448),   # Table VII, "40 layers"
    ({'depth': 40}, 12, 448),
    ({'depth': 100}, 32, 1168),
])
def test_final_channels(kwargs, n, dim):
    model = densenet.DenseNet(n_class=100, **kwargs)
    assert model.layers_per_block == n
    assert dim == 16 + 3 * n * 12
    assert model.out_channels == dim
    assert model.final.avg_mean.shape == (dim,)
    assert model.fc.W.shape == (100, dim)
    # 3n dense layers + 2 transitions + 1 final BN.
    names = model.norm_links()
    assert len(names) == 3 * n + 3
    assert set(names.values()) == _bn_paths(model)


def test_features_shape_and_logits():
    model = densenet.DenseNet(n_class=10, layers_per_block=5)
    x = numpy.random.RandomState(0).uniform(
        -1, 1, (2, 3, 32, 32)).astype(numpy.float32)
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', False):
        h = model.features(x)
        y = model(x)
    assert h.shape == (2, 196, 8, 8)
    assert y.shape == (2, 10)
    # Dense connectivity: the block input is passed through unchanged.
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', False):
        h0 = model.conv1(x)
        h1 = model.block1[0](h0)
    numpy.testing.assert_array_equal(h1.array[:, :16], h0.array)
    assert h1.shape == (2, 28, 32, 32)


def test_transitions_keep_channels_halve_size():
    model = densenet.DenseNet(layers_per_block=2, growth_rate=4)
    x = numpy.zeros((1, 24, 32, 32), numpy.float32)
    with chainer.using_config('train', False):
        assert model.trans1(x).shape == (1, 24, 16, 16)
    assert model.trans2.conv.W.shape == (32, 32, 1, 1)


def test_names():
    model = densenet.DenseNet(layers_per_block=3)
    names = model.norm_links()
    assert list(names) == [
        'block1/0', 'block1/1', 'block1/2', 'trans1',
        'block2/0', 'block2/1', 'block2/2', 'trans2',
        'block3/0', 'block3/1', 'block3/2', 'final']
    assert names['trans1'] == '/trans1/bn'
    assert names['final'] == '/final'
    assert names['block2/1'] == '/block2/1/bn'
    for name in names:
        assert model.expand_norm_layer(name) == [name]


@pytest.mark.parametrize('name', ['trans3', 'block4/0', 'block1/3', 'conv1',
                                  'inc2/0'])
def test_unknown_name(name):
    model = densenet.DenseNet(layers_per_block=3)
    with pytest.raises(ValueError) as e:
        model.expand_norm_layer(name)
    for valid in ('trans1', 'trans2', 'final'):
        assert valid in str(e.value)


@pytest.mark.parametrize('depth', [39, 4, 41])
def test_bad_depth(depth):
    with pytest.raises(ValueError):
        densenet.DenseNet(depth=depth)


def test_paper_mn_placement():
    # Paper §4.4: MN (K=5, EM iter 2) at both transitions and the final BN.
    model = densenet.DenseNet(
        depth=40, mn_layers=['trans1', 'trans2', 'final'],
        mn_kwargs={'n_components': 5, 'em_iter': 2})
    mns = dict(mn_chainer.links.iter_mixture_normalizations(model))
    assert len(mns) == 3
    links = dict(model.namedlinks(skipself=True))
    for name, path in model.norm_links().items():
        is_mn = isinstance(links[path], mn_chainer.links.MixtureNormalization)
        assert is_mn == (name in ('trans1', 'trans2', 'final'))
    for link in mns.values():
        # Every replaced norm precedes a ReLU: Eq. 40 by default (the one
        # default of models.normalization.MN_DEFAULTS).
        assert link.n_components == 5 and link.relu
    assert sorted(model.mn_layers) == ['final', 'trans1', 'trans2']
    assert len(_bn_paths(model)) == 3 * 12
    plain = densenet.DenseNet(depth=7, mn_layers=['final'],
                              mn_kwargs={'relu': False})
    assert not plain.final.relu


@pytest.mark.parametrize('mn_layers', [None, ['trans1', 'trans2', 'final']])
def test_one_training_iteration(mn_layers):
    numpy.random.seed(0)
    model = L.Classifier(densenet.DenseNet(
        n_class=10, layers_per_block=2, growth_rate=4, mn_layers=mn_layers,
        mn_kwargs={'n_components': 5, 'em_iter': 2, 'seed': 0}))
    optimizer = chainer.optimizers.NesterovAG(lr=0.1)
    optimizer.setup(model)
    rng = numpy.random.RandomState(0)
    x = rng.uniform(-1, 1, (4, 3, 32, 32)).astype(numpy.float32)
    t = rng.randint(0, 10, 4).astype(numpy.int32)
    before = model.predictor.fc.W.array.copy()
    with chainer.using_config('train', True):
        optimizer.update(model, x, t)
    assert numpy.isfinite(float(model.loss.array))
    assert not numpy.allclose(before, model.predictor.fc.W.array)
    n_mn = 0
    for _, link in mn_chainer.links.iter_mixture_normalizations(model):
        assert link.effective_k >= 1
        n_mn += 1
    assert n_mn == (3 if mn_layers else 0)
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', False):
        y = model.predictor(x)
    assert y.shape == (4, 10)
    assert numpy.isfinite(y.array).all()
