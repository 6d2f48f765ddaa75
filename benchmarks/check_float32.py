"""Float32 accuracy of the transform and the fit against float64 (issue 14).

Prints the two tables of the README's float32 section, from a fresh clone
(nothing to install beyond the requirements; it imports ``mn_chainer`` from
this checkout and the float64 references of ``tests/``)::

    python benchmarks/check_float32.py [--markdown] [--path numpy|c]

1. **Transform** (Eqs. 34-37, and Eq. 40 with ReLU): float32
   ``mn_chainer.functions.mixture_normalization`` against the float64
   equations of ``tests/mn_reference.py`` (NumPy loops; gradients by
   Chainer's automatic differentiation of the same equations in float64),
   for ``x ~ N(offset, 1)`` of shape (32, 4, 8, 8) at offsets 0, 1e2, 1e3
   and 1e4 sd, K = 1 and 3 (fixed random responsibilities), without and
   with the per-component ReLU: the output ``y``, the gradients ``gx`` and
   ``ggamma`` and the double-backward gradients ``gx2``, ``ggamma2`` and
   ``ggy2``. At K = 1 the same for float32 ``F.batch_normalization``
   (followed by ``F.relu``), which the K = 1 reference equals. Each cell is
   ``max |float32 - float64| / max |float64|``.
2. **Fit** (DESIGN section 1.1) on the current CPU path, float32 against
   float64 (issue 14 items 2-4): on rectified activations (4,096 points of
   64 channels, two modes rectified at their 70% quantile, K = 3, one
   K-means and one EM iteration; ``tests/mixture_reference.py``) the
   posterior the fit returns and ``gmm.posterior`` against the float64
   posterior under the fitted mixture, the share of points whose most
   likely component differs, and the mean log-likelihood (in float64) of the
   float32 fit and of the float64 fit of the same points; two unit-variance
   modes 6 sd apart far from zero (offsets 1e5 and 1e6, d = 8): the
   variances against the float64 fit; float32 points spread over ~1e19
   (squares beyond float32): finite results, against the float64 fit.

The fit and the transform run their C kernels (:mod:`mn_chainer.cpu_kernels`,
:mod:`mn_chainer.transform_kernels`) where they are built, else their NumPy
passes; ``--path numpy`` (or ``MN_CHAINER_CPU_KERNELS=0``) selects the NumPy
passes, ``--path c`` insists on the kernels. The header says which ran.
Everything is seeded; a run takes a few seconds. The same cases are
asserted by ``tests/test_transform_numerics.py`` and
``tests/test_fit_numerics.py``.
"""
import argparse
import os
import platform
import sys
import warnings

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # CuPy's notes on missing CUDA libraries
    import chainer
    import chainer.functions as F

    import mixture_reference
    from mn_chainer import compare
    from mn_chainer import cpu_kernels
    import mn_chainer.functions as MF
    from mn_chainer import gmm
    import mn_reference


#: Transform input shape (N, C, H, W) and offsets (in sd).
SHAPE = (32, 4, 8, 8)
OFFSETS = (0, 1e2, 1e3, 1e4)

#: The gradients of one transform row: first order, then double backward.
FIRST = ('y', 'gx', 'ggamma')
SECOND = ('gx2', 'ggamma2', 'ggy2')


def relative_error(ours, reference):
    """``max |ours - reference| / max |reference|`` in float64."""
    reference = numpy.asarray(reference, numpy.float64)
    return float(numpy.abs(numpy.asarray(ours, numpy.float64) - reference)
                 .max() / numpy.abs(reference).max())


def _differentiate(function, x, gamma, beta, gy, ggrads):
    """``[y, gx, ggamma, gbeta, gx2, ggamma2, ggy2]`` of a float32
    ``function(x, gamma, beta)``, with the double-backward gradients of
    ``<gx, ggx> + <ggamma, gggamma> + <gbeta, ggbeta>`` as the reference
    computes them."""
    xv, gv, bv, gyv = (chainer.Variable(a.copy())
                       for a in (x, gamma, beta, gy))
    y = function(xv, gv, bv)
    grads = chainer.grad([y], [xv, gv, bv], grad_outputs=[gyv],
                         enable_double_backprop=True)
    second = chainer.grad(list(grads), [xv, gv, gyv], grad_outputs=[
        chainer.Variable(a) for a in ggrads])
    return [y.array] + [g.array for g in grads] + [g.array for g in second]


