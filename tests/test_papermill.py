"""Scheduled runs go through papermill: its Rust translator, its exit status, its output."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from deltalake import DeltaTable

from aquabill_tools import nbexec
from aquabill_tools.papermill_rust import RustTranslator
from aquabill_tools.rust import cli_value
from conftest import NOTEBOOK, ROOT, Generate, RunNotebook
from expected import recompute
from helpers import assert_tables_match, state

PAPERMILL = Path(sys.executable).parent / 'aquabill-papermill'

TRICKY = ['plain', 'quote " and backslash \\ and \\n literally', 'tab\tnew\nline\r',
          'unicode é 水 🚰', '\x01\x7f control', '', '{braces} and $dollar']


def papermill(notebook: Path, executed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PAPERMILL), str(notebook), str(executed), *args],
                          capture_output=True, text=True, timeout=900)


def outputs(executed: Path) -> list[list[dict]]:
    nb = json.loads(executed.read_text())
    return [c.get('outputs', []) for c in nb['cells'] if c['cell_type'] == 'code']


def test_translator_writes_typed_rust() -> None:
    RustTranslator.declared = {'input_root': '&str', 'batch_cap': 'i64', 'ratio': 'f64'}
    try:
        code = RustTranslator.codify({'input_root': 2026, 'batch_cap': 10, 'ratio': 3,
                                      'label': 'a"b\\c', 'rate': 0.25, 'dry': True,
                                      'big': 2**62, 'tiny': 1e-05, 'huge': 1e16})
    finally:
        RustTranslator.declared = {}
    assert code.splitlines() == [
        '// Parameters',
        'let input_root: &str = "2026";',
        'let batch_cap: i64 = 10;',
        'let ratio: f64 = 3.0;',
        'let label: &str = "a\\"b\\\\c";',
        'let rate: f64 = 0.25;',
        'let dry: bool = true;',
        'let big: i64 = 4611686018427387904;',
        'let tiny: f64 = 1e-05;',
        'let huge: f64 = 1e+16;',
    ]
    with pytest.raises(ValueError, match='null'):
        RustTranslator.codify({'input_root': None})
    RustTranslator.declared = {'batch_cap': 'i64'}
    try:
        with pytest.raises(ValueError, match='batch_cap'):
            RustTranslator.codify({'batch_cap': 'ten'})
    finally:
        RustTranslator.declared = {}


def test_translated_values_are_valid_rust(kernel: nbexec.Kernel) -> None:
    values: dict[str, object] = {f's{i}': s for i, s in enumerate(TRICKY)}
    values |= {'n': -42, 'big': 2**63 - 1, 'x': 0.1, 'tiny': 1e-05, 'huge': 1e16,
               'inf': math.inf, 'yes': True, 'no': False}
    code = RustTranslator.codify(values)
    shown = ' '.join(f'{{{name}:?}}' for name in values)
    result = kernel.execute(code + f'\nprintln!("{shown}");')
    # Rust's Debug escapes these strings as JSON does, but for control characters.
    strings = [json.dumps(s, ensure_ascii=False).replace('\\u0001', '\\u{1}')
               .replace('\u007f', '\\u{7f}') for s in TRICKY]
    expected = strings + ['-42', str(2**63 - 1), '0.1', '1e-5', '1e16', 'inf', 'true', 'false']
    assert result.stdout.strip() == ' '.join(expected)


def test_papermill_runs_the_notebook(tmp_path: Path, generate: Generate) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-03-31T20', '2026-04-01T02', '--meters', '12', '--seed', '8',
             '--duplicate-rate', '0.05', '--files-per-hour', '2')
    first = tmp_path / 'runs' / 'first.ipynb'
    done = papermill(NOTEBOOK, first, '-p', 'input_root', str(log), '-p', 'output_root', str(out),
                     '-p', 'batch_cap', '3', '-p', 'billing_timezone', 'America/New_York')
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(str(first), as_version=4)
    injected = [c for c in nb.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert len(injected) == 1
    assert 'let batch_cap: i64 = 3;' in injected[0].source
    assert 'let billing_timezone: &str = "America/New_York";' in injected[0].source
    [metrics] = DeltaTable(str(out / 'run_metrics')).to_pyarrow_table().to_pylist()
    assert metrics['files'] == 3, 'the parameter reached the pipeline'

    # The notebook shows its work: HTML tables, plans, a chart, bills.
    html = '\n'.join(''.join(o['data']['text/html']) for cell in outputs(first) for o in cell
                     if 'text/html' in o.get('data', {}))
    assert html.count('<table>') >= 6
    assert 'Aggregation plan' not in html and 'AGGREGATE' not in html, 'plans only on request'
    assert '<svg ' in html and '<polyline ' in html
    assert 'to date' in html

    second = tmp_path / 'runs' / 'second.ipynb'
    done = papermill(NOTEBOOK, second, '-p', 'input_root', str(log), '-p', 'output_root',
                     str(out), '-p', 'billing_timezone', 'America/New_York')
    assert done.returncode == 0, done.stderr[-3000:]
    assert_tables_match(out, recompute(log, tz='America/New_York'))


def test_papermill_fails_on_a_bad_parameter(tmp_path: Path) -> None:
    out, executed = tmp_path / 'out', tmp_path / 'failed.ipynb'
    done = papermill(NOTEBOOK, executed, '-p', 'input_root', str(ROOT / 'data' / 'sample'),
                     '-p', 'output_root', str(out), '-p', 'billing_timezone', 'Asia/Kolkata')
    assert done.returncode != 0
    cells = outputs(executed)
    errors = [i for i, cell in enumerate(cells) for o in cell if o['output_type'] == 'error']
    assert errors, 'the executed notebook shows the error'
    failed = errors[0]
    text = json.dumps(cells[failed])
    assert 'billing_timezone' in text and 'whole UTC hour' in text
    assert not any(cells[failed + 1:]), 'no cell after the failure ran'
    assert not out.exists(), 'nothing was written'


def test_papermill_fails_on_a_panic(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'aquabill', 'display_name': 'Rust (aquabill)',
                                 'language': 'rust'}
    nb.cells = [nbformat.v4.new_code_cell('let n: i64 = 0;', metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(':preserve_vars_on_panic 0'),
                nbformat.v4.new_code_cell('if n > 1 { panic!("boom at {n}"); }',
                                          metadata={'tags': ['may-panic']}),
                nbformat.v4.new_code_cell('println!("after");', metadata={'tags': ['after']})]
    source = tmp_path / 'panics.ipynb'
    nbformat.write(nb, str(source))
    ok = papermill(source, tmp_path / 'ok.ipynb', '-p', 'n', '1')
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert 'after' in json.dumps(by_tag(tmp_path / 'ok.ipynb')['after'])

    done = papermill(source, tmp_path / 'failed.ipynb', '-p', 'n', '2')
    assert done.returncode != 0
    cells = by_tag(tmp_path / 'failed.ipynb')
    panicked = cells['may-panic']
    assert any(o['output_type'] == 'error' for o in panicked), panicked
    assert 'boom at 2' in json.dumps(panicked)
    assert cells['after'] == [], 'no cell after the failure ran'


def by_tag(executed: Path) -> dict[str, list[dict]]:
    nb = json.loads(executed.read_text())
    return {tag: c.get('outputs', []) for c in nb['cells'] if c['cell_type'] == 'code'
            for tag in c.get('metadata', {}).get('tags', [])}


def test_both_runners_make_the_same_tables(tmp_path: Path, generate: Generate,
                                           run_notebook: RunNotebook) -> None:
    # The tests' runner and the schedule's, with the same parameters in the same syntax.
    log = tmp_path / 'log'
    generate(log, '2026-03-31T18', '2026-04-01T04', '--meters', '10', '--seed', '11',
             '--duplicate-rate', '0.05', '--malformed-rate', '0.01', '--files-per-hour', '2')
    params = [('input_root', str(log)), ('batch_cap', '9'), ('billing_timezone', 'Europe/Berlin'),
              ('clock_skew_minutes', '10'), ('rebuild', 'False')]
    for _ in range(3):
        run_notebook(**{name: cli_value(value) for name, value in params},
                     output_root=str(tmp_path / 'by-nbexec'))
        args = [a for name, value in params for a in ('-p', name, value)]
        done = papermill(NOTEBOOK, tmp_path / 'runs' / 'pm.ipynb', *args,
                         '-p', 'output_root', str(tmp_path / 'by-papermill'))
        assert done.returncode == 0, done.stderr[-3000:]
    by_nbexec, by_papermill = state(tmp_path / 'by-nbexec'), state(tmp_path / 'by-papermill')
    assert by_nbexec['checkpoint']['next_batch'] == 3
    assert by_nbexec == by_papermill
