"""Tests of mn_chainer.fid: the Fréchet distance, statistics and caching,
and the FID Inception network against pytorch-fid's outputs."""
import importlib.util
import json
import os
import warnings

import numpy
import pytest
import scipy.linalg

import chainer

import mn_chainer.fid as fid


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, 'tests', 'data', 'fid_inception_reference.npz')


def _converter():
    spec = importlib.util.spec_from_file_location(
        'convert_fid_inception',
        os.path.join(ROOT, 'tools', 'convert_fid_inception.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_spd(rng, d, rank=None):
    a = rng.randn(d, rank or d)
    return a.dot(a.T) / d + (0 if rank else 0.1 * numpy.eye(d))


def _reference_distance(mu1, sigma1, mu2, sigma2):
    """FID via symmetric eigendecompositions (no sqrtm):
    Tr (S1 S2)^1/2 = Tr (S1^1/2 S2 S1^1/2)^1/2."""
    w, v = numpy.linalg.eigh(sigma1)
    root = (v * numpy.sqrt(numpy.clip(w, 0, None))).dot(v.T)
    e = numpy.linalg.eigvalsh(root.dot(sigma2).dot(root))
    diff = mu1 - mu2
    return (diff.dot(diff) + numpy.trace(sigma1) + numpy.trace(sigma2)
            - 2 * numpy.sqrt(numpy.clip(e, 0, None)).sum())


# ---------------------------------------------------------------------------
# Fréchet distance

def test_identical_statistics_give_zero():
    rng = numpy.random.RandomState(0)
    mu = rng.randn(16)
    sigma = _random_spd(rng, 16)
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(
        0, abs=1e-8)


def test_diagonal_closed_form():
    rng = numpy.random.RandomState(1)
    d = 32
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = ((mu1 - mu2) ** 2).sum() + (
        s1 + s2 - 2 * numpy.sqrt(s1 * s2)).sum()
    actual = fid.frechet_distance(mu1, numpy.diag(s1), mu2, numpy.diag(s2))
    assert actual == pytest.approx(expected, rel=1e-10)


def test_full_covariance_matches_eigen_reference_and_is_symmetric():
    rng = numpy.random.RandomState(2)
    d = 24
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    ab = fid.frechet_distance(mu1, s1, mu2, s2)
    ba = fid.frechet_distance(mu2, s2, mu1, s1)
    assert ab == pytest.approx(ba, rel=1e-10)
    assert ab == pytest.approx(_reference_distance(mu1, s1, mu2, s2),
                               rel=1e-8)


def test_rank_deficient_diagonal_is_stable():
    # Zero variances: the product of the covariances is singular.
    rng = numpy.random.RandomState(3)
    d = 64
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    s1[:20] = 0
    s2[10:30] = 0
    expected = ((mu1 - mu2) ** 2).sum() + (
        s1 + s2 - 2 * numpy.sqrt(s1 * s2)).sum()
    actual = fid.frechet_distance(mu1, numpy.diag(s1), mu2, numpy.diag(s2))
    assert numpy.isfinite(actual) and actual >= 0
    assert actual == pytest.approx(expected, rel=1e-6)


def test_rank_deficient_sample_covariance_is_stable():
    # Fewer samples than dimensions, as with few images and 2048-d features.
    rng = numpy.random.RandomState(4)
    d = 128
    mu1, s1 = fid.compute_statistics(rng.randn(10, d))
    mu2, s2 = fid.compute_statistics(rng.randn(12, d) + 0.2)
    assert numpy.linalg.matrix_rank(s1) < d
    for a, b in [((mu1, s1), (mu2, s2)), ((mu1, s1), (mu1, s1))]:
        value = fid.frechet_distance(*(a + b))
        assert numpy.isfinite(value) and value >= 0
        assert value == pytest.approx(_reference_distance(*(a + b)),
                                      rel=1e-6, abs=1e-4)


def test_non_finite_root_retries_with_offset(monkeypatch):
    # The reference FID code's fallback: a non-finite sqrtm (singular
    # product) is retried with eps * I added to both covariances.
    calls = []
    sqrtm = scipy.linalg.sqrtm

    def flaky_sqrtm(a, *args, **kwargs):
        calls.append(a.copy())
        if len(calls) == 1:
            return numpy.full_like(a, numpy.nan)
        return sqrtm(a, *args, **kwargs)

    monkeypatch.setattr(scipy.linalg, 'sqrtm', flaky_sqrtm)
    s1, s2 = numpy.diag([1., 2., 0.]), numpy.diag([3., 0., 0.])
    mu = numpy.zeros(3)
    with pytest.warns(RuntimeWarning, match='singular'):
        value = fid.frechet_distance(mu, s1, mu, s2, eps=1e-6)
    assert len(calls) == 2
    numpy.testing.assert_allclose(
        calls[1], (s1 + 1e-6 * numpy.eye(3)).dot(s2 + 1e-6 * numpy.eye(3)))
    # Traces of the given covariances, root of the offset product.
    d1, d2 = numpy.diag(s1), numpy.diag(s2)
    expected = (d1 + d2 - 2 * numpy.sqrt((d1 + 1e-6) * (d2 + 1e-6))).sum()
    assert value == pytest.approx(expected, rel=1e-9)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        fid.frechet_distance(numpy.zeros(3), numpy.eye(3), numpy.zeros(4),
                             numpy.eye(4))


# ---------------------------------------------------------------------------
# Statistics, caching, resizing

def test_compute_statistics_against_definition():
    rng = numpy.random.RandomState(5)
    x = rng.randn(50, 7).astype(numpy.float32)
    mu, sigma = fid.compute_statistics(x)
    x64 = x.astype(numpy.float64)
    centred = x64 - x64.sum(axis=0) / 50
    assert mu.dtype == numpy.float64 and sigma.dtype == numpy.float64
    numpy.testing.assert_allclose(mu, x64.sum(axis=0) / 50, rtol=1e-12)
    numpy.testing.assert_allclose(sigma, centred.T.dot(centred) / 49,
                                  rtol=1e-12)
    with pytest.raises(ValueError):
        fid.compute_statistics(x[:1])


def test_statistics_file_round_trip(tmp_path):
    rng = numpy.random.RandomState(6)
    mu, sigma = rng.randn(5), _random_spd(rng, 5)
    path = str(tmp_path / 'stats.npz')
    fid.save_statistics(path, mu, sigma, n_samples=123, source='test')
    mu2, sigma2, meta = fid.load_statistics(path)
    numpy.testing.assert_array_equal(mu, mu2)
    numpy.testing.assert_array_equal(sigma, sigma2)
    assert int(meta['n_samples']) == 123 and str(meta['source']) == 'test'
    assert os.listdir(str(tmp_path)) == ['stats.npz']  # no temporary left


def test_bilinear_resize_half_pixel_convention():
    # torch F.interpolate(bilinear, align_corners=False): 2 -> 4 samples
    # the input at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    a = fid.bilinear_resize_matrix(2, 4)
    numpy.testing.assert_allclose(
        a, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    # 4 -> 2 averages neighbouring pairs.
    numpy.testing.assert_allclose(
        fid.bilinear_resize_matrix(4, 2),
        [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    x = numpy.arange(2 * 3 * 2 * 2, dtype=numpy.float32).reshape(2, 3, 2, 2)
    y = fid.resize_images(x, 4)
    assert y.shape == (2, 3, 4, 4)
    numpy.testing.assert_allclose(y, numpy.einsum('oh,nchw,pw->ncop', a, x,
                                                  a), rtol=1e-6)


# ---------------------------------------------------------------------------
# The network

def test_no_weights_means_no_fid():
    model = fid.InceptionV3FID(size=75)
    assert not model.pretrained
    images = numpy.zeros((2, 3, 32, 32), dtype=numpy.float32)
    with pytest.raises(fid.FIDUnavailableError,
                       match='convert_fid_inception'):
        fid.extract_features(model, [images])


def test_feature_pipeline_and_cache_with_random_weights(tmp_path):
    # Pipeline test only: random weights, small resize for speed.
    model = fid.InceptionV3FID(size=75)
    rng = numpy.random.RandomState(7)
    images = rng.uniform(-1, 1, (3, 3, 32, 32)).astype(numpy.float32)
    features = fid.extract_features(
        model, fid.iter_batches(images, 2), allow_random=True)
    assert features.shape == (3, fid.FEATURE_DIM)
    assert features.dtype == numpy.float64
    assert numpy.isfinite(features).all() and (features >= 0).all()
    # Batching does not change the features.
    whole = fid.extract_features(model, [images], allow_random=True)
    numpy.testing.assert_allclose(features, whole, rtol=1e-4, atol=1e-5)

    path = str(tmp_path / 'real.npz')
    mu, sigma = fid.cached_statistics(
        model, lambda: fid.iter_batches(images, 2), path, allow_random=True)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    exp_mu, exp_sigma = fid.compute_statistics(features)
    numpy.testing.assert_allclose(mu, exp_mu, rtol=1e-4, atol=1e-6)
    numpy.testing.assert_allclose(sigma, exp_sigma, rtol=1e-3, atol=1e-6)

    def must_not_run():
        raise AssertionError('the cache was not used')

    mu2, sigma2 = fid.cached_statistics(model, must_not_run, path)
    numpy.testing.assert_array_equal(mu, mu2)
    numpy.testing.assert_array_equal(sigma, sigma2)
    assert int(fid.load_statistics(path)[2]['n_samples']) == 3


def make_reference_weights(keys_shapes, seed=0):
    """The deterministic weights the reference features were computed with
    (the same function ran next to pytorch-fid)."""
    rng = numpy.random.RandomState(seed)
    out = {}
    for key, shape in sorted(keys_shapes):
        shape = tuple(shape)
        if key.endswith('conv.weight'):
            fan_in = int(numpy.prod(shape[1:]))
            v = rng.standard_normal(shape) * numpy.sqrt(2.0 / fan_in)
        elif key.endswith('bn.weight'):
            v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith('bn.bias'):
            v = rng.standard_normal(shape) * 0.1
        elif key.endswith('bn.running_mean'):
            v = rng.standard_normal(shape) * 0.1
        elif key.endswith('bn.running_var'):
            v = rng.uniform(0.5, 1.5, shape)
        else:
            v = numpy.zeros(shape)
        out[key] = v.astype(numpy.float32)
    return out


def _reference():
    with numpy.load(REFERENCE) as f:
        keys_shapes = json.loads(str(f['state_dict_shapes']))
        return keys_shapes, f['images'], f['features']


def test_converter_covers_the_pytorch_fid_state_dict():
    convert = _converter()
    keys_shapes, _, _ = _reference()
    state = {k: numpy.zeros(s, dtype=numpy.float32) for k, s in keys_shapes}
    arrays = convert.convert_state_dict(state)
    assert 'Mixed_7c/branch3x3dbl_3b/bn/avg_var' in arrays
    assert not any(k.startswith('fc') for k in arrays)
    # Every parameter and persistent of the Chainer network, with its
    # shape, and nothing else.
    model = fid.InceptionV3FID(size=75)
    expected = {}
    for path, param in model.namedparams():
        expected[path.lstrip('/')] = param.shape
    for path, link in model.namedlinks(skipself=True):
        for name in link._persistent:
            value = getattr(link, name)
            expected['{}/{}'.format(path.lstrip('/'), name)] = numpy.shape(
                value)
    assert {k: v.shape for k, v in arrays.items()} == expected
    with pytest.raises(ValueError, match='unexpected key'):
        convert.convert_state_dict({'Mixed_5b.branch1x1.conv.bias':
                                    numpy.zeros(3)})


def test_features_match_pytorch_fid():
    """pool3 features of the port equal pytorch-fid's (0.3.0, torch 2.13
    CPU) for the same weights and 32x32 inputs resized to 299x299."""
    convert = _converter()
    keys_shapes, images, expected = _reference()
    state = make_reference_weights(
        [(k, s) for k, s in keys_shapes
         if not k.endswith('num_batches_tracked')])
    arrays = convert.convert_state_dict(state)
    model = fid.InceptionV3FID()
    chainer.serializers.NpzDeserializer(arrays, strict=True).load(model)
    model.pretrained = True  # weights given, though not trained ones
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        features = fid.extract_features(model, [images])
    assert features.shape == (2, 2048)
    assert expected.std() > 1  # a discriminating reference
    numpy.testing.assert_allclose(features, expected, rtol=1e-4, atol=2e-4)
