"""Tests of :mod:`mn_chainer.cpu_kernels`: every C kernel against a float64
NumPy reference written from its definition, argument checks, the split over
threads, and the whole fit with and without the kernels.

The kernels are an optional C extension (built by ``pip install`` where a C
compiler is present).  Without it these tests skip, unless
``MN_CHAINER_REQUIRE_CPU_KERNELS=1`` is set (``make test`` sets it), in
which case the first test fails and says so.
"""
import os

import numpy
import pytest

from mn_chainer import cpu_kernels
from mn_chainer import fit_passes
from mn_chainer import gmm
from mn_chainer import mixture_steps

import mixture_reference


def test_extension_is_built():
    if cpu_kernels._library() is None:
        if os.environ.get('MN_CHAINER_REQUIRE_CPU_KERNELS') == '1':
            pytest.fail('the C extension mn_chainer._cpu_kernels is not '
                        'built (pip install -e . needs a C compiler)')
        pytest.skip('the C extension mn_chainer._cpu_kernels is not built')


@pytest.fixture
def kernels(monkeypatch):
    if cpu_kernels._library() is None:
        pytest.skip('the C extension mn_chainer._cpu_kernels is not built')
    monkeypatch.delenv('MN_CHAINER_CPU_KERNELS', raising=False)
    return cpu_kernels


@pytest.fixture(params=['one chunk', 'chunks on three threads'])
def ranges(request, monkeypatch):
    """Run each kernel on one chunk of rows (one thread), and cut into up
    to seven uneven chunks (tiles straddle their boundaries) taken by three
    threads."""
    if request.param == 'chunks on three threads':
        monkeypatch.setattr(cpu_kernels, 'n_threads', lambda: 3)
        monkeypatch.setattr(cpu_kernels, 'CHUNK_WORK', 1)
        monkeypatch.setattr(cpu_kernels, 'MAX_CHUNKS', 7)
    return request.param


DTYPES = [numpy.float32, numpy.float64]
SHAPES = [(1, 1), (3, 5), (7, 16), (130, 33)]


def _rtol(dtype):
    return 1e-4 if dtype == numpy.float32 else 1e-11


def _random_points(rs, m, d, dtype, offset=3.0):
    return (offset + rs.randn(m, d) * rs.uniform(0.5, 2, size=d)).astype(
        dtype)


def _random_mixture(rs, k, d, dtype, tight=False):
    """A random mixture (its means near the points of
    :func:`_random_points` after centring), in ``dtype``; ``tight`` gives
    some channels the variance 1e-6 of a dead channel."""
    variances = rs.uniform(0.5, 2, size=(k, d))
    if tight:
        variances[rs.rand(k, d) < 0.3] = 1e-6
    return gmm.Mixture(*(a.astype(dtype) for a in (
        rs.dirichlet(numpy.ones(k)), rs.randn(k, d), variances)))


def _centred64(points, shift):
    return points.astype(numpy.float64) - shift.astype(numpy.float64)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', SHAPES)
