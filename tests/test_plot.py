import json
import os

import numpy
import pytest
import scipy.stats

from mn_chainer import plot


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _write_log(directory, n_epochs=40, offset=0.0, layers=(), seed=0):
    rng = numpy.random.RandomState(seed)
    os.makedirs(str(directory), exist_ok=True)
    log = []
    for e in range(1, n_epochs + 1):
        acc = 0.8 * (1 - numpy.exp(-e / 8.0)) + offset + 0.02 * rng.randn()
        entry = {'epoch': e, 'iteration': 100 * e,
                 'validation/main/accuracy': float(acc)}
        for i, name in enumerate(layers):
            entry['mn/{}/effective_k'.format(name)] = float(
                3 if e < 10 * (i + 1) else 2)
        log.append(entry)
    with open(os.path.join(str(directory), 'log'), 'w') as f:
        json.dump(log, f)
    return str(directory)


def _write_npz(path, layer='conv3', channels=8, seed=0):
    rng = numpy.random.RandomState(seed)
    records = {}
    for fraction in ('0.2', '0.4', '0.6', '0.8', '1'):
        k = 3 if float(fraction) < 0.5 else 2
        records['{}/{}/weights'.format(layer, fraction)] = rng.dirichlet(
            numpy.ones(k)).astype(numpy.float32)
        records['{}/{}/means'.format(layer, fraction)] = rng.randn(
            k, channels).astype(numpy.float32)
        records['{}/{}/variances'.format(layer, fraction)] = (
            0.2 + rng.rand(k, channels)).astype(numpy.float32)
        records['{}/{}/iteration'.format(layer, fraction)] = numpy.asarray(
            int(100 * float(fraction)))
    records['fractions'] = numpy.array([0.2, 0.4, 0.6, 0.8, 1.0])
    numpy.savez(str(path), **records)
    return str(path)


def _check_png(path, min_bytes=5000):
    with open(str(path), 'rb') as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


def test_sliding_mean_std():
    mean, std = plot.sliding_mean_std([0., 2., 4., 6.], window=2)
    numpy.testing.assert_allclose(mean, [0, 1, 3, 5])
    numpy.testing.assert_allclose(std, [0, 1, 1, 1])
    mean, std = plot.sliding_mean_std([0., 2., 4., 6.], window=3)
    numpy.testing.assert_allclose(mean, [1, 2, 4, 5])
    numpy.testing.assert_allclose(
        std, [1, numpy.sqrt(8 / 3.), numpy.sqrt(8 / 3.), 1])
    # A 10-epoch window in the middle of a long series: plain mean/std of
    # epochs i-5 .. i+4.
    values = numpy.arange(30, dtype=float) ** 2
    mean, std = plot.sliding_mean_std(values, window=10)
    numpy.testing.assert_allclose(mean[12], values[7:17].mean())
    numpy.testing.assert_allclose(std[12], values[7:17].std())
    with pytest.raises(ValueError):
        plot.sliding_mean_std(values, window=0)


def test_gaussian_densities():
    x = numpy.linspace(-3, 3, 7)
    w = numpy.array([0.3, 0.7])
    mu = numpy.array([-1.0, 0.5])
    var = numpy.array([0.5, 2.0])
    dens = plot.gaussian_densities(x, w, mu, var)
    for k in range(2):
        numpy.testing.assert_allclose(
            dens[k], w[k] * scipy.stats.norm.pdf(x, mu[k], numpy.sqrt(var[k])))
    grid = numpy.linspace(-15, 15, 30001)
    total = plot.gaussian_densities(grid, w, mu, var).sum(axis=0)
    assert numpy.trapz(total, grid) == pytest.approx(1.0, abs=1e-6)


def test_series_from_logs(tmp_path):
    run = _write_log(tmp_path / 'r', n_epochs=25, layers=('conv2', 'a/b'))
    log = plot.load_log(run)
    epochs, error = plot.error_series(log)
    assert len(epochs) == 25
    numpy.testing.assert_allclose(
        error, [100 * (1 - e['validation/main/accuracy']) for e in log])
    series = plot.effective_k_series(log)
    assert list(series) == ['conv2', 'a/b']
    numpy.testing.assert_array_equal(series['conv2'][1][:9], 3)
    numpy.testing.assert_array_equal(series['conv2'][1][9:], 2)
    numpy.testing.assert_array_equal(series['a/b'][1][:19], 3)
    numpy.testing.assert_array_equal(series['a/b'][1][19:], 2)


def test_load_mixtures(tmp_path):
    path = _write_npz(tmp_path / 'm.npz', layer='inc2/0/bn', channels=5)
    mixtures = plot.load_mixtures(str(path))
    assert list(mixtures) == ['inc2/0/bn']
    assert sorted(mixtures['inc2/0/bn']) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert mixtures['inc2/0/bn'][0.2]['means'].shape == (3, 5)
    assert mixtures['inc2/0/bn'][1.0]['variances'].shape == (2, 5)
    assert int(mixtures['inc2/0/bn'][0.6]['iteration']) == 60


