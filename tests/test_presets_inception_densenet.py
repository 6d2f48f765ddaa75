"""Presets of Tables IV-VI (Inception-V3) and the DenseNet runs (§4.4).

The expected values are read from the paper data independently of
``mn_chainer.presets``: row labels and per-row numbers from the tables, the
table-wide settings parsed from their ``optimizer``/``setting`` strings.
"""
import json
import re

import pytest

import mn_chainer.links
import mn_chainer.paper
import mn_chainer.presets
import models
import train_cifar
from models import densenet
from models import inception_v3


@pytest.fixture(scope='module')
def paper():
    with open(mn_chainer.paper.PAPER_RESULTS_PATH) as f:
        return json.load(f)


def _number(pattern, text):
    return float(re.search(pattern, text).group(1))


# ---------------------------------------------------------------------------
# Table IV


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_table4_rows_match_paper(paper, dataset):
    table = paper['table4_inception_v3']
    steps = paper['table5_inception_v3_steps'][dataset]
    text = table['optimizer']
    assert mn_chainer.presets.table_rows('table4', dataset) == list(
        table[dataset])
    for row, entry in table[dataset].items():
        p = mn_chainer.presets.get_preset('table4:' + row, dataset)
        assert p.id == 'table4:' + row
        assert (p.table, p.row, p.dataset) == ('table4', row, dataset)
        assert p.model == 'inception_v3'
        assert p.lr == entry['lr']
        assert p.weight_decay == entry['wd']
        if entry['mn'] is None:
            assert p.norm == 'bn'
            assert p.mn_layers == ()
            assert p.n_components is None and p.em_iter is None
        else:
            assert p.norm == 'mn'
            assert list(p.mn_layers) == entry['mn']['layers']
            assert p.n_components == entry['mn']['K']
            assert p.em_iter == entry['mn']['em_iter']
        # "RMSprop, momentum 0.9, lr decayed x0.93 every 4 epochs, batch
        # 128, wd 5e-4, 200 epochs"
        assert text.startswith('RMSprop')
        assert p.optimizer == 'rmsprop'
        assert p.lr_schedule.kind == 'exponential'
        assert p.lr_schedule.rate == _number(r'x([\d.]+)', text)
        assert p.lr_schedule.every == _number(r'every (\d+) epochs', text)
        assert p.batchsize == _number(r'batch (\d+)', text)
        assert p.epoch == _number(r'(\d+) epochs$', text)
        assert p.weight_decay == _number(r'wd ([\d.e-]+)', text)
        assert p.paper['acc'] == entry['acc']
        assert p.paper['checkpoints_epochs'] == table['checkpoints_epochs']
        if row in steps['rows']:
            assert p.paper['steps'] == steps['rows'][row]['steps']
            assert p.paper['steps_target'] == steps['target']


def test_table4_is_inception_default_and_rows_per_dataset():
    p = mn_chainer.presets.get_preset('MN-4', 'cifar100', 'inception_v3')
    assert p.id == 'table4:MN-4'
    assert p.mn_layers == ('inc2/0', 'inc3/0')
    assert (p.n_components, p.em_iter) == (5, 2)
    # MN-3 exists only for CIFAR-10, BN-5 and MN-5 only for CIFAR-100.
    with pytest.raises(ValueError, match='cifar10'):
        mn_chainer.presets.get_preset('table4:MN-3', 'cifar100')
    with pytest.raises(ValueError, match='cifar100'):
        mn_chainer.presets.get_preset('table4:BN-5', 'cifar10')
    assert mn_chainer.presets.get_preset('table4:MN-5', 'cifar100').lr == \
        0.005


# ---------------------------------------------------------------------------
# Table VI


def test_table6_policies_are_the_papers(paper):
    section = paper['table6_inception_v3_nesterov_cifar100']
    keys = [k for k in section if k.startswith('decay_')]
    assert list(mn_chainer.presets.TABLE6_POLICIES) == keys
    assert [t for t in mn_chainer.presets.tables()
            if t.startswith('table6')] == ['table6_' + k for k in keys]


