"""Tiny CIFAR-shaped ``.npz`` files for tests that run the trainers."""
import numpy


def write_tiny_cifar(path, n_train, n_test, seed=0):
    """Write random ``uint8`` images and labels in CIFAR's npz layout.

    Returns:
        str: ``path``.
    """
    rs = numpy.random.RandomState(seed)
    numpy.savez(
        path,
        x_train=rs.randint(0, 256, (n_train, 32, 32, 3)).astype('uint8'),
        y_train=rs.randint(0, 10, n_train).astype('int64'),
        x_test=rs.randint(0, 256, (n_test, 32, 32, 3)).astype('uint8'),
        y_test=rs.randint(0, 10, n_test).astype('int64'))
    return str(path)