def test_column_sums(kernels, ranges, dtype, m, d):
    rs = numpy.random.RandomState(m * d)
    points = _random_points(rs, m, d, dtype)
    sums, magnitude, d2 = kernels.column_sums(points)
    assert sums.dtype == numpy.float64 and sums.shape == (d,)
    assert d2 is None
    numpy.testing.assert_allclose(sums, points.astype(numpy.float64).sum(0),
                                  rtol=1e-13)
    assert magnitude == numpy.abs(points).max()
    first = points[m // 2]
    sums2, magnitude2, d2 = kernels.column_sums(points, first)
    numpy.testing.assert_array_equal(sums2, sums)
    assert magnitude2 == magnitude
    expected = ((points.astype(numpy.float64) - first) ** 2).sum(axis=1)
    numpy.testing.assert_allclose(d2, expected, rtol=_rtol(dtype),
                                  atol=_rtol(dtype))
    assert d2[m // 2] == 0


def test_column_sums_far_from_zero(kernels, ranges):
    """Issue 14 item 3: 200,000 float32 rows near 1e6 (the sums reach
    2e11, where float32 steps by 16,384): the sums are accumulated in
    double, as accurate as the float64 sum of the same numbers."""
    rs = numpy.random.RandomState(0)
    points = (1e6 + rs.randn(200000, 8)).astype(numpy.float32)
    sums, _, _ = kernels.column_sums(points)
    numpy.testing.assert_allclose(sums, points.astype(numpy.float64).sum(0),
                                  rtol=1e-14)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', SHAPES)
@pytest.mark.parametrize('t', [1, 3])
def test_candidate_d2(kernels, ranges, dtype, m, d, t):
    rs = numpy.random.RandomState(m + d + t)
    points = _random_points(rs, m, d, dtype, offset=1e3)
    candidates = points[rs.randint(0, m, size=t)]
    closest = rs.uniform(0, 3 * d, size=m).astype(dtype)
    out, potentials = kernels.candidate_d2(points, candidates, closest)
    assert out.dtype == dtype and out.shape == (t, m)
    assert potentials.dtype == numpy.float64 and potentials.shape == (t,)
    x = points.astype(numpy.float64)
    d2 = ((x[None] - candidates[:, None].astype(numpy.float64)) ** 2).sum(2)
    expected = numpy.minimum(d2, closest[None])
    numpy.testing.assert_allclose(out, expected, rtol=_rtol(dtype),
                                  atol=_rtol(dtype))
    assert (out >= 0).all()
    # The potentials: the row sums of the distances returned, in double.
    numpy.testing.assert_allclose(
        potentials, out.astype(numpy.float64).sum(axis=1), rtol=1e-13)
    # It equals the NumPy twin (expanded distances on centred points).
    shift = points.mean(axis=0)
    twin, twin_potentials = mixture_steps.candidate_d2(
        numpy, points - shift, candidates - shift, closest,
        mixture_steps.row_norms_sq(numpy, points - shift))
    numpy.testing.assert_allclose(out, twin, rtol=_rtol(dtype) * 10,
                                  atol=1e-2 if dtype == numpy.float32
                                  else 1e-9)
    numpy.testing.assert_allclose(potentials, twin_potentials,
                                  rtol=_rtol(dtype) * 10)


def _seed_both(points, n_components, first, uniforms):
    """The C seeding and its array twin, driven with the same draws; the
    twin runs on centred points, as in the fit (its distances are
    expanded)."""
    centred = points - points.mean(axis=0).astype(points.dtype)
    states = [passes.seeding(numpy, x, n_components)(first)
              for passes, x in ((fit_passes.CKernelPasses, points),
                                (fit_passes.ArrayPasses, centred))]
    for u in uniforms:
        for state in states:
            state.add_centre(u)
    return [state.result() for state in states] + [states]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', [(5, 3), (130, 33), (1001, 9)])
def test_seeding_equals_array_twin(kernels, ranges, dtype, m, d):
    """The C seeding (inverse-CDF draws from float64 cumulative sums,
    direct distances, best candidate and labels kept in C) chooses the
    centres of :class:`mixture_steps.Seeding` from the same draws, and its
    labels are the nearest centre by float64 distances."""
    rs = numpy.random.RandomState(m + d)
    points = _random_points(rs, m, d, dtype, offset=1e3)
    points[::7] = points[3]  # repeated points: zero distances
    k = min(5, m)
    uniforms = rs.random_sample((k - 1, 3))
    (c_centers, c_indices, c_labels), (centers, indices, labels), states = (
        _seed_both(points, k, numpy.array([3]), uniforms))
    numpy.testing.assert_array_equal(c_indices, indices)
    numpy.testing.assert_array_equal(c_centers, points[indices])
    numpy.testing.assert_array_equal(c_labels, labels)
    assert c_centers.dtype == dtype and c_labels.dtype == numpy.int64
    numpy.testing.assert_allclose(states[0].closest, states[1].closest,
                                  rtol=_rtol(dtype) * 10, atol=1e-2)
    d2 = ((points.astype(numpy.float64)[:, None]
           - c_centers.astype(numpy.float64)[None]) ** 2).sum(axis=2)
    numpy.testing.assert_allclose(states[0].closest, d2.min(axis=1),
                                  rtol=_rtol(dtype), atol=_rtol(dtype))
    gaps = numpy.sort(d2, axis=1)
    clear = gaps[:, 1] - gaps[:, 0] > 1e-3 * gaps[:, 1]  # no near tie
    numpy.testing.assert_array_equal(c_labels[clear],
                                     d2.argmin(axis=1)[clear])


def test_seeding_draws_by_inverse_cdf(kernels):
    """A point is drawn with probability proportional to its squared
    distance: the first index whose float64 cumulative sum reaches
    ``u * total`` (points at distance zero are never drawn, ``u`` near one
    draws the last point with a positive distance)."""
    points = numpy.array([[0.], [0.], [1.], [0.], [3.], [0.]])
    # Distances to the first centre (the point 0): 0, 0, 1, 0, 9, 0.
    uniforms = numpy.array([[0.05, 0.1 - 1e-12, 0.1, 0.5]])
    expected_cum = numpy.cumsum([0., 0., 1., 0., 9., 0.])
    expected = numpy.searchsorted(expected_cum, uniforms[0] * 10)
    numpy.testing.assert_array_equal(expected, [2, 2, 2, 4])
    state = fit_passes.CKernelPasses.seeding(numpy, points, 2)(
        numpy.array([0]))
    numpy.testing.assert_array_equal(state.draw(uniforms[0]), expected)
    numpy.testing.assert_array_equal(state._cand, points[expected])
    numpy.testing.assert_array_equal(state._cum, expected_cum)
    # The best of the candidates 2, 2, 2, 4 is the point 4 (the first of
    # equal potentials would be kept).
    state.add_centre(uniforms[0])
    numpy.testing.assert_array_equal(state.indices, [0, 4])
    numpy.testing.assert_array_equal(state.labels, [0, 0, 0, 0, 1, 0])
    numpy.testing.assert_array_equal(state.closest, [0, 0, 1, 0, 0, 0])


@pytest.mark.parametrize('dtype', DTYPES)
def test_seeding_identical_points(kernels, ranges, dtype):
    """Every distance zero: the draws fall on the first point, the seeds
    are copies of it, every label stays 0, alike on both paths."""
    points = numpy.full((40, 3), 7.0, dtype)
    (c_centers, c_indices, c_labels), (centers, indices, labels), _ = (
        _seed_both(points, 4, numpy.array([5]), numpy.full((3, 3), 0.5)))
    numpy.testing.assert_array_equal(c_indices, indices)
    numpy.testing.assert_array_equal(c_indices, [5, 0, 0, 0])
    numpy.testing.assert_array_equal(c_labels, 0)
    numpy.testing.assert_array_equal(labels, 0)
    numpy.testing.assert_array_equal(c_centers, points[:4])
    numpy.testing.assert_array_equal(centers, 0)  # centred


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', SHAPES)
@pytest.mark.parametrize('k', [1, 4])
def test_cluster_sums(kernels, ranges, dtype, m, d, k):
    """The sums of hard clusters, in double (the centred float32 points and
    their squares are exact in it)."""
    rs = numpy.random.RandomState(m + d + k)
    points = _random_points(rs, m, d, dtype, offset=1e3)
    shift = points.mean(axis=0).astype(dtype)
    labels = rs.randint(0, k, size=m)
    counts, sums = kernels.cluster_sums(points, shift, labels, k)
    assert counts.dtype == sums.dtype == numpy.float64
    x = _centred64(points, shift)
    one_hot = numpy.eye(k)[labels]
    numpy.testing.assert_array_equal(counts, one_hot.sum(axis=0))
    expected = numpy.concatenate((one_hot.T @ x, one_hot.T @ (x * x)), 1)
    numpy.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', SHAPES)
@pytest.mark.parametrize('k', [1, 2, 5])
@pytest.mark.parametrize('tight', [False, True])
def test_em_sums(kernels, ranges, dtype, m, d, k, tight):
    """Responsibilities of the E-step (direct differences in float32,
    scaled ones in float64) and the sums of ``x - c_k`` and ``(x - c_k)^2``
    against float64, about the means ``c_k = mu_k`` in float32, about the
    origin ``c_k = 0`` in float64."""
    rs = numpy.random.RandomState(10 * m + d + k)
    points = _random_points(rs, m, d, dtype)
    shift = points.mean(axis=0).astype(dtype)
    mixture = _random_mixture(rs, k, d, dtype, tight)
    nk, sums, centres = kernels.em_sums(points, shift, mixture)
    assert nk.dtype == sums.dtype == numpy.float64
    assert sums.shape == (k, 2 * d)
    if dtype == numpy.float32:
        assert centres.dtype == numpy.float64
        numpy.testing.assert_array_equal(centres, mixture.means)
    else:
        assert centres is None
        centres = numpy.zeros((k, d))
    x = _centred64(points, shift)
    resp = mixture_reference.posterior(x, mixture)
    tol = _rtol(dtype) * (100 if tight else 1)
    numpy.testing.assert_allclose(nk, resp.sum(axis=0), rtol=tol,
                                  atol=tol * m)
    diff = x[:, None, :] - centres[None]
    expected = numpy.concatenate((numpy.einsum('ik,ikj->kj', resp, diff),
                                  numpy.einsum('ik,ikj->kj', resp,
                                               diff * diff)), axis=1)
    numpy.testing.assert_allclose(sums, expected, rtol=tol,
                                  atol=tol * m * 10)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('m,d', SHAPES)
@pytest.mark.parametrize('k', [1, 2, 5])
@pytest.mark.parametrize('tight', [False, True])
def test_log_resp(kernels, ranges, dtype, m, d, k, tight):
    rs = numpy.random.RandomState(20 * m + d + k)
    points = _random_points(rs, m, d, dtype)
    shift = points.mean(axis=0).astype(dtype)
    mixture = _random_mixture(rs, k, d, dtype, tight)
    out, log_norm = kernels.log_resp(points, shift, mixture)
    assert out.dtype == dtype and out.shape == (m, k)
    assert log_norm.dtype == dtype and log_norm.shape == (m,)
    expected, expected_norm = mixture_reference.log_resp(
        _centred64(points, shift), mixture)
    numpy.testing.assert_allclose(log_norm, expected_norm,
                                  rtol=_rtol(dtype))
    # Log posteriors are compared where they matter (above -30): far
    # below, float32 rounding of the log-densities dominates.
    keep = expected > -30
    numpy.testing.assert_allclose(out[keep], expected[keep],
                                  atol=1e-3 if dtype == numpy.float32
                                  else 1e-9)
    numpy.testing.assert_allclose(numpy.exp(out).sum(axis=1), 1,
                                  rtol=_rtol(dtype))


@pytest.mark.parametrize('scale', [10.0, 1.0])
def test_e_step_dead_channels(kernels, ranges, scale):
    """Issue 14 item 2: rectified points (exact zeros) under a mixture with
    the variance 1e-6 in channels where a component's points are all zero
    (precision 1e6): the float32 posterior of the direct-difference E-step
    is within 1e-4 of the float64 one (the expanded quadratic on centred
    float32 points was up to 1 away here), and so are the M-step's sums."""
    x64 = mixture_reference.rectified_modes(m=2048, d=64, scale=scale)
    points = x64.astype(numpy.float32)
    mixture = gmm.Mixture(*(a.astype(numpy.float32) for a in gmm.fit_gmm(
        x64, 3, rng=0, min_weight=0)))
    assert (mixture.variances < 1.1e-6).any()  # the premise
    shift = points.mean(axis=0).astype(numpy.float32)
    centred = mixture._replace(means=mixture.means - shift)
    out, log_norm = kernels.log_resp(points, shift, centred)
    expected, expected_norm = mixture_reference.log_resp(x64, mixture)
    numpy.testing.assert_allclose(numpy.exp(out), numpy.exp(expected),
                                  atol=1e-4)
    numpy.testing.assert_allclose(log_norm, expected_norm, rtol=1e-5)
    nk, sums, centres = kernels.em_sums(points, shift, centred)
    numpy.testing.assert_array_equal(centres, centred.means)
    resp = numpy.exp(expected)
    numpy.testing.assert_allclose(nk, resp.sum(axis=0), rtol=1e-4)
    diff = x64[:, None, :] - mixture.means.astype(numpy.float64)[None]
    numpy.testing.assert_allclose(
        sums[:, 64:], numpy.einsum('ik,ikj->kj', resp, diff * diff),
        rtol=1e-3, atol=1e-3 * scale ** 2)


def test_em_sums_well_separated_rows(kernels):
    """Responsibilities that underflow (points far from a component) are
    floored as documented, and the sums stay finite and exact."""
    points = numpy.repeat(numpy.linspace(-5, 65, 700)[:, None], 4,
                          axis=1).astype(numpy.float32)
    mixture = gmm.Mixture(
        numpy.array([0.5, 0.5], numpy.float32),
        numpy.array([[0.] * 4, [60.] * 4], numpy.float32),
        numpy.ones((2, 4), numpy.float32))
    shift = numpy.zeros(4, numpy.float32)
    nk, sums, _ = kernels.em_sums(points, shift, mixture)
    assert numpy.isfinite(nk).all() and numpy.isfinite(sums).all()
    numpy.testing.assert_allclose(nk.sum(), 700, rtol=1e-5)
    # The NumPy twin (float64 expanded E-step, the same floor).
    terms = mixture_steps.gaussian_log_terms(numpy, gmm.Mixture(
        *(a.astype(numpy.float64) for a in mixture)))
    resp = mixture_steps.responsibilities(
        numpy, mixture_steps.estimate_log_prob(
            numpy, mixture_steps.augment(numpy, points, dtype=numpy.float64),
            terms))
    numpy.testing.assert_allclose(nk, resp.sum(axis=0), rtol=1e-5)
    # Floored at the floor of the dtype each E-step computes in.
    floor = numpy.exp(mixture_steps.log_floor(numpy.float64))
    assert resp.min() >= floor / 2


# ---------------------------------------------------------------------------
# Argument checks: a bad argument never reaches C


def test_bad_arguments_raise(kernels):
    x = numpy.ones((6, 3), numpy.float32)
    shift = numpy.zeros(3, numpy.float32)
    mixture = gmm.Mixture(numpy.ones(2) / 2, numpy.zeros((2, 3)),
                          numpy.ones((2, 3)))
    with pytest.raises(ValueError, match='C-contiguous'):
        kernels.column_sums(numpy.ones((3, 6), numpy.float32).T)
    with pytest.raises(TypeError, match='float32 or float64'):
        kernels.column_sums(x.astype(numpy.float16))
    with pytest.raises(TypeError, match='float32 or float64'):
        kernels.column_sums(x.astype('>f4'))
    with pytest.raises(TypeError, match='float32 or float64'):
        kernels.column_sums(x.astype(numpy.int64))
    with pytest.raises(ValueError, match='2-D'):
        kernels.column_sums(x.ravel())
    with pytest.raises(ValueError, match='first must have shape'):
        kernels.column_sums(x, numpy.zeros(4))
    with pytest.raises(ValueError, match=r'candidates must have shape'):
        kernels.candidate_d2(x, numpy.zeros((2, 4)), numpy.zeros(6))
    with pytest.raises(ValueError, match='closest_d2 must have shape'):
        kernels.candidate_d2(x, numpy.zeros((2, 3)), numpy.zeros(5))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\)'):
        kernels.cluster_sums(x, shift, numpy.array([0, 1, 2, 0, 1, 0]), 2)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\)'):
        kernels.cluster_sums(x, shift, numpy.array([0, 1, -1, 0, 1, 0]), 2)
    with pytest.raises(ValueError, match='labels must have shape'):
        kernels.cluster_sums(x, shift, numpy.zeros(5, numpy.int64), 2)
    with pytest.raises(ValueError, match='shift must have shape'):
        kernels.em_sums(x, numpy.zeros(2), mixture)
    with pytest.raises(ValueError, match='means must have shape'):
        kernels.em_sums(x, shift, mixture._replace(means=numpy.zeros((2, 2))))
    with pytest.raises(ValueError, match='variances must have shape'):
        kernels.log_resp(x, shift, mixture._replace(
            variances=numpy.ones((3, 3))))