@pytest.mark.parametrize('key,rate,at,shifts', [
    ('decay_0.1_at_0.5_0.75', 0.1, (0.5, 0.75), [75, 112]),
    ('decay_0.2_at_0.3_0.6_0.8', 0.2, (0.3, 0.6, 0.8), [45, 90, 120]),
])
def test_table6_rows_match_paper(paper, key, rate, at, shifts):
    section = paper['table6_inception_v3_nesterov_cifar100']
    text = section['setting']
    table_id = 'table6_' + key
    assert mn_chainer.presets.table_rows(table_id, 'cifar100') == list(
        section[key]['rows'])
    for row, entry in section[key]['rows'].items():
        p = mn_chainer.presets.get_preset(
            '{}:{}'.format(table_id, row), 'cifar100')
        assert p.model == 'inception_v3'
        assert text.startswith('Nesterov')
        assert p.optimizer == 'nesterov'
        assert p.lr == _number(r'initial lr ([\d.]+)', text)
        assert p.batchsize == _number(r'batch (\d+)', text)
        assert p.epoch == _number(r'(\d+) epochs', text)
        assert p.lr_schedule.kind == 'step'
        assert p.lr_schedule.rate == rate
        assert p.lr_schedule.at == at
        assert p.lr_schedule.shift_epochs(p.epoch) == shifts
        assert p.paper['steps'] == entry['steps']
        assert p.paper['max_acc'] == entry['max_acc']
        assert p.paper['steps_target'] == section[key]['target']
        if row == 'MN':
            layers = re.search(r'MN at (\S+) and (\S+)$', text).groups()
            assert p.mn_layers == layers == ('inc2/1', 'inc3/0')
            assert (p.n_components, p.em_iter) == (5, 2)
        else:
            assert row == 'BN'
            assert p.mn_layers == ()
    with pytest.raises(ValueError, match='cifar100'):
        mn_chainer.presets.get_preset(table_id + ':BN', 'cifar10')


# ---------------------------------------------------------------------------
# DenseNet


@pytest.mark.parametrize('depth', [40, 100])
def test_densenet_rows_match_paper(paper, depth):
    section = paper['densenet_cifar100']
    text = section['setting']
    table_id = 'densenet_l{}'.format(depth)
    expected_rows = [r for r in section['best_test_error_percent']
                     if r.startswith('L{}_'.format(depth))]
    assert expected_rows == ['L{}_BN'.format(depth), 'L{}_MN'.format(depth)]
    assert mn_chainer.presets.table_rows(table_id, 'cifar100') == \
        expected_rows
    for row in expected_rows:
        p = mn_chainer.presets.get_preset(
            '{}:{}'.format(table_id, row), 'cifar100')
        assert p.model == 'densenet{}'.format(depth)
        assert text.startswith('Nesterov')
        assert p.optimizer == 'nesterov'
        assert p.batchsize == _number(r'batch (\d+)', text)
        assert p.lr == _number(r'lr ([\d.]+)', text)
        assert p.epoch == _number(r'of (\d+) epochs', text)
        assert p.lr_schedule.kind == 'step'
        assert p.lr_schedule.rate == 1. / _number(r'divided by (\d+)', text)
        assert p.lr_schedule.at == (0.5, 0.75)
        assert p.lr_schedule.shift_epochs(p.epoch) == [100, 150]
        assert p.weight_decay == 1e-4
        assert p.paper['best_test_error_percent'] == \
            section['best_test_error_percent'][row]
        if row.endswith('_MN'):
            assert p.mn_layers == ('trans1', 'trans2', 'final')
            assert p.n_components == _number(r'K=(\d+)', text)
            assert p.em_iter == _number(r'EM iter (\d+)', text)
        else:
            assert p.mn_layers == ()


# ---------------------------------------------------------------------------
# MN links built from the presets


def _n_mn(model):
    return len(list(mn_chainer.links.iter_mixture_normalizations(model)))


