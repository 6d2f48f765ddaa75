"""benchmarks/check_float32.py, the README's float32 tables, keeps running:
from another directory, as text and Markdown, on both CPU paths of the fit,
with every row and the accuracy the tables document."""
import os
import re
import subprocess
import sys

import pytest

from mn_chainer import cpu_kernels


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'check_float32.py')


def _run(tmp_path, *argv, env=None):
    result = subprocess.run(
        [sys.executable, SCRIPT] + list(argv), cwd=str(tmp_path),
        env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    return result


def _numbers(cell):
    return [float(v) for v in re.findall(r'\d\.\de[-+]\d\d', cell)]


@pytest.mark.parametrize('path', ['numpy', 'c'])
def test_markdown_tables(tmp_path, path):
    if path == 'c' and not cpu_kernels.available():
        pytest.skip('the C kernels are not built')
    result = _run(tmp_path, '--markdown', '--path', path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    out = result.stdout
    assert ('transform: C kernels' if path == 'c'
            else 'transform: NumPy passes') in \
        out.splitlines()[0]
    rows = [line.split(' | ') for line in out.splitlines()
            if re.match(r'\| [13] \| (on|off) \|', line)]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ('| ' + k, relu, offset) for k in '13' for relu in ('off', 'on')
        for offset in ('0', '1e2', '1e3', '1e4')]
    for row in rows:
        # MN in float32: forward, backward and double backward within
        # 1e-6 of float64 at every offset (the README's claim).
        mn = _numbers(row[3]) + _numbers(row[4])
        assert len(mn) == 6 and max(mn) < 1e-6, row
        assert len(_numbers(row[5]) + _numbers(row[6])) == (
            6 if row[0] == '| 1' else 0)
    fit = [line.split(' | ') for line in out.splitlines()
           if re.match(r'\| [13] \| (10|1) \|', line)]
    assert len(fit) == 4
    for row in fit:
        assert max(_numbers(row[2]) + _numbers(row[3])) < 1e-4
        assert row[4] == '0.00%' and row[5] == row[6].rstrip(' |')
    assert re.search(r'\| 1e5 \| 131072 \| 2 \(float64: 2\) \| \d', out)
    assert re.search(r'\| 1e6 \| 200000 \| 2 \(float64: 2\) \| \d', out)
    assert 'mixture yes, posterior yes' in out


def test_text_and_errors(tmp_path):
    result = _run(tmp_path, env={'MN_CHAINER_CPU_KERNELS': '0'})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('# NumPy ') and lines[0].endswith(
        'fit and transform: NumPy passes (MN_CHAINER_CPU_KERNELS=0)')
    assert any(line.startswith('Fit item 3') for line in lines)
    result = _run(tmp_path, '--path', 'gpu')
    assert result.returncode == 2 and '--path' in result.stderr