def test_address_of_array_data(kernels):
    """The extension's ``address`` (what the kernels are given) is the
    address of the data of any contiguous array, read-only ones included;
    a strided view is refused before it can reach C."""
    a = numpy.arange(12.0).reshape(3, 4)
    assert kernels.address(a) == a.ctypes.data
    assert kernels.address(a[1]) == a.ctypes.data + 4 * 8
    read_only = numpy.ones(5, numpy.float32)
    read_only.flags.writeable = False
    assert kernels.address(read_only) == read_only.ctypes.data
    with pytest.raises(ValueError, match='contiguous'):
        kernels.address(a[:, ::2])


def test_threads_and_chunks(kernels, monkeypatch):
    """``MN_CHAINER_CPU_THREADS`` caps the threads (a clear error for a
    bad value); a pass cuts its rows into one chunk per CHUNK_WORK of work,
    at most MAX_CHUNKS and one per row, covering the rows once, in order,
    whatever the threads."""
    monkeypatch.setenv('MN_CHAINER_CPU_THREADS', '3')
    assert kernels.n_threads() == 3
    monkeypatch.setenv('MN_CHAINER_CPU_THREADS', 'many')
    with pytest.raises(ValueError, match='MN_CHAINER_CPU_THREADS'):
        kernels.n_threads()
    monkeypatch.setenv('MN_CHAINER_CPU_THREADS', '4')
    d = kernels.CHUNK_WORK // 64
    assert kernels.chunk_bounds(64, d).tolist() == [0, 64]
    assert kernels.chunk_bounds(64, d - 1, 2).tolist() == [0, 64]
    assert kernels.chunk_bounds(64, d, 2).tolist() == [0, 32, 64]
    assert kernels._threads(kernels.chunk_bounds(64, d, 2)) == 2
    bounds = kernels.chunk_bounds(1001, d, 100)
    assert len(bounds) == kernels.MAX_CHUNKS + 1
    assert kernels._threads(bounds) == 4
    assert bounds[0] == 0 and bounds[-1] == 1001
    assert (numpy.diff(bounds) > 0).all()
    assert kernels.chunk_bounds(3, d, 100).tolist() == [0, 1, 2, 3]
    monkeypatch.setenv('MN_CHAINER_CPU_THREADS', '1')
    assert kernels.chunk_bounds(1001, d, 100).tolist() == bounds.tolist()


