import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest

import mn_chainer.links
from models import inception_v3


@pytest.fixture(scope='module')
def full_model():
    # Width 1: the original Inception-V3 channel widths.
    return inception_v3.InceptionV3(n_class=10)


def _small(**kwargs):
    kwargs.setdefault('width', 1. / 16)
    return inception_v3.InceptionV3(**kwargs)


def _bn_paths(model):
    return {path for path, link in model.namedlinks(skipself=True)
            if isinstance(link, L.BatchNormalization)}


def test_spatial_sizes_32_15_7_3():
    model = _small(n_class=7)
    x = numpy.random.RandomState(0).uniform(
        -1, 1, (2, 3, 32, 32)).astype(numpy.float32)
    sizes = {}
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', False):
        h = model.stem(x)
        sizes['stem'] = h.shape[2:]
        h = F.max_pooling_2d(h, 3, stride=2, cover_all=False)
        for name in model.layer_names[1:]:
            h = model.get_layer(name)(h)
            sizes[name] = h.shape[2:]
        features = model.features(x)
        y = model(x)
    assert sizes['stem'] == (32, 32)
    for name in ('inc1/0', 'inc1/1', 'inc1/2'):
        assert sizes[name] == (15, 15)
    for name in ('red1', 'inc2/0', 'inc2/1', 'inc2/2', 'inc2/3'):
        assert sizes[name] == (7, 7)
    for name in ('red2', 'inc3/0', 'inc3/1'):
        assert sizes[name] == (3, 3)
    assert features.shape == (2, model.out_channels, 3, 3)
    numpy.testing.assert_array_equal(features.array, h.array)
    assert y.shape == (2, 7)


def test_original_widths(full_model):
    # Channel counts of Szegedy et al. (2016), Table 1 / TF-slim.
    expected = {'stem': 192, 'inc1/0': 256, 'inc1/1': 288, 'inc1/2': 288,
                'red1': 768, 'inc2/0': 768, 'inc2/3': 768, 'red2': 1280,
                'inc3/0': 2048, 'inc3/1': 2048}
    for name, channels in expected.items():
        assert full_model.get_layer(name).out_channels == channels, name
    assert full_model.out_channels == 2048
    assert full_model.fc.W.shape == (10, 2048)


def test_norm_links_cover_every_bn(full_model):
    names = full_model.norm_links()
    # 94 BNs: 5 (stem) + 3*7 (inc1) + 4 (red1) + 4*10 (inc2) + 6 (red2)
    # + 2*9 (inc3).
    assert len(names) == 5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9 == 94
    assert set(names.values()) == _bn_paths(full_model)
    for name, path in names.items():
        assert path == '/' + name + '/bn'
    assert list(names)[:5] == ['stem/0/{}'.format(i) for i in range(5)]


def test_paper_name_inc2_0_2_4(full_model):
    # Fifth BN of the third branch (double 7x7) of the first 17x17 module:
    # the 1x7 convolution to 192 channels that ends the branch.
    unit = full_model.inc2[0][2][4]
    assert unit.conv.W.shape == (192, 128, 1, 7)
    assert full_model.norm_links()['inc2/0/2/4'] == '/inc2/0/2/4/bn'
    assert 'inc2/0/2/4' in full_model.expand_norm_layer('inc2/0')


@pytest.mark.parametrize('name,count', [
    ('stem', 1), ('inc1/0', 4), ('inc1/2', 4), ('red1', 2), ('inc2/0', 4),
    ('inc2/1', 4), ('inc2/3', 4), ('red2', 2), ('inc3/0', 6), ('inc3/1', 6),
])
def test_expand_counts_and_concat_channels(full_model, name, count):
    expanded = full_model.expand_norm_layer(name)
    assert len(expanded) == len(set(expanded)) == count
    layer = full_model.get_layer(name)
    in_channels = list(layer[0].children())[0].conv.W.shape[1]
    paths = full_model.norm_links()
    links = dict(full_model.namedlinks(skipself=True))
    out = sum(links[paths[n]].avg_mean.size for n in expanded)
    # The expanded BNs are exactly the concatenated outputs: their widths
    # add up to the layer's output channels (a reduction's max-pool branch
    # passes its input channels through without a BN).
    if name.startswith('red'):
        out += in_channels
    if name == 'stem':
        assert out == 192
    else:
        assert out == layer.out_channels


