import csv
import io
import json
import os
import re

import pytest

from mn_chainer import compare


# Test accuracies (fractions) per epoch of three synthetic 8-epoch runs on
# 4,096 training images with batch 128 (32 updates per epoch, 256 in all).
BN = [0.40, 0.50, 0.55, 0.60, 0.58, 0.62, 0.61, 0.60]
MN = [0.45, 0.56, 0.63, 0.61, 0.64, 0.66, 0.65, 0.67]
SLOW = [0.30, 0.40, 0.50, 0.55, 0.58, 0.60, 0.61, 0.59]  # never >= 0.62


def _write_run(directory, accs, row=None, table='table2', dataset='cifar10',
               n_train=4096, batchsize=128, epoch=None, seed=0,
               args=True, extra=None):
    os.makedirs(str(directory), exist_ok=True)
    per_epoch = -(-n_train // batchsize)
    log = []
    for e, acc in enumerate(accs, 1):
        entry = {'epoch': e, 'iteration': e * per_epoch, 'main/loss': 1.0,
                 'main/accuracy': acc, 'validation/main/loss': 1.0,
                 'validation/main/accuracy': acc, 'lr': 0.01,
                 'elapsed_time': 3.0 * e}
        entry.update(extra or {})
        log.append(entry)
    with open(os.path.join(str(directory), 'log'), 'w') as f:
        json.dump(log, f)
    if args:
        settings = {
            'model': 'cifar_cnn', 'dataset': dataset, 'preset': None,
            'table': table, 'row': row, 'epoch': epoch or len(accs),
            'batchsize': batchsize, 'train_subset': n_train,
            'test_subset': 1000, 'n_train': n_train, 'lr': 0.01,
            'weight_decay': 2e-5,
            'mn_layers': ['conv3'] if row and row.startswith('MN') else [],
            'n_components': 3, 'em_iter': 2, 'seed': seed}
        with open(os.path.join(str(directory), 'args.json'), 'w') as f:
            json.dump(settings, f)
    return str(directory)


@pytest.fixture
def runs(tmp_path):
    return [_write_run(tmp_path / 'bn', BN, 'BN-2'),
            _write_run(tmp_path / 'mn', MN, 'MN-2'),
            _write_run(tmp_path / 'slow', SLOW, 'MN-1')]


def _log(accs):
    return [{'epoch': e, 'iteration': 32 * e,
             'validation/main/accuracy': a} for e, a in enumerate(accs, 1)]


def _output(capsys, argv):
    assert compare.main(argv) == 0
    return capsys.readouterr().out


def _csv_blocks(text):
    """CSV blocks (separated by an empty row) as lists of dicts."""
    blocks, current = [], []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            blocks.append(current)
            current = []
        else:
            current.append(row)
    blocks.append(current)
    return [[dict(zip(b[0], r)) for r in b[1:]] for b in blocks]


def _by_run(block):
    return {r['run']: r for r in block}


# --- metrics on hand-made logs ----------------------------------------------

def test_max_accuracy_by_epoch():
    log = _log(BN)
    assert compare.max_accuracy_by_epoch(log, 1) == 0.40
    assert compare.max_accuracy_by_epoch(log, 2) == 0.50
    assert compare.max_accuracy_by_epoch(log, 4) == 0.60
    # Epoch 5 drops to 0.58: the maximum so far stays 0.60.
    assert compare.max_accuracy_by_epoch(log, 5) == 0.60
    assert compare.max_accuracy_by_epoch(log, 6) == 0.62
    assert compare.max_accuracy_by_epoch(log, 8) == 0.62
    assert compare.max_accuracy_by_epoch(log, 0) is None
    assert compare.max_accuracy(_log(MN)) == 0.67


def test_steps_to_reach():
    # BN reaches its own maximum 0.62 at epoch 6 = 6 x 32 updates.
    assert compare.steps_to_reach(_log(BN), 0.62) == 192
    # MN first reaches 0.62 at epoch 3 (0.63).
    assert compare.steps_to_reach(_log(MN), 0.62) == 96
    assert compare.steps_to_reach(_log(SLOW), 0.62) is None
    # Entries without the key are skipped.
    log = [{'epoch': 1, 'iteration': 10}] + _log([0.7])
    assert compare.steps_to_reach(log, 0.7) == 32


def test_checkpoints_and_lengths():
    assert [compare.checkpoint_epoch(5, f) for f in compare.FRACTIONS] == [
        1, 2, 3, 5]
    assert [compare.checkpoint_epoch(100, f)
            for f in compare.FRACTIONS] == [25, 50, 75, 100]
    # 100 epochs of 50,000 images with batch 256 (Chainer's epoch trigger).
    assert compare.total_iterations(100, 50000, 256) == 19532
    assert compare.total_iterations(8, 4096, 128) == 256


def test_resolve_table():
    assert compare.resolve_table('table2') == 'cifar_cnn'
    assert compare.resolve_table('table3_cifar_cnn_steps') == 'cifar_cnn'
    assert compare.resolve_table('Table5') == 'inception'
    assert compare.resolve_table('densenet_cifar100') == 'densenet'
    with pytest.raises(ValueError):
        compare.resolve_table('table9')


# --- the command line -------------------------------------------------------

def test_csv_accuracy_and_steps(runs, capsys):
    blocks = _csv_blocks(_output(capsys, runs + ['--format', 'csv']))
    assert len(blocks) == 2
    acc, steps = _by_run(blocks[0]), _by_run(blocks[1])
    assert blocks[0][0]['table'].startswith('Table II ')
    assert blocks[1][0]['table'].startswith('Table III ')

    # Max test accuracy (%) by 25/50/75/100% of 8 epochs = epochs 2/4/6/8.
    expected = {'bn': [50, 60, 62, 62], 'mn': [56, 63, 66, 67],
                'slow': [40, 55, 60, 61]}
    for run, values in expected.items():
        got = [float(acc[run]['acc_{}_ours'.format(p)])
               for p in (25, 50, 75, 100)]
        assert got == pytest.approx(values)
    # The paper's rows, as printed in Table II (CIFAR-10).
    assert [acc['bn']['acc_{}_paper'.format(p)]
            for p in (25, 50, 75, 100)] == [
        '84.11', '86.92', '87.65', '87.95']
    assert [acc['mn']['acc_{}_paper'.format(p)]
            for p in (25, 50, 75, 100)] == [
        '85.56', '87.28', '88.05', '88.47']
    assert acc['slow']['acc_25_paper'] == '81.91'
    assert acc['mn']['epochs'] == '8/100'
    assert 'same fraction' not in acc['mn']['note']
    assert '25/50/75/100% of 8 epochs' in acc['mn']['note']

    # Target: BN's max 62%; BN reaches it after 192 of 256 updates.
    assert float(steps['bn']['target_ours']) == pytest.approx(62)
    assert steps['bn']['updates_ours'] == '192'
    assert float(steps['bn']['train_pct_ours']) == pytest.approx(75)
    assert float(steps['bn']['reduction_ours']) == 0
    # MN: 96 updates = 37.5% of training, half of BN's.
    assert steps['mn']['updates_ours'] == '96'
    assert float(steps['mn']['steps_ours']) == pytest.approx(0.0096)
    assert float(steps['mn']['train_pct_ours']) == pytest.approx(37.5)
    assert float(steps['mn']['reduction_ours']) == pytest.approx(50)
    assert float(steps['mn']['steps_scaled']) == pytest.approx(
        0.375 * 19532 / 1e4, rel=1e-5)
    assert float(steps['mn']['max_acc_ours']) == pytest.approx(67)
    # Never reached (the paper's "–").
    for key in ('updates_ours', 'steps_ours'):
        assert steps['slow'][key] == compare.NOT_REACHED
    for key in ('steps_scaled', 'train_pct_ours', 'reduction_ours'):
        assert steps['slow'][key] == ''
    assert float(steps['slow']['max_acc_ours']) == pytest.approx(61)
    # Paper Table III (CIFAR-10): BN-2 1.95, MN-2 1.34, target 87.95;
    # MN-1 has no Table III row.
    assert steps['bn']['steps_paper'] == '1.95'
    assert steps['mn']['steps_paper'] == '1.34'
    assert steps['mn']['max_acc_paper'] == '88.47'
    assert steps['mn']['target_paper'] == '87.95'
    assert steps['slow']['steps_paper'] == ''
    assert float(steps['mn']['reduction_paper']) == pytest.approx(
        100 * (1 - 1.34 / 1.95), abs=1e-3)
    assert float(steps['mn']['train_pct_paper']) == pytest.approx(
        100 * 13400 / 19532, abs=1e-3)


def test_text_format(runs, capsys):
    out = _output(capsys, runs)
    lines = out.splitlines()
    assert lines[0].startswith('Table II (CIFAR CNN), CIFAR-10')
    header = lines[1].split()
    assert header[:3] == ['run', 'row', 'epochs']
    # Aligned: the dash rule spans every row; the rows parse by spaces.
    rule = lines[2]
    assert set(rule) <= {'-', ' '}
    rows = [re.split(r'\s{2,}', line.strip()) for line in lines[3:6]]
    # BN rows first, then by paper row.
    assert [r[0] for r in rows] == ['bn', 'slow', 'mn']
    assert rows[0] == ['bn', 'BN-2', '8/100', '50.00', '84.11', '60.00',
                       '86.92', '62.00', '87.65', '62.00', '87.95']
    for line in lines[3:6]:
        assert len(line) <= len(rule)
    assert 'same fraction of training' in out
    assert ('ours at 25/50/75/100% of 8 epochs, 4,096 training images, '
            'batch 128 (up to epochs 2, 4, 6, 8) vs paper at 25/50/75/100% '
            'of 100 epochs') in out
    assert 'Table III (CIFAR CNN), CIFAR-10' in out
    assert '; paper target 87.95)' in out
    slow = [line for line in lines if line.startswith('slow ')][-1]
    cells = re.split(r'\s{2,}', slow)
    assert cells[:5] == ['slow', 'MN-1', '62.00', 'not reached',
                         'not reached']
    assert cells[5:] == ['–'] * 6 + ['61.00', '–', '–']


def test_markdown_format(runs, capsys):
    out = _output(capsys, runs + ['--format', 'markdown'])
    tables, current = [], []
    for line in out.splitlines():
        if line.startswith('|'):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    assert len(tables) == 2
    for table in tables:
        n = table[0].count('|')
        assert all(line.count('|') == n for line in table)
        assert re.match(r'^\|(:---|---:)(\|(:---|---:))*\|$', table[1])
        assert len(table) == 2 + 3
    cells = [c.strip() for c in tables[0][2].strip('|').split('|')]
    assert cells[:5] == ['bn', 'BN-2', '8/100', '50.00', '84.11']
    assert '- bn, mn, slow: ours at 25/50/75/100%' in out


def test_full_length_run_has_no_fraction_label(tmp_path, capsys):
    accs = [0.5 + 0.003 * e for e in range(100)]
    bn = _write_run(tmp_path / 'bn', accs, 'BN-2', n_train=50000,
                    batchsize=256)
    out = _output(capsys, [bn, '--format', 'csv'])
    acc, steps = _csv_blocks(out)
    assert acc[0]['note'] == ''
    assert 'steps_scaled' not in steps[0]
    # Max at epochs 25/50/75/100 of a rising curve: the value at that epoch.
    assert float(acc[0]['acc_25_ours']) == pytest.approx(100 * (0.5 + 0.072))
    assert float(acc[0]['acc_100_ours']) == pytest.approx(
        100 * (0.5 + 0.297))
    # Reached at the last epoch: 100 epochs x 196 updates.
    assert steps[0]['updates_ours'] == str(100 * 196)


def test_rows_and_table_from_command_line(tmp_path, capsys):
    # No args.json: table, dataset and rows come from the command line.
    bn = _write_run(tmp_path / 'b', BN, args=False)
    mn = _write_run(tmp_path / 'm', MN, args=False)
    out = _output(capsys, [bn, mn, '--table', 'table4', '--dataset',
                           'cifar100', '--rows', 'BN-1', 'MN-1',
                           '--format', 'csv'])
    acc, steps = [_by_run(b) for b in _csv_blocks(out)]
    # Table IV, CIFAR-100, MN-1: 66.6 68.86 70.01 70.43.
    assert [acc['m']['acc_{}_paper'.format(p)]
            for p in (25, 50, 75, 100)] == [
        '66.6', '68.86', '70.01', '70.43']
    assert acc['b']['acc_100_paper'] == '71.3'
    # Table V, CIFAR-100: MN-1 never reached BN-1's 71.30 ("–").
    assert steps['m']['steps_paper'] == compare.NOT_REACHED
    assert steps['m']['max_acc_paper'] == '70.43'
    assert steps['b']['steps_paper'] == '7.34'
    assert steps['m']['updates_ours'] == '96'
    text = _output(capsys, [bn, mn, '--table', 'table5', '--dataset',
                            'cifar100', '--rows', 'BN-1', 'MN-1'])
    assert 'Table V (Inception-V3), CIFAR-100' in text
    assert '66.60' in text


def test_baseline_option(tmp_path, capsys):
    # Rows unknown: the BN run is given by --baseline, and added if absent.
    bn = _write_run(tmp_path / 'b', BN, args=False)
    mn = _write_run(tmp_path / 'm', MN, args=False)
    out = _output(capsys, [mn, '--baseline', bn, '--table', 'table2',
                           '--dataset', 'cifar10', '--format', 'csv',
                           '--form', 'steps'])
    (steps,) = _csv_blocks(out)
    steps = _by_run(steps)
    assert set(steps) == {'b', 'm'}
    assert steps['m']['updates_ours'] == '96'
    assert float(steps['m']['reduction_ours']) == pytest.approx(50)
    assert steps['m']['steps_paper'] == ''


def test_seed_pairs_and_means(tmp_path, capsys):
    runs = [_write_run(tmp_path / 'bn0', BN, 'BN-2', seed=0),
            _write_run(tmp_path / 'bn1', SLOW, 'BN-2', seed=1),
            _write_run(tmp_path / 'mn0', MN, 'MN-2', seed=0),
            _write_run(tmp_path / 'mn1', SLOW, 'MN-2', seed=1)]
    out = _output(capsys, runs + ['--format', 'csv'])
    acc_block, steps_block = _csv_blocks(out)
    means = {r['row']: r for r in acc_block if r['run'] == 'mean of 2'}
    assert float(means['BN-2']['acc_100_ours']) == pytest.approx(
        (62 + 61) / 2)
    assert float(means['MN-2']['acc_25_ours']) == pytest.approx(
        (56 + 40) / 2)
    steps = _by_run(steps_block)
    # mn1 is compared with bn1 (seed 1, max 0.61), which it matches.
    assert float(steps['mn1']['target_ours']) == pytest.approx(61)
    assert steps['mn1']['updates_ours'] == str(7 * 32)
    assert float(steps['mn0']['target_ours']) == pytest.approx(62)


def test_table6_and_densenet(tmp_path, capsys):
    bn = _write_run(tmp_path / 'b', BN, 'BN', table='table6',
                    dataset='cifar100')
    mn = _write_run(tmp_path / 'm', MN, 'MN', table='table6',
                    dataset='cifar100')
    out = _output(capsys, [bn, mn, '--setting', 'decay_0.2_at_0.3_0.6_0.8',
                           '--format', 'csv'])
    (steps,) = _csv_blocks(out)
    steps = _by_run(steps)
    assert steps['b']['steps_paper'] == '2.41'
    assert steps['m']['steps_paper'] == '1.79'
    assert steps['m']['max_acc_paper'] == '77.32'
    assert steps['m']['target_paper'] == '75.2'
    out = _output(capsys, [bn, mn, '--setting', 'decay_0.1_at_0.5_0.75',
                           '--format', 'csv'])
    assert _by_run(_csv_blocks(out)[0])['m']['steps_paper'] == '1.52'

    d40 = _write_run(tmp_path / 'd', MN, 'L40_MN', table='densenet',
                     dataset='cifar100')
    (error,) = _csv_blocks(_output(capsys, [d40, '--format', 'csv']))
    assert error[0]['error_paper'] == '24.63'
    assert float(error[0]['error_ours']) == pytest.approx(33)
    text = _output(capsys, [d40])
    assert 'best test error' in text and '24.63' in text


def test_paper_numbers_unchanged():
    paper = compare.paper_results()
    assert paper['table2_cifar_cnn']['cifar100']['MN-8']['acc'] == [
        59.79, 61.67, 62.50, 62.96]
    assert paper['table5_inception_v3_steps']['cifar10']['rows'][
        'MN-4'] == {'steps': 3.58, 'max_acc': 92.25}


def test_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path)])  # no log
    run = _write_run(tmp_path / 'r', BN, args=False)
    with pytest.raises(SystemExit):
        compare.main([run])  # no table known
    with pytest.raises(SystemExit):
        compare.main([run, '--table', 'table2', '--rows', 'BN-1', 'MN-1'])
    capsys.readouterr()


@pytest.mark.parametrize('content,problem', [
    ('', 'empty file'),
    ('[{"epoch": 1, "iteration": 32, "validation/main/acc',
     'truncated or invalid JSON'),
])
def test_empty_or_truncated_log_names_the_run(tmp_path, capsys, content,
                                              problem):
    good = _write_run(tmp_path / 'bn', BN, 'BN-2')
    bad = _write_run(tmp_path / 'mn', MN, 'MN-2')
    with open(os.path.join(bad, 'log'), 'w') as f:
        f.write(content)
    with pytest.raises(SystemExit) as info:
        compare.main([good, bad])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith('mn-compare: error: ' + os.path.join(bad, 'log'))
    assert problem in err[0]


def test_truncated_args_names_the_file(tmp_path, capsys):
    run = _write_run(tmp_path / 'bn', BN, 'BN-2')
    with open(os.path.join(run, 'args.json'), 'w') as f:
        f.write('{"model": "cifar')
    with pytest.raises(SystemExit) as info:
        compare.main([run])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and os.path.join(run, 'args.json') in err[0]
