"""What both notebook runners (`nbexec`, the tests' runner, and `aquabill-papermill`, the
schedule's) agree on: how the notebook's cells are addressed and when a cell failed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ANSI = re.compile(r'\x1b\[[0-9;]*m')


def load_notebook(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding='utf-8'))


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb['cells'] if c['cell_type'] == 'code']


def source(cell: dict[str, Any]) -> str:
    src = cell['source']
    return src if isinstance(src, str) else ''.join(src)


def tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get('metadata', {}).get('tags', []))


def cell_tagged(nb: dict[str, Any], tag: str) -> dict[str, Any]:
    """The one code cell tagged `tag` (each step's cell is tagged with the step's name)."""
    found = [c for c in code_cells(nb) if tag in tags(c)]
    if len(found) != 1:
        raise KeyError(f'{len(found)} code cells are tagged {tag!r}')
    return found[0]


def failure(outputs: list[dict[str, Any]]) -> str | None:
    """Why a cell with these (nbformat) outputs failed, or None if it did not.

    A cell failed if it has an error output (a compile error, a step that stopped the kernel's
    child process, a panic with `:preserve_vars_on_panic 0`) or wrote anything to stderr: evcxr
    reports a top-level `?` error only there, with status "ok".
    """
    errors = [ANSI.sub('', '\n'.join(o.get('traceback', [])) or o.get('evalue', ''))
              for o in outputs if o.get('output_type') == 'error']
    stderr = ''.join(ANSI.sub('', text_of_stream(o)) for o in outputs
                     if o.get('output_type') == 'stream' and o.get('name') == 'stderr')
    if errors:
        return '\n'.join([*errors, stderr]).strip() or 'the kernel reported an error'
    if stderr.strip():
        return f'wrote to stderr (an error):\n{stderr.strip()}'
    return None


def text_of_stream(output: dict[str, Any]) -> str:
    text = output.get('text', '')
    return text if isinstance(text, str) else ''.join(text)