def test_expand_inc3_expanded_outputs(full_model):
    assert full_model.expand_norm_layer('inc3/0') == [
        'inc3/0/0/0', 'inc3/0/1/1', 'inc3/0/1/2', 'inc3/0/2/2',
        'inc3/0/2/3', 'inc3/0/3/0']
    assert full_model.expand_norm_layer('red1') == ['red1/0/0', 'red1/1/2']
    assert full_model.expand_norm_layer('red2') == ['red2/0/1', 'red2/1/3']


def test_single_bn_name_expands_to_itself(full_model):
    assert full_model.expand_norm_layer('inc2/0/2/4') == ['inc2/0/2/4']
    assert full_model.expand_norm_layer('stem/0/2') == ['stem/0/2']


@pytest.mark.parametrize('name', ['inc4/0', 'inc2/4', 'inc2', 'red3',
                                  'inc2/0/2/5', 'conv3', ''])
def test_unknown_layer_lists_valid_names(full_model, name):
    with pytest.raises(ValueError) as e:
        full_model.expand_norm_layer(name)
    message = str(e.value)
    assert repr(name) in message
    for valid in ('stem', 'inc1/0', 'red1', 'inc2/3', 'red2', 'inc3/1'):
        assert valid in message


def test_width_multiplier_bad():
    with pytest.raises(ValueError):
        inception_v3.InceptionV3(width=0)


def _count_mn(model):
    return len(list(mn_chainer.links.iter_mixture_normalizations(model)))


@pytest.mark.parametrize('layers,count', [
    (['inc2/0', 'inc3/0'], 10),
    (['red1', 'red2'], 4),
    (['red1', 'red2', 'inc3/0'], 10),
    (['inc2/1', 'inc3/0'], 10),
    (['inc2/0/2/4'], 1),
])
def test_mn_layers_replace(layers, count):
    model = _small(mn_layers=layers, mn_kwargs={'n_components': 3})
    assert _count_mn(model) == count
    expected = set()
    for layer in layers:
        expected.update(model.expand_norm_layer(layer))
    paths = model.norm_links()
    links = dict(model.namedlinks(skipself=True))
    for name, path in paths.items():
        is_mn = isinstance(links[path], mn_chainer.links.MixtureNormalization)
        assert is_mn == (name in expected), name
    # The remaining BNs are untouched.
    assert len(_bn_paths(model)) == len(paths) - count
    # Every replaced norm precedes a ReLU: Eq. 40 by default (the one
    # default of models.normalization.MN_DEFAULTS), unless asked otherwise.
    assert all(link.relu for _, link in
               mn_chainer.links.iter_mixture_normalizations(model))
    assert len(model.mn_layers) == count


def test_plain_mn_form():
    model = _small(mn_layers=['inc2/0/2/4'], mn_kwargs={'relu': False})
    assert not model.inc2[0][2][4].bn.relu


def test_mn_unknown_layer_is_error():
    with pytest.raises(ValueError, match='inc2/3'):
        _small(mn_layers=['inc5/0'])


@pytest.mark.parametrize('mn_layers', [None, ['inc2/0', 'inc3/0']])
def test_one_training_iteration(mn_layers):
    numpy.random.seed(0)
    model = L.Classifier(_small(
        n_class=10, mn_layers=mn_layers,
        mn_kwargs={'n_components': 3, 'em_iter': 2, 'seed': 0}))
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01)
    optimizer.setup(model)
    rng = numpy.random.RandomState(0)
    x = rng.uniform(-1, 1, (4, 3, 32, 32)).astype(numpy.float32)
    t = rng.randint(0, 10, 4).astype(numpy.int32)
    before = model.predictor.inc2[0][2][4].conv.W.array.copy()
    with chainer.using_config('train', True):
        optimizer.update(model, x, t)
    assert numpy.isfinite(float(model.loss.array))
    after = model.predictor.inc2[0][2][4].conv.W.array
    assert not numpy.allclose(before, after)
    for _, link in mn_chainer.links.iter_mixture_normalizations(model):
        assert link.effective_k >= 1
    with chainer.using_config('train', False), \
            chainer.using_config('enable_backprop', False):
        y = model.predictor(x)
    assert y.shape == (4, 10)
    assert numpy.isfinite(y.array).all()
