import json
import os

import pytest

import mn_chainer.paper
import mn_chainer.presets as presets


JSON_PATH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'mn_chainer', 'data', 'paper_results.json')

TABLE2_ROWS = {
    'cifar10': ['BN-1', 'BN-2', 'BN-3', 'BN-4',
                'MN-1', 'MN-2', 'MN-3', 'MN-4'],
    'cifar100': ['BN-1', 'BN-2', 'BN-3', 'BN-4', 'MN-1', 'MN-2', 'MN-3',
                 'MN-4', 'MN-5', 'MN-6', 'MN-7', 'MN-8'],
}


def _json():
    with open(JSON_PATH) as f:
        return json.load(f)


def _table2_cases():
    table = _json()['table2_cifar_cnn']
    return [(dataset, row, entry)
            for dataset in ('cifar10', 'cifar100')
            for row, entry in table[dataset].items()]


def test_load_paper_results_matches_file_and_is_a_copy():
    results = mn_chainer.paper.load_paper_results()
    assert results == _json()
    results['table2_cifar_cnn'].clear()
    assert mn_chainer.paper.load_paper_results() == _json()


@pytest.mark.parametrize('dataset', ['cifar10', 'cifar100'])
def test_table2_rows(dataset):
    assert presets.table_rows('table2', dataset) == TABLE2_ROWS[dataset]
    assert presets.list_presets(dataset, model='cifar_cnn') == [
        'table2:' + r for r in TABLE2_ROWS[dataset]]


@pytest.mark.parametrize('dataset,row,entry', _table2_cases())
def test_every_table2_preset_is_its_paper_row(dataset, row, entry):
    preset = presets.get_preset('table2:' + row, dataset)
    assert preset.id == 'table2:' + row
    assert (preset.table, preset.row, preset.dataset) == (
        'table2', row, dataset)
    assert preset.model == 'cifar_cnn'
    mn = entry['mn']
    if mn is None:
        assert preset.norm == 'bn'
        assert preset.mn_layers == ()
        assert preset.n_components is None and preset.em_iter is None
    else:
        assert preset.norm == 'mn'
        assert list(preset.mn_layers) == mn['layers']
        assert preset.n_components == mn['K']
        assert preset.em_iter == mn['em_iter']
    assert preset.lr == entry['lr']
    assert preset.weight_decay == entry['wd']
    # Table II's common setting (paper sec. 4.2).
    assert preset.optimizer == 'rmsprop'
    assert preset.lr_schedule == presets.LRSchedule(
        'exponential', 0.93, every=2)
    assert preset.batchsize == 256
    assert preset.epoch == 100
    assert preset.paper['acc'] == entry['acc']
    # The short name resolves in the CIFAR CNN's default table.
    assert presets.get_preset(row, dataset) == preset
    assert presets.get_preset(row, dataset, model='cifar_cnn') == preset


# Literal numbers from the paper's Table II.
@pytest.mark.parametrize('dataset,row,layers,k,em_iter,lr,wd,acc100', [
    ('cifar10', 'BN-1', (), None, None, 0.01, 1e-4, 86.74),
    ('cifar10', 'BN-3', (), None, None, 0.05, 1e-4, 77.35),
    ('cifar10', 'MN-2', ('conv3',), 3, 2, 0.01, 2e-5, 88.47),
    ('cifar10', 'MN-4', ('conv3',), 3, 2, 0.05, 2e-5, 83.87),
    ('cifar100', 'BN-4', (), None, None, 0.05, 2e-5, 49.08),
    ('cifar100', 'MN-5', ('conv3',), 3, 4, 0.01, 2e-5, 62.76),
    ('cifar100', 'MN-6', ('conv3',), 3, 8, 0.01, 2e-5, 63.12),
    ('cifar100', 'MN-7', ('conv2',), 3, 2, 0.01, 2e-5, 62.63),
    ('cifar100', 'MN-8', ('conv2', 'conv3'), 3, 2, 0.01, 2e-5, 62.96),
])
def test_table2_literal_values(dataset, row, layers, k, em_iter, lr, wd,
                               acc100):
    p = presets.get_preset(row, dataset)
    assert (p.mn_layers, p.n_components, p.em_iter) == (layers, k, em_iter)
    assert p.lr == lr
    assert p.weight_decay == wd
    assert p.paper['acc'][-1] == acc100
    assert p.paper['checkpoints_epochs'] == [25, 50, 75, 100]