@pytest.mark.parametrize('dtype', DTYPES)
def test_results_do_not_depend_on_the_threads(kernels, monkeypatch, dtype):
    """The chunks' sums are added in chunk order: one thread and three
    give the same bits, for every kernel and for the whole fit."""
    rs = numpy.random.RandomState(31)
    points = _random_points(rs, 999, 21, dtype)
    shift = points.mean(axis=0).astype(dtype)
    mixture = _random_mixture(rs, 4, 21, dtype)
    labels = rs.randint(0, 4, size=999)
    monkeypatch.setattr(kernels, 'CHUNK_WORK', 1)

    def run():
        return [kernels.column_sums(points, points[5]),
                kernels.candidate_d2(points, points[:3], points[:, 0] ** 2),
                kernels.cluster_sums(points, shift, labels, 4),
                kernels.em_sums(points, shift, mixture)[:2],
                kernels.log_resp(points, shift, mixture),
                gmm.fit_gmm(points, 4, rng=0, return_posterior=True)]

    outputs = []
    for threads in (1, 3):
        monkeypatch.setattr(kernels, 'n_threads', lambda: threads)
        outputs.append(run())
    for one, three in zip(*outputs):
        for a, b in zip(one, three):
            if isinstance(a, tuple):  # the fit's mixture
                for u, v in zip(a, b):
                    numpy.testing.assert_array_equal(u, v)
            else:
                numpy.testing.assert_array_equal(a, b)


