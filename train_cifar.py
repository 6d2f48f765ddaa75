#!/usr/bin/env python
"""Train a CIFAR model with batch or mixture normalization (paper section 4).

Examples::

    # Table II, row MN-2 on CIFAR-10 (100 epochs, batch 256)
    python train_cifar.py --preset MN-2 --device 0
    # a quick CPU run on 4,000 images of a local copy of CIFAR-10
    python train_cifar.py --preset BN-2 --data cifar10.npz \\
        --train-subset 4000 --test-subset 2000 -e 3 -b 128
    # continue it to 6 epochs
    python train_cifar.py --resume result -e 6
    # then evaluate it once more with population statistics (fine-tuning
    # over 20 training batches; recorded in result/finetuned.json)
    python train_cifar.py --resume result --finetune-batches 20

The implementation is :mod:`mn_chainer.train` (settings, run directory,
resuming); ``python train_cifar.py --help`` lists the flags. Errors end
with one line on stderr (exit status 2 for usage errors, 1 for data or
environment errors; ``--debug`` shows the traceback).
"""
import mn_chainer.cli
from mn_chainer.extensions import RandomStates  # NOQA: F401 (moved there)
from mn_chainer.train import DEFAULTS  # NOQA: F401 (this script's API)
from mn_chainer.train import get_parser  # NOQA: F401
from mn_chainer.train import lr_schedule_extension  # NOQA: F401
from mn_chainer.train import main
from mn_chainer.train import make_optimizer  # NOQA: F401
from mn_chainer.train import PROG
from mn_chainer.train import resolve_settings  # NOQA: F401


if __name__ == '__main__':
    mn_chainer.cli.run(main, prog=PROG)
