"""Tiny CIFAR-format files for the training tests (random images)."""
import numpy


def write_tiny_cifar(path, n_train, n_test, seed=0):
    """Writes ``n_train``/``n_test`` random uint8 NHWC images with labels
    0..9 in the ``--data`` format; returns ``path`` as a string."""
    rng = numpy.random.RandomState(seed)
    numpy.savez(
        str(path),
        x_train=rng.randint(0, 256, (n_train, 32, 32, 3)).astype(
            numpy.uint8),
        y_train=rng.randint(0, 10, n_train),
        x_test=rng.randint(0, 256, (n_test, 32, 32, 3)).astype(numpy.uint8),
        y_test=rng.randint(0, 10, n_test))
    return str(path)