def transform_rows():
    """One row per (K, ReLU, offset): errors of MN and, at K = 1, BN."""
    rs = numpy.random.RandomState(0)
    c = SHAPE[1]
    gamma = rs.uniform(0.5, 1.5, c).astype(numpy.float32)
    beta = rs.uniform(-0.3, 0.3, c).astype(numpy.float32)
    gy = rs.randn(*SHAPE).astype(numpy.float32)
    ggrads = [rs.randn(*SHAPE).astype(numpy.float32),
              rs.randn(c).astype(numpy.float32),
              rs.randn(c).astype(numpy.float32)]
    rows = []
    for k in (1, 3):
        shape = (SHAPE[0], k) + SHAPE[2:]
        tau = rs.rand(*shape) ** 3 + 1e-3
        tau = (tau / tau.sum(axis=1, keepdims=True)).astype(numpy.float32)
        for relu in (False, True):
            for offset in OFFSETS:
                x = (rs.randn(*SHAPE) + offset).astype(numpy.float32)
                reference = [mn_reference.mixture_normalization(
                    x, tau, gamma, beta, relu=relu)] + list(
                        mn_reference.transform_gradients(
                            x, tau, gamma, beta, gy, relu=relu,
                            ggrads=ggrads))
                row = {'k': str(k), 'relu': 'on' if relu else 'off',
                       'offset': _power_of_ten(offset)}
                row.update(_errors('mn', _differentiate(
                    lambda a, g, b: MF.mixture_normalization(
                        a, tau, g, b, relu=relu),
                    x, gamma, beta, gy, ggrads), reference))
                if k == 1:
                    row.update(_errors('bn', _differentiate(
                        lambda a, g, b: _batch_normalization(a, g, b, relu),
                        x, gamma, beta, gy, ggrads), reference))
                rows.append(row)
    return rows


def _power_of_ten(value):
    return '0' if value == 0 else '1e{:d}'.format(
        int(round(numpy.log10(value))))


def _batch_normalization(x, gamma, beta, relu):
    y = F.batch_normalization(x, gamma, beta, eps=2e-5)
    return F.relu(y) if relu else y


def _errors(prefix, ours, reference):
    """Cells ``<prefix>_first`` and ``<prefix>_second`` (the gradient with
    respect to beta, index 3, is left out)."""
    errors = [relative_error(a, b) for a, b in zip(ours, reference)]
    return {prefix + '_first': _cells(errors[:3]),
            prefix + '_second': _cells(errors[4:])}


def _cells(errors):
    return ' / '.join('{:.1e}'.format(e) for e in errors)


def transform_table():
    columns = [('k', 'K', 'text'), ('relu', 'ReLU (Eq. 40)', 'text'),
               ('offset', 'offset (sd)', 'text'),
               ('mn_first', 'MN: ' + ' / '.join(FIRST), 'text'),
               ('mn_second', 'MN double backward: ' + ' / '.join(SECOND),
                'text'),
               ('bn_first', 'BN: ' + ' / '.join(FIRST), 'text'),
               ('bn_second', 'BN double backward: ' + ' / '.join(SECOND),
                'text')]
    return compare.Table(
        'Transform, float32 vs float64: max abs(error) / max abs(float64), '
        'x ~ N(offset, 1), shape {}'.format(SHAPE), columns,
        transform_rows(),
        notes=['BN: F.batch_normalization (then F.relu) in float32, '
               'against the same K = 1 reference.',
               'With ReLU, a point whose output lies within the forward '
               'error of zero falls on the other side of the mask, and its '
               'gradient changes by its whole size: float32 BN far from '
               'zero gives such points (the large gx errors of BN + ReLU), '
               'MN\'s output is accurate enough to give none here.'])


# ---------------------------------------------------------------------------
# The fit


def rectified_rows():
    """Issue 14 item 2: the posterior on rectified activations."""
    rows = []
    for seed in (1, 3):
        for scale in (10.0, 1.0):
            x = mixture_reference.rectified_modes(
                scale=scale, seed=seed).astype(numpy.float32)
            mixture, tau = gmm.fit_gmm(x, 3, rng=0, return_posterior=True)
            reference = mixture_reference.posterior(x, mixture)
            fit64 = gmm.fit_gmm(x.astype(numpy.float64), 3, rng=0)
            rows.append({
                'seed': str(seed), 'scale': '{:g}'.format(scale),
                'tau': '{:.1e}'.format(numpy.abs(tau - reference).max()),
                'posterior': '{:.1e}'.format(numpy.abs(
                    gmm.posterior(x, mixture) - reference).max()),
                'argmax': '{:.2%}'.format(numpy.mean(
                    tau.argmax(axis=1) != reference.argmax(axis=1))),
                'll32': '{:.3f}'.format(
                    mixture_reference.log_likelihood(x, mixture)),
                'll64': '{:.3f}'.format(
                    mixture_reference.log_likelihood(x, fit64))})
    return rows


def _sorted(mixture):
    """Weights, means and variances, components ordered by their first
    mean (fits of two precisions may list them in another order)."""
    order = numpy.argsort(numpy.asarray(mixture.means)[:, 0])
    return [numpy.asarray(a, numpy.float64)[order] for a in mixture]


def offset_rows():
    """Issue 14 item 3: two modes far from zero."""
    rows = []
    for offset, m in ((1e5, 131072), (1e6, 200000)):
        x, _ = mixture_reference.offset_modes(m, offset=offset)
        x = x.astype(numpy.float32)
        ours = gmm.fit_gmm(x, 2, rng=0)
        reference = gmm.fit_gmm(x.astype(numpy.float64), 2, rng=0)
        row = {'offset': _power_of_ten(offset), 'm': str(m),
               'components': '{} (float64: {})'.format(
                   ours.n_components, reference.n_components)}
        if ours.n_components == reference.n_components:
            a, b = _sorted(ours), _sorted(reference)
            row['variances'] = '{:.1e}'.format(
                numpy.abs(a[2] / b[2] - 1).max())
            row['weights'] = ', '.join('{:.4f}'.format(w) for w in a[0])
        rows.append(row)
    return rows


