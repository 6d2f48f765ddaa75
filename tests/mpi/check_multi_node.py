"""Run under ``mpiexec -n W``: multi-node MN equals single-process MN.

Every worker holds a slice of one global batch.  The multi-node link's
mixture, forward output, gradients and queue must equal those of a
single-process :class:`MixtureNormalization` on the concatenated batch (with
the same seed, hence the same K-means++ seeds) to 1e-6 in float64, and in
float32 1e4 standard deviations from zero (and the float64 transform); then a
few data-parallel training steps of the CIFAR CNN with MN must keep every
worker's parameters and queues identical.  Exits non-zero on any mismatch.
"""
import os
import sys
import warnings

import numpy

warnings.simplefilter('ignore')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))  # tests/, for mn_reference

import chainer  # NOQA: E402
import chainermn  # NOQA: E402

import mn_chainer.links as ML  # NOQA: E402
from models import cifar_cnn  # NOQA: E402
import mn_reference  # NOQA: E402


def check_layer(comm, relu, shape=(12, 5, 3, 3), k=3):
    rs = numpy.random.RandomState(0)
    modes = rs.randint(0, 3, size=(shape[0], 1) + shape[2:])
    x = rs.randn(*shape) + 3 * modes
    gy = rs.randn(*shape)
    gamma = rs.uniform(0.5, 1.5, shape[1])
    beta = rs.uniform(-0.3, 0.3, shape[1])
    parts = numpy.array_split(numpy.arange(shape[0]), comm.size)
    mine = parts[comm.rank]

    def make(cls, *args):
        link = cls(shape[1], *args, n_components=k, em_iter=4, relu=relu,
                   seed=11, dtype=numpy.float64, queue_size=3)
        link.gamma.array[...] = gamma
        link.beta.array[...] = beta
        return link

    single = make(ML.MixtureNormalization)
    multi = make(ML.MultiNodeMixtureNormalization, comm)
    for step in range(4):
        xs = x + 0.1 * step
        xv = chainer.Variable(xs.copy())
        y = single(xv)
        y.grad = gy
        y.backward()
        xm = chainer.Variable(xs[mine].copy())
        ym = multi(xm)
        ym.grad = gy[mine]
        ym.backward()
        tol = dict(rtol=1e-6, atol=1e-6)
        for a, b in zip(single.last_mixture, multi.last_mixture):
            numpy.testing.assert_allclose(b, a, **tol)
        numpy.testing.assert_allclose(ym.array, y.array[mine], **tol)
        numpy.testing.assert_allclose(xm.grad, xv.grad[mine], **tol)
        for name in ('gamma', 'beta'):
            total = comm.allreduce(getattr(multi, name).grad)
            numpy.testing.assert_allclose(total, getattr(single, name).grad,
                                          **tol)
        single.cleargrads()
        multi.cleargrads()
    for name in ('queue_weights', 'queue_means', 'queue_variances'):
        numpy.testing.assert_allclose(getattr(multi, name),
                                      getattr(single, name), rtol=1e-6,
                                      atol=1e-6)
    with chainer.using_config('train', False):
        numpy.testing.assert_allclose(multi(x[mine]).array,
                                      single(x).array[mine], rtol=1e-6,
                                      atol=1e-6)


def check_far_from_zero(comm, relu, shape=(12, 4, 3, 3), k=3):
    """Float32 activations 1e4 sd from zero (float32 BN loses 4e-4 there):
    the multi-node link matches the single-process one and the float64
    transform under the single-process responsibilities."""
    rs = numpy.random.RandomState(1)
    modes = rs.randint(0, k, size=(shape[0], 1) + shape[2:])
    scale = numpy.array([1.0, 0.01, 100.0, 3.0])[None, :, None, None]
    x = ((1e4 + rs.randn(*shape) + 3 * modes) * scale).astype(numpy.float32)
    gy = rs.randn(*shape).astype(numpy.float32)
    mine = numpy.array_split(numpy.arange(shape[0]), comm.size)[comm.rank]
    single = ML.MixtureNormalization(shape[1], n_components=k, relu=relu,
                                     seed=5, queue_size=2)
    multi = ML.MultiNodeMixtureNormalization(shape[1], comm, n_components=k,
                                             relu=relu, seed=5, queue_size=2)
    xv, xm = chainer.Variable(x.copy()), chainer.Variable(x[mine].copy())
    y, ym = single(xv), multi(xm)
    y.grad, ym.grad = gy, gy[mine]
    y.backward()
    ym.backward()
    expected = mn_reference.mixture_normalization(
        x, single._last_tau, single.gamma.array, single.beta.array,
        relu=relu)[mine]
    bound = 2e-5 * numpy.abs(expected).max()
    assert numpy.abs(ym.array - expected).max() <= bound
    assert numpy.abs(ym.array - y.array[mine]).max() <= bound
    numpy.testing.assert_allclose(xm.grad, xv.grad[mine], rtol=1e-4,
                                  atol=1e-4 * numpy.abs(xv.grad).max())
    numpy.testing.assert_allclose(multi.queue_means, single.queue_means,
                                  rtol=1e-6)
    numpy.testing.assert_allclose(multi.queue_variances,
                                  single.queue_variances, rtol=1e-4)


