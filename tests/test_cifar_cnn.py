import chainer
import chainer.links as L
import numpy
import pytest

import mn_chainer.links
import models
from models import cifar_cnn


NAMES = ['conv1', 'conv2', 'conv3', 'conv4']


class _ShapeRecorder(chainer.LinkHook):

    name = 'shape_recorder'

    def __init__(self):
        self.shapes = {}

    def forward_postprocess(self, args):
        self.shapes[args.link.name] = args.out.shape


def _images(n, seed=0):
    return numpy.random.RandomState(seed).randn(n, 3, 32, 32).astype(
        numpy.float32)


@pytest.mark.parametrize('n_class', [10, 100])
def test_output_shape_and_spatial_sizes(n_class):
    model = cifar_cnn.CifarCNN(n_class=n_class)
    recorder = _ShapeRecorder()
    with chainer.using_config('train', False), recorder:
        y = model(_images(2))
    assert y.shape == (2, n_class)
    assert y.dtype == numpy.float32
    # Table I / DESIGN.md: blocks at 32, 15, 7, 3 before their pooling,
    # so conv4's 3x3 average pool leaves 1x1 for the linear layer.
    assert recorder.shapes['conv1'] == (2, 64, 32, 32)
    assert recorder.shapes['conv2'] == (2, 128, 15, 15)
    assert recorder.shapes['conv3'] == (2, 256, 7, 7)
    assert recorder.shapes['conv4'] == (2, 256, 3, 3)
    assert recorder.shapes['fc'] == (2, n_class)


def test_parameter_count_default_widths():
    model = cifar_cnn.CifarCNN(n_class=10)
    model(_images(1))
    # convolutions without bias (BN follows), BN gamma+beta, linear.
    expected = (3 * 64 * 25 + 64 * 128 * 25 + 128 * 256 * 25
                + 256 * 256 * 9
                + 2 * (64 + 128 + 256 + 256)
                + 256 * 10 + 10)
    assert sum(p.size for p in model.params()) == expected


def test_registry_builds_cifar_cnn():
    model = models.get_model('cifar_cnn', n_class=100, widths=(4, 4, 8, 8))
    assert isinstance(model, cifar_cnn.CifarCNN)
    assert model.fc.W.shape == (100, 8)


def test_norm_links_protocol():
    model = cifar_cnn.CifarCNN(widths=(4, 4, 8, 8))
    norms = model.norm_links()
    assert list(norms) == NAMES
    links = dict(model.namedlinks(skipself=True))
    for name, path in norms.items():
        assert path == '/{}/bn'.format(name)
        assert isinstance(links[path], L.BatchNormalization)
    for name in NAMES:
        assert model.expand_norm_layer(name) == [name]
    with pytest.raises(ValueError, match='conv1, conv2, conv3, conv4'):
        model.expand_norm_layer('conv5')


@pytest.mark.parametrize('mn_layers', [['conv3'], ['conv2', 'conv3'], NAMES])
def test_named_norms_switch_to_mn(mn_layers):
    model = cifar_cnn.CifarCNN(
        widths=(4, 4, 8, 8), mn_layers=mn_layers,
        mn_kwargs={'n_components': 2, 'em_iter': 4})
    links = dict(model.namedlinks(skipself=True))
    mn = {p for p, l in links.items()
          if isinstance(l, mn_chainer.links.MixtureNormalization)}
    bn = {p for p, l in links.items()
          if isinstance(l, L.BatchNormalization)}
    assert mn == {'/{}/bn'.format(n) for n in mn_layers}
    assert len(mn) + len(bn) == 4
    assert sorted(model.mn_layers) == sorted(mn_layers)
    for path in mn:
        link = links[path]
        assert link.n_components == 2
        assert link.relu  # Eq. 40 by default: every norm precedes a ReLU
    names = [n for n, _ in mn_chainer.links.iter_mixture_normalizations(
        model)]
    assert sorted(names) == sorted(mn_layers)


def test_plain_mn_form():
    model = cifar_cnn.CifarCNN(widths=(4, 4, 8, 8), mn_layers=['conv3'],
                               mn_kwargs={'relu': False})
    assert not model.conv3.bn.relu


def test_unknown_mn_layer():
    with pytest.raises(ValueError, match='conv9'):
        cifar_cnn.CifarCNN(widths=(4, 4, 8, 8), mn_layers=['conv9'])


def test_invalid_widths():
    with pytest.raises(ValueError, match='widths'):
        cifar_cnn.CifarCNN(widths=(4, 4, 8))


@pytest.mark.parametrize('n_class', [10, 100])
def test_mn_model_trains_and_tests(n_class):
    model = cifar_cnn.CifarCNN(n_class=n_class, widths=(4, 4, 8, 8),
                               mn_layers=['conv3'], mn_kwargs={'seed': 0})
    x = _images(4)
    with chainer.using_config('train', True):
        y = model(x)
    assert y.shape == (4, n_class)
    assert model.conv3.bn.effective_k >= 1
    with chainer.using_config('train', False):
        y_test = model(x)
    assert y_test.shape == (4, n_class)
    assert numpy.isfinite(y_test.array).all()


def test_norm_kwargs_reach_every_norm():
    model = cifar_cnn.CifarCNN(widths=(4, 4, 8, 8), mn_layers=['conv2'],
                               norm_kwargs={'eps': 1e-3, 'decay': 0.8})
    for name in NAMES:
        assert getattr(model, name).bn.eps == 1e-3
    for name in ('conv1', 'conv3', 'conv4'):
        assert getattr(model, name).bn.decay == 0.8
