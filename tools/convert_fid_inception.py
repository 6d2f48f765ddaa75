#!/usr/bin/env python
"""Convert pytorch-fid's FID Inception weights to the npz of mn_chainer.fid.

Input: ``pt_inception-2015-12-05-6726825d.pth``, the state dict that
pytorch-fid (https://github.com/mseitzer/pytorch-fid, release
``fid_weights``) distributes: the TensorFlow FID Inception graph
(``inception-2015-12-05``) ported to PyTorch. Output: an npz that
``mn_chainer.fid.InceptionV3FID(weights=...)`` and
``train_dcgan.py --inception-weights`` load.

Reading the ``.pth`` file needs PyTorch (``pip install torch``, CPU build is
enough); nothing else in this project does. The conversion itself is plain
NumPy (:func:`convert_state_dict`)::

    python tools/convert_fid_inception.py \\
        pt_inception-2015-12-05-6726825d.pth fid_inception.npz

The npz is checked by loading it strictly into ``InceptionV3FID`` when
Chainer and ``mn_chainer`` are importable (``--no-check`` skips it).
"""
import argparse
import os
import sys

import numpy


#: Name mapping, torch state-dict suffix -> Chainer parameter suffix. Module
#: names (``Conv2d_1a_3x3``, ``Mixed_5b.branch1x1``, ...) are the same on both
#: sides with ``.`` -> ``/``; only the leaf names differ:
#:
#: ==========================  ==========================
#: torch (BasicConv2d)         Chainer (BasicConv2d)
#: ==========================  ==========================
#: ``conv.weight``             ``conv/W``
#: ``bn.weight``               ``bn/gamma``
#: ``bn.bias``                 ``bn/beta``
#: ``bn.running_mean``         ``bn/avg_mean``
#: ``bn.running_var``          ``bn/avg_var``
#: ==========================  ==========================
NAME_MAP = (
    ('conv.weight', 'conv/W'),
    ('bn.weight', 'bn/gamma'),
    ('bn.bias', 'bn/beta'),
    ('bn.running_mean', 'bn/avg_mean'),
    ('bn.running_var', 'bn/avg_var'),
)

#: Entries with no counterpart in the feature extractor: the 1008-way
#: classifier after pool3, the auxiliary head, and BN's batch counters.
SKIPPED_PREFIXES = ('fc.', 'AuxLogits.')
SKIPPED_SUFFIXES = ('num_batches_tracked',)


def convert_name(torch_name):
    """Map one torch state-dict key to its Chainer npz key (or ``None``)."""
    if torch_name.startswith(SKIPPED_PREFIXES) or \
            torch_name.endswith(SKIPPED_SUFFIXES):
        return None
    for torch_suffix, chainer_suffix in NAME_MAP:
        if torch_name.endswith('.' + torch_suffix):
            module = torch_name[:-len(torch_suffix) - 1]
            return module.replace('.', '/') + '/' + chainer_suffix
    raise ValueError('unexpected key in the FID Inception state dict: '
                     '{!r}'.format(torch_name))


def convert_state_dict(state_dict):
    """Convert a state dict of NumPy arrays to the Chainer npz entries.

    Args:
        state_dict (dict): torch key -> ``numpy.ndarray``.

    Returns:
        dict: Chainer key -> float32 array, plus each batch normalization's
        ``N`` counter (0; unused in test mode) that
        ``chainer.serializers.load_npz`` expects.

    """
    out = {}
    for name, value in state_dict.items():
        key = convert_name(name)
        if key is None:
            continue
        out[key] = numpy.asarray(value, dtype=numpy.float32)
        if key.endswith('/bn/avg_mean'):
            out[key[:-len('avg_mean')] + 'N'] = numpy.asarray(0)
    return out


def load_torch_state_dict(path):
    """Read a ``.pth`` state dict into NumPy arrays (needs PyTorch)."""
    try:
        import torch
    except ImportError:
        sys.exit('reading {} needs PyTorch: pip install torch (only the '
                 'conversion needs it)'.format(path))
    state = torch.load(path, map_location='cpu')
    if hasattr(state, 'state_dict'):
        state = state.state_dict()
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def check_npz(path):
    """Load the npz strictly into ``InceptionV3FID``; raise on a mismatch."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    import mn_chainer.fid
    mn_chainer.fid.InceptionV3FID(weights=path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='pytorch-fid weights (.pth state dict), '
                        'e.g. ' + 'pt_inception-2015-12-05-6726825d.pth')
    parser.add_argument('dst', help='output npz')
    parser.add_argument('--no-check', action='store_true',
                        help='do not load the result into InceptionV3FID')
    args = parser.parse_args(argv)

    arrays = convert_state_dict(load_torch_state_dict(args.src))
    numpy.savez(args.dst, **arrays)
    dst = args.dst if args.dst.endswith('.npz') else args.dst + '.npz'
    print('wrote {} ({} arrays)'.format(dst, len(arrays)))
    if not args.no_check:
        try:
            import chainer  # NOQA
        except ImportError:
            print('chainer is not importable here: skipped the load check')
            return
        check_npz(dst)
        print('loaded into mn_chainer.fid.InceptionV3FID: OK')


if __name__ == '__main__':
    main()