def check_population(comm, relu, shape=(12, 5, 3, 3), k=3):
    rs = numpy.random.RandomState(1)
    batches = []
    for _ in range(3):
        modes = rs.randint(0, 3, size=(shape[0], 1) + shape[2:])
        batches.append(rs.randn(*shape) + 3 * modes)
    mine = numpy.array_split(numpy.arange(shape[0]), comm.size)[comm.rank]

    def make(cls, *args):
        link = cls(shape[1], *args, n_components=k, relu=relu, seed=5,
                   dtype=numpy.float64)
        link(batches[0][mine] if args else batches[0])  # one training step
        return link

    tol = dict(rtol=1e-6, atol=1e-6)
    for n_batches in (1, 3):
        single = make(ML.MixtureNormalization)
        multi = make(ML.MultiNodeMixtureNormalization, comm)
        for link, part in ((single, slice(None)), (multi, mine)):
            link.start_finetuning()
            for b in batches[:n_batches]:
                link(b[part], finetune=True)
        populations = [
            sorted(zip(*(a.tolist() for a in link.fit_population())),
                   key=lambda c: c[1][0]) for link in (single, multi)]
        assert len(populations[0]) == len(populations[1]) == k
        # One batch: the union of the workers' samples is the batch, in
        # order; three: the same points in another order, so the seeding
        # differs but the fit converges to the same mixture.
        for a, b in zip(*populations):
            for u, v in zip(a, b):
                numpy.testing.assert_allclose(v, u, **tol)
        assert multi.population_points == single.population_points
        with chainer.using_config('train', False):
            numpy.testing.assert_allclose(multi(batches[0][mine]).array,
                                          single(batches[0]).array[mine],
                                          **tol)


def check_swap_of_chainermn_batch_normalization(comm):
    # ChainerMN's BN (not a subclass of L.BatchNormalization) is recognised
    # by its type and replaced like BN: size, eps and gamma carried over.
    block = ML.Conv2DBNActiv(3, 4, 3, norm_kwargs={'comm': comm, 'eps': 1e-3})
    assert isinstance(block.bn, chainermn.links.MultiNodeBatchNormalization)
    assert ML.is_batch_normalization(block.bn)
    block.bn.gamma.array[...] = 2
    ML.replace_batch_normalization(block, ['bn'], n_components=2, comm=comm,
                                   seed=0)
    assert isinstance(block.bn, ML.MultiNodeMixtureNormalization)
    assert block.bn.size == 4 and block.bn.eps == 1e-3
    numpy.testing.assert_array_equal(block.bn.gamma.array, 2)
    # Its __call__ bypasses link hooks: finetune() says it is left alone.
    model = chainer.Sequential(ML.Conv2DBNActiv(3, 4, 3,
                                                norm_kwargs={'comm': comm}))
    x = numpy.ones((2, 3, 5, 5), numpy.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ML.finetune(model, chainer.iterators.SerialIterator(
            [x], 1, repeat=False), converter=lambda batch, device: batch[0])
    assert any('running averages are kept' in str(w.message)
               for w in caught), [str(w.message) for w in caught]


def check_training(comm):
    model = chainer.links.Classifier(cifar_cnn.CifarCNN(
        n_class=10, widths=(4, 8, 8, 8), mn_layers=['conv2', 'conv3'],
        mn_kwargs=dict(n_components=3, em_iter=2, seed=3, comm=comm)))
    optimizer = chainermn.create_multi_node_optimizer(
        chainer.optimizers.MomentumSGD(0.01), comm)
    optimizer.setup(model)
    # Same initial weights everywhere (as train_cifar.py does).
    for _, param in sorted(model.namedparams()):
        param.array[...] = comm.bcast_obj(
            param.array if comm.rank == 0 else None, root=0)
    rs = numpy.random.RandomState(100 + comm.rank)  # different data
    for _ in range(3):
        x = rs.randn(8, 3, 32, 32).astype(numpy.float32)
        t = rs.randint(0, 10, size=8).astype(numpy.int32)
        optimizer.update(model, x, t)
    data = chainer.datasets.TupleDataset(
        rs.randn(16, 3, 32, 32).astype(numpy.float32),
        rs.randint(0, 10, size=16).astype(numpy.int32))
    assert ML.finetune(model, chainer.iterators.SerialIterator(
        data, 8, repeat=False, shuffle=False)) == 2
    state = [(n, p.array) for n, p in sorted(model.namedparams())]
    for path, link in sorted(model.namedlinks()):
        if isinstance(link, ML.MixtureNormalization):
            state.append((path + '/queue_means', link.queue_means))
            state.append((path + '/queue_weights', link.queue_weights))
            assert link.queue_length == 3, (path, link.queue_length)
            state.extend((path + '/' + name, getattr(link, name)) for name in (
                'population_weights', 'population_means',
                'population_variances'))
            assert link.population_points > 0
    for name, array in state:
        root = comm.bcast_obj(array if comm.rank == 0 else None, root=0)
        numpy.testing.assert_allclose(array, root, rtol=1e-5, atol=1e-6,
                                      err_msg=name)


def main():
    comm = chainermn.create_communicator('naive')
    try:
        for relu in (False, True):
            check_layer(comm, relu)
            check_far_from_zero(comm, relu)
        check_training(comm)
    except Exception as e:  # report and fail the whole job
        import traceback
        traceback.print_exc()
        print('rank {}: FAILED: {!r}'.format(comm.rank, e), flush=True)
        comm.mpi_comm.Abort(1)
    comm.mpi_comm.Barrier()
    if comm.rank == 0:
        print('multi-node checks passed on {} workers'.format(comm.size))
    return 0


if __name__ == '__main__':
    sys.exit(main())