def _inception_presets():
    tables = [('cifar10', 'table4'), ('cifar100', 'table4')] + [
        ('cifar100', 'table6_' + key)
        for key in mn_chainer.presets.TABLE6_POLICIES]
    return [(dataset, '{}:{}'.format(table, row))
            for dataset, table in tables
            for row in mn_chainer.presets.table_rows(table, dataset)]


#: Expected number of MN links: 2 per reduction, 4 per 17x17 module,
#: 6 per 8x8 module.
_PER_LAYER = {'red1': 2, 'red2': 2, 'inc2/0': 4, 'inc2/1': 4, 'inc3/0': 6}


def test_inception_preset_mn_counts():
    cases = _inception_presets()
    assert len(cases) == 5 + 6 + 2 + 2
    counts = {}
    built = {}
    for dataset, name in cases:
        p = mn_chainer.presets.get_preset(name, dataset)
        expected = sum(_PER_LAYER[layer] for layer in p.mn_layers)
        key = p.mn_layers
        if key not in built:
            model = inception_v3.InceptionV3(
                width=1. / 32, mn_layers=list(p.mn_layers) or None,
                mn_kwargs={'n_components': p.n_components or 3,
                           'em_iter': p.em_iter or 2})
            built[key] = _n_mn(model)
        assert built[key] == expected, name
        counts[(dataset, name)] = expected
    assert counts[('cifar10', 'table4:MN-1')] == 4      # red1 + red2
    assert counts[('cifar10', 'table4:MN-2')] == 10     # + inc3/0
    assert counts[('cifar100', 'table4:MN-4')] == 10    # inc2/0 + inc3/0
    assert counts[('cifar100', 'table6_decay_0.1_at_0.5_0.75:MN')] == 10
    assert counts[('cifar10', 'table4:BN-1')] == 0


@pytest.mark.parametrize('depth,cls,dim', [
    (40, densenet.DenseNet40, 448), (100, densenet.DenseNet100, 1168)])
def test_densenet_preset_models(depth, cls, dim):
    p = mn_chainer.presets.get_preset(
        'densenet_l{0}:L{0}_MN'.format(depth), 'cifar100')
    assert models.get_model_class(p.model) is cls
    model = models.get_model(
        p.model, n_class=100, mn_layers=list(p.mn_layers),
        mn_kwargs={'n_components': p.n_components, 'em_iter': p.em_iter})
    mns = dict(mn_chainer.links.iter_mixture_normalizations(model))
    assert sorted(mns) == ['final', 'trans1', 'trans2']
    assert all(link.n_components == 5 for link in mns.values())
    assert model.out_channels == dim
    assert model.layers_per_block == (depth - 4) // 3


# ---------------------------------------------------------------------------
# train_cifar.py resolves the presets


@pytest.mark.parametrize('dataset,name,mn_layers,optimizer', [
    ('cifar10', 'table4:MN-1', ['red1', 'red2'], 'rmsprop'),
    ('cifar100', 'table6_decay_0.2_at_0.3_0.6_0.8:MN', ['inc2/1', 'inc3/0'],
     'nesterov'),
    ('cifar100', 'densenet_l100:L100_MN', ['trans1', 'trans2', 'final'],
     'nesterov'),
    ('cifar100', 'densenet_l40:L40_BN', [], 'nesterov'),
])
def test_train_cifar_resolves(dataset, name, mn_layers, optimizer):
    parser = train_cifar.get_parser()
    args = parser.parse_args(['--preset', name, '--dataset', dataset])
    settings = train_cifar.resolve_settings(args, parser)
    p = mn_chainer.presets.get_preset(name, dataset)
    assert settings['preset'] == name
    assert settings['table'] == p.table
    assert settings['row'] == p.row
    assert settings['model'] == p.model
    assert settings['mn_layers'] == mn_layers
    assert settings['optimizer'] == optimizer
    assert settings['lr'] == p.lr
    assert settings['batchsize'] == p.batchsize
    assert settings['epoch'] == p.epoch
    assert settings['weight_decay'] == p.weight_decay
    assert settings['lr_schedule'] == p.lr_schedule.as_dict()