def _team_outputs(kernels, points, shift, mixture):
    """The E+M sums and the posterior of a pass cut into many chunks."""
    return (kernels.em_sums(points, shift, mixture)[:2]
            + kernels.log_resp(points, shift, mixture))


@pytest.fixture
def team_case(kernels, monkeypatch):
    """Points, and the outputs of one thread, for the thread-team tests;
    passes of seven chunks."""
    rs = numpy.random.RandomState(5)
    points = _random_points(rs, 700, 19, numpy.float64)
    shift = points.mean(axis=0)
    mixture = _random_mixture(rs, 3, 19, numpy.float64)
    monkeypatch.setattr(kernels, 'CHUNK_WORK', 1)
    monkeypatch.setattr(kernels, 'MAX_CHUNKS', 7)
    monkeypatch.setattr(kernels, 'n_threads', lambda: 1)
    expected = _team_outputs(kernels, points, shift, mixture)
    return points, shift, mixture, expected


def _assert_same(outputs, expected):
    for a, b in zip(outputs, expected):
        numpy.testing.assert_array_equal(a, b)


def test_more_threads_than_cores(kernels, monkeypatch, team_case):
    """The library's workers (``_thread_team.h``): more threads than the
    machine has cores, and the threads of one pass after another's, give
    the same bits."""
    points, shift, mixture, expected = team_case
    for threads in (7, 2, 5, 7):
        monkeypatch.setattr(kernels, 'n_threads', lambda: threads)
        _assert_same(_team_outputs(kernels, points, shift, mixture), expected)