def test_table3_steps_attached():
    assert presets.get_preset('MN-2', 'cifar10').paper['steps'] == 1.34
    assert presets.get_preset('MN-6', 'cifar100').paper['steps'] == 1.09
    assert 'steps' not in presets.get_preset('MN-1', 'cifar10').paper


def test_row_missing_for_dataset():
    with pytest.raises(ValueError, match='exists for cifar100'):
        presets.get_preset('MN-5', 'cifar10')


def test_unknown_row_lists_valid_rows():
    with pytest.raises(ValueError, match='BN-1, BN-2'):
        presets.get_preset('table2:BN-9', 'cifar10')


def test_unknown_table():
    with pytest.raises(ValueError, match='table2'):
        presets.get_preset('table99:MN-2')


def test_model_mismatch():
    with pytest.raises(ValueError, match='cifar_cnn'):
        presets.get_preset('table2:MN-2', model='densenet')


def test_unknown_dataset():
    with pytest.raises(ValueError, match='cifar10, cifar100'):
        presets.get_preset('table2:MN-2', 'svhn')


def test_as_dict_is_json_serializable():
    d = presets.get_preset('MN-8', 'cifar100').as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d['mn_layers'] == ['conv2', 'conv3']
    assert d['lr_schedule'] == {'kind': 'exponential', 'rate': 0.93,
                                'every': 2, 'at': []}


def test_lr_schedule_shift_epochs():
    assert presets.LRSchedule('exponential', 0.93, every=2).shift_epochs(
        9) == [2, 4, 6, 8]
    assert presets.LRSchedule('step', 0.1, at=(0.5, 0.75)).shift_epochs(
        200) == [100, 150]
    with pytest.raises(ValueError):
        presets.LRSchedule('exponential', 0.93)
    with pytest.raises(ValueError):
        presets.LRSchedule('step', 0.1, at=(1.5,))
    with pytest.raises(ValueError):
        presets.LRSchedule('cosine', 0.1)


def test_register_table_rejects_duplicates_and_colons():
    with pytest.raises(ValueError):
        presets.register_table('table2', 'dup', 'cifar_cnn', ('cifar10',))(
            lambda paper, dataset: {})
    with pytest.raises(ValueError):
        presets.register_table('a:b', 'bad', 'cifar_cnn', ('cifar10',))


def test_every_preset_table_belongs_to_an_experiment_of_its_length():
    """The comparison tools' experiments and the presets agree: each preset
    row trains as long, and with the batch size, of its experiment."""
    for table_id in presets.tables():
        experiment = presets.EXPERIMENTS[presets.experiment_of_table(
            table_id)]
        table = presets._get_table(table_id)
        for dataset in table.datasets:
            for preset in presets._build(table_id, dataset).values():
                assert (preset.epoch, preset.batchsize) == (
                    experiment.epoch, experiment.batchsize), preset.id
        if experiment.models:
            assert table.model in experiment.models


def test_experiment_results_name_paper_sections():
    paper = mn_chainer.paper.load_paper_results()
    for experiment in presets.EXPERIMENTS.values():
        assert experiment.results
        for form, (key, label) in experiment.results.items():
            assert form in ('accuracy', 'steps', 'error')
            assert key in paper and label


@pytest.mark.parametrize('table,experiment', [
    ('table2', 'cifar_cnn'), ('Table3', 'cifar_cnn'),
    ('table3_cifar_cnn_steps', 'cifar_cnn'), ('table5', 'inception'),
    ('table6_decay_0.1_at_0.5_0.75', 'nesterov'),
    ('densenet_l100', 'densenet'), ('densenet_cifar100', 'densenet'),
])
def test_experiment_of_table(table, experiment):
    assert presets.experiment_of_table(table) == experiment


def test_experiment_of_unknown_table_lists_valid_ids():
    with pytest.raises(ValueError, match='valid tables: table2, table3'):
        presets.experiment_of_table('table22')


def test_experiment_of_model():
    assert presets.experiment_of_model('cifar_cnn') == 'cifar_cnn'
    assert presets.experiment_of_model('densenet100') == 'densenet'
    assert presets.experiment_of_model('inception_v3') == 'inception'
    assert presets.experiment_of_model('resnet') is None