def overflow_row():
    """Issue 14 item 4: finite float32 points whose squares overflow."""
    rs = numpy.random.RandomState(3)
    labels = rs.randint(0, 2, 600)
    x = (3e18 * (4 * labels[:, None] + rs.randn(600, 5))).astype(
        numpy.float32)
    row = {'points': '600 x 5, abs(x) up to {:.1e}'.format(
        float(numpy.abs(x).max()))}
    try:
        mixture, tau = gmm.fit_gmm(x, 2, rng=0, return_posterior=True)
    except ValueError as e:  # gmm.NonFiniteError
        row['finite'] = '{}: {}'.format(type(e).__name__, e)
        return row
    reference = gmm.fit_gmm(x.astype(numpy.float64), 2, rng=0)
    row['finite'] = 'mixture {}, posterior {}'.format(
        'yes' if all(numpy.isfinite(a).all() for a in mixture) else 'NO',
        'yes' if numpy.isfinite(tau).all() else 'NO')
    if mixture.n_components == reference.n_components:
        row['vs64'] = ' / '.join('{:.1e}'.format(relative_error(a, b))
                                 for a, b in zip(_sorted(mixture),
                                                 _sorted(reference)))
    return row


def fit_tables():
    rectified = compare.Table(
        'Fit item 2, rectified activations (4096 x 64, two modes rectified '
        'at their 70% quantile, K = 3, 1 K-means + 1 EM iteration): float32 '
        'fit vs float64', [
            ('seed', 'seed', 'text'), ('scale', 'scale', 'text'),
            ('tau', 'max abs(tau - tau64): fit', 'text'),
            ('posterior', 'max abs(tau - tau64): gmm.posterior', 'text'),
            ('argmax', 'argmax differs', 'text'),
            ('ll32', 'LL float32 fit', 'text'),
            ('ll64', 'LL float64 fit', 'text')], rectified_rows(),
        notes=['tau64: the float64 posterior under the float32 fit\'s '
               'mixture; LL: mean log-likelihood per point, in float64.'])
    offset = compare.Table(
        'Fit item 3, two unit-variance modes 6 sd apart, d = 8, far from '
        'zero: float32 fit vs float64 fit of the same points', [
            ('offset', 'offset', 'text'), ('m', 'm', 'text'),
            ('components', 'components', 'text'),
            ('variances', 'max relative variance error', 'text'),
            ('weights', 'weights (float32)', 'text')], offset_rows())
    overflow = compare.Table(
        'Fit item 4, float32 points whose squares overflow float32', [
            ('points', 'points', 'text'), ('finite', 'finite', 'text'),
            ('vs64', 'vs float64 fit: weights / means / variances', 'text')],
        [overflow_row()],
        notes=['max abs(error) / max abs(float64), components ordered by '
               'mean.'])
    return [rectified, offset, overflow]


# ---------------------------------------------------------------------------


def _fit_path():
    if cpu_kernels.available():
        return 'C kernels (mn_chainer.cpu_kernels, {} threads)'.format(
            cpu_kernels.n_threads())
    return 'NumPy passes{}'.format(
        ' (MN_CHAINER_CPU_KERNELS=0)'
        if os.environ.get('MN_CHAINER_CPU_KERNELS') == '0'
        else ' (the C kernels are not built)')


def get_parser():
    parser = argparse.ArgumentParser(
        description='Float32 accuracy of the MN transform and the mixture '
        'fit against float64 references (issue 14).')
    parser.add_argument('--markdown', action='store_true',
                        help='print Markdown tables')
    parser.add_argument('--path', choices=('numpy', 'c'),
                        help='CPU path of the fit and the transform '
                        '(default: the C kernels '
                        'where built and MN_CHAINER_CPU_KERNELS is not 0)')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.path == 'numpy':
        os.environ['MN_CHAINER_CPU_KERNELS'] = '0'
    elif args.path == 'c':
        if os.environ.get('MN_CHAINER_CPU_KERNELS') == '0':
            del os.environ['MN_CHAINER_CPU_KERNELS']
        if not cpu_kernels.available():
            sys.stderr.write('check_float32.py: error: --path c: the C '
                             'kernels are not built (python setup.py '
                             'build_ext --inplace)\n')
            return 1
    render = compare.render_markdown if args.markdown \
        else compare.render_text
    print('{}NumPy {}, Chainer {}, Python {}; fit and transform: {}\n'.format(
        '' if args.markdown else '# ', numpy.__version__,
        chainer.__version__, platform.python_version(), _fit_path()))
    sys.stdout.write(render([transform_table()] + fit_tables()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