def test_passes_from_several_python_threads(kernels, monkeypatch, team_case):
    """Passes called at once from several Python threads (one runs on the
    workers, the others alone) all give the bits of one thread."""
    import concurrent.futures
    points, shift, mixture, expected = team_case
    monkeypatch.setattr(kernels, 'n_threads', lambda: 3)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda _: _team_outputs(kernels, points, shift, mixture),
            range(40)))
    for outputs in results:
        _assert_same(outputs, expected)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_passes_in_a_forked_child(kernels, monkeypatch, team_case):
    """A child forked after the parent's passes ran on the workers (as
    Chainer's MultiprocessIterator forks) has none of them: its passes
    start their own and give the same bits, instead of waiting forever."""
    import multiprocessing
    points, shift, mixture, expected = team_case
    monkeypatch.setattr(kernels, 'n_threads', lambda: 3)
    _assert_same(_team_outputs(kernels, points, shift, mixture), expected)
    monkeypatch.setattr(kernels, '_forked_case', (points, shift, mixture),
                        raising=False)
    context = multiprocessing.get_context('fork')
    with context.Pool(1) as pool:
        outputs = pool.apply_async(_forked_child_outputs).get(timeout=60)
    _assert_same(outputs, expected)


def _forked_child_outputs():
    """What the forked child of test_passes_in_a_forked_child computes,
    from the case its parent left it."""
    return _team_outputs(cpu_kernels, *cpu_kernels._forked_case)


