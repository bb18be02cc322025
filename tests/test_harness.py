"""The notebook runner must fail loudly: on a bad parameter, a `?` error, a panic; and the notebook
must run in the lean kernel of unattended runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aquabill_tools import nbexec
from conftest import NOTEBOOK, RunNotebook


def test_parameter_error_names_the_cell(tmp_path: Path, run_notebook: RunNotebook) -> None:
    with pytest.raises(nbexec.CellError, match=r'(?s)cell \d+ .*input_root') as err:
        run_notebook(input_root=str(tmp_path / 'missing'), output_root=str(tmp_path / 'out'))
    assert 'is not a folder' in str(err.value)
    assert not (tmp_path / 'out').exists(), 'nothing is written before validation'
    executed = nbexec.load_notebook(tmp_path / 'executed-1.ipynb')
    errors = [o for c in nbexec.code_cells(executed) for o in c.get('outputs', [])
              if o['output_type'] == 'error']
    assert errors, 'the executed copy shows the error'


def test_panic_fails_the_cell(kernel: nbexec.Kernel) -> None:
    kernel.execute(':preserve_vars_on_panic 0')
    with pytest.raises(nbexec.CellError, match='boom'):
        kernel.execute('panic!("boom");')
    assert kernel.execute('let after: i64 = 1 + 1;\nafter').text.strip() == '2'


@pytest.mark.parametrize('value', ['plain', 'quote " and backslash \\ ', 'tab\tnew\nline',
                                   'unicode é 水 🚰', '\x01 control', ''])
def test_string_parameters_reach_rust_unchanged(kernel: nbexec.Kernel, value: str) -> None:
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), {'input_root': value})
    cell = nbexec.source(nbexec.code_cells(nb)[0])
    out = kernel.execute(cell + '\nprintln!("<{input_root}>");').stdout
    assert out == f'<{value}>\n'


def test_parameters_keep_their_types() -> None:
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), {'batch_cap': 7})
    assert 'let batch_cap: i64 = 7;' in nbexec.source(nbexec.code_cells(nb)[0])
    with pytest.raises(ValueError):
        nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), {'batch_cap': 'seven'})
    with pytest.raises(KeyError):
        nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), {'no_such_parameter': 1})


def test_every_variable_of_the_notebook_declares_its_type() -> None:
    # Unattended runs use a lean kernel that cannot infer a type from the standard library
    # (scripts/kernel/launch), so a `let` without a type would fail only there.
    untyped = re.compile(r'^\s*let\s+(mut\s+)?\w+\s*=')
    for cell in nbexec.code_cells(nbexec.load_notebook(NOTEBOOK)):
        for line in nbexec.source(cell).splitlines():
            assert not untyped.match(line), f'give this variable a type: {line.strip()}'