def test_curves_png(tmp_path, capsys):
    bn = _write_log(tmp_path / 'bn', seed=0)
    mn = _write_log(tmp_path / 'mn', offset=0.03, seed=1)
    out = tmp_path / 'fig' / 'curves.png'
    assert plot.main(['curves', bn, mn, '-o', str(out), '--labels', 'BN',
                      'MN']) == 0
    _check_png(out)
    assert 'wrote' in capsys.readouterr().out


def test_effective_k_png(tmp_path):
    run = _write_log(tmp_path / 'mn', layers=('conv2', 'conv3'))
    out = tmp_path / 'k.png'
    assert plot.main(['effective-k', run, '-o', str(out)]) == 0
    _check_png(out)
    out2 = tmp_path / 'k2.png'
    assert plot.main(['effective-k', run, run, '--layers', 'conv3',
                      '-o', str(out2)]) == 0
    _check_png(out2)
    bn = _write_log(tmp_path / 'bn')
    with pytest.raises(SystemExit):
        plot.main(['effective-k', bn, '-o', str(tmp_path / 'x.png')])
    with pytest.raises(SystemExit):
        plot.main(['effective-k', run, '--layers', 'conv9',
                   '-o', str(tmp_path / 'y.png')])
    assert not os.path.exists(str(tmp_path / 'x.png'))


def test_mixture_png(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    _write_npz(run / 'mixtures.npz', layer='conv3')
    out = tmp_path / 'mix.png'
    assert plot.main(['mixture', str(run), '-o', str(out),
                      '--channels', '3']) == 0
    _check_png(out, min_bytes=20000)
    two = tmp_path / 'two.npz'
    numpy.savez(str(two), **dict(
        list(numpy.load(str(_write_npz(tmp_path / 'a.npz', 'a'))).items())
        + list(numpy.load(str(_write_npz(tmp_path / 'b.npz', 'b/c')))
               .items())))
    with pytest.raises(SystemExit):
        plot.main(['mixture', str(two)])  # two layers: --layer needed
    cwd = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        assert plot.main(['mixture', str(two), '--layer', 'b/c',
                          '--channels', '1']) == 0
    finally:
        os.chdir(cwd)
    _check_png(tmp_path / 'mixture_b_c.png', min_bytes=10000)


@pytest.mark.parametrize('command', ['curves', 'effective-k'])
def test_empty_log_names_the_run(tmp_path, capsys, command):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'log').write_text('')
    with pytest.raises(SystemExit) as info:
        plot.main([command, str(run), '-o', str(tmp_path / 'x.png')])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['mn-plot: error: {}: empty file (was the run stopped '
                   'before it wrote anything?)'.format(run / 'log')]
    assert not (tmp_path / 'x.png').exists()


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04 torn', b'not a zip'])
def test_corrupt_mixture_dump_names_the_file(tmp_path, capsys, content):
    path = tmp_path / 'mixtures.npz'
    path.write_bytes(content)
    with pytest.raises(SystemExit) as info:
        plot.main(['mixture', str(tmp_path)])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]
    assert 'not a readable mixture dump' in err[0]


def test_missing_mixture_dump_says_how_to_write_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        plot.main(['mixture', str(tmp_path)])
    assert info.value.code == 1
    assert '--dump-mixtures' in capsys.readouterr().err


def test_select_fractions():
    every_epoch = [e / 50 for e in range(1, 51)]
    assert plot.select_fractions(every_epoch, 5) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert plot.select_fractions([1 / 3, 2 / 3, 1.0], 5) == [
        1 / 3, 2 / 3, 1.0]
    assert plot.select_fractions([0.1, 0.15, 0.5, 0.55, 1.0], 2) == [
        0.5, 1.0]


def test_mixture_png_of_many_dumps(tmp_path):
    records = {}
    rng = numpy.random.RandomState(0)
    for e in range(1, 21):
        key = 'conv3/{:g}/'.format(e / 20)
        records[key + 'weights'] = numpy.array([0.5, 0.5], numpy.float32)
        records[key + 'means'] = rng.randn(2, 3).astype(numpy.float32)
        records[key + 'variances'] = numpy.ones((2, 3), numpy.float32)
    numpy.savez(str(tmp_path / 'mixtures.npz'), **records)
    out = tmp_path / 'fig8.png'
    assert plot.main(['mixture', str(tmp_path), '-o', str(out),
                      '--columns', '4']) == 0
    import PIL.Image
    with PIL.Image.open(str(out)) as image:
        width = image.size[0]
    # 4 columns of 2.6 inches (+ 0.6) at 100 dpi, not 20.
    assert width < 100 * (2.6 * 5 + 0.6)