def test_disabled_by_environment(kernels, monkeypatch):
    assert kernels.available()
    monkeypatch.setenv('MN_CHAINER_CPU_KERNELS', '0')
    assert not kernels.available()
    assert _passes(numpy.ones((4, 2))) is fit_passes.ArrayPasses


def _passes(points):
    return fit_passes.select_passes(numpy, points)


def test_used_only_where_they_apply(kernels):
    assert _passes(numpy.ones((4, 2))) is fit_passes.CKernelPasses
    assert _passes(numpy.ones((4, 2), numpy.float32)) is (
        fit_passes.CKernelPasses)
    assert _passes(numpy.ones((2, 4)).T) is fit_passes.ArrayPasses
    assert _passes(numpy.ones((4, 2), numpy.float16)) is (
        fit_passes.ArrayPasses)


# ---------------------------------------------------------------------------
# The whole fit, with and without the kernels


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(kmeans_iters=3, em_iters=2),
    dict(sample_ratio=0.5, min_weight=0.05),
    dict(kmeans_iters=0, em_iters=0),
])
def test_fit_equals_array_path(kernels, ranges, monkeypatch, dtype, kwargs):
    """fit_gmm gives the same mixture and posterior through the C passes
    (on one thread and split over three) and through the array passes."""
    rs = numpy.random.RandomState(3)
    points = numpy.concatenate([
        rs.randn(400, 9) * 0.5 + 4, rs.randn(300, 9) + 8,
        rs.randn(301, 9) * 2 - 3]).astype(dtype)
    fits = []
    for env in ('1', '0'):
        monkeypatch.setenv('MN_CHAINER_CPU_KERNELS', env)
        fits.append(gmm.fit_gmm(points, 4, rng=7, return_posterior=True,
                                **kwargs))
    (with_c, tau_c), (without, tau) = fits
    assert with_c.n_components == without.n_components
    rtol = 2e-4 if dtype == numpy.float32 else 1e-9
    for a, b in zip(with_c, without):
        assert a.dtype == dtype
        numpy.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    numpy.testing.assert_allclose(tau_c, tau, rtol=rtol, atol=rtol)
