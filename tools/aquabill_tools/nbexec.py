"""Executes a notebook on the project's evcxr kernel cell by cell, and fails loudly.

The tests use it to run the notebook with their own parameters (`python -m
aquabill_tools.nbexec NOTEBOOK EXECUTED -p name value` runs one notebook, with the value syntax
of `aquabill-papermill`). It loads the `.ipynb` JSON, replaces the values in the first code cell
(typed `let` bindings, written as `aquabill-papermill` writes them), sends each code cell to the
kernel through jupyter_client and stops at the first cell that fails (`cells.failure`, the rule
`aquabill-papermill` applies too).
"""

from __future__ import annotations

import argparse
import copy
import json
import queue
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from aquabill_tools.cells import (ANSI, code_cells, failure, load_notebook, source, tags,
                                  text_of_stream)
from aquabill_tools.env import KERNEL_NAME, batch_kernel_env
from aquabill_tools.rust import LET, binding, cli_value

__all__ = ['CellError', 'CellResult', 'Kernel', 'load_notebook', 'code_cells', 'source', 'tags',
           'with_parameters', 'run_notebook', 'text_of']


class CellError(Exception):
    """A cell failed; the message names the cell and carries the kernel's error text."""


@dataclass
class CellResult:
    """What one cell produced."""

    index: int
    tags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stdout: str = ''
    stderr: str = ''
    text: str = ''
    outputs: list[dict[str, Any]] = field(default_factory=list)


def with_parameters(nb: dict[str, Any], params: dict[str, object]) -> dict[str, Any]:
    """A copy of `nb` whose first code cell binds `params` instead of its defaults."""
    nb = copy.deepcopy(nb)
    first = code_cells(nb)[0]
    lines = source(first).splitlines()
    unknown = set(params)
    for i, line in enumerate(lines):
        m = LET.match(line.strip())
        if m and m['name'] in params:
            lines[i] = binding(m['name'], params[m['name']], m['type'].strip())
            unknown.discard(m['name'])
    if unknown:
        raise KeyError(f'not parameters of the notebook: {sorted(unknown)}')
    first['source'] = '\n'.join(lines) + '\n'
    return nb


class Kernel:
    """One kernel of the project's kernel spec, started in `cwd`. Any number may run at once:
    each compiles its cells in a folder of its own."""

    def __init__(self, cwd: Path, startup_timeout: float = 900,
                 env: dict[str, str] | None = None, kernel_name: str = KERNEL_NAME) -> None:
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel(cwd=str(cwd), env=batch_kernel_env(env))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError:
            self.shutdown(now=True)
            raise

    def execute(self, code: str, index: int = 0, timeout: float = 1800,
                cell_tags: list[str] | None = None) -> CellResult:
        """Runs one cell; raises CellError if it fails."""
        result = CellResult(index, tags=list(cell_tags or []))
        started = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CellError(f'cell {index} timed out after {timeout:.0f} s')
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg['parent_header'].get('msg_id') == msg_id:
                idle = self._collect(msg, result)
        reply = self.kc.get_shell_msg(timeout=60)
        while reply['parent_header'].get('msg_id') != msg_id:
            # A reply to an earlier request (the start-up kernel_info): not this cell's.
            reply = self.kc.get_shell_msg(timeout=60)
        result.seconds = time.monotonic() - started
        # evcxr may write stderr just after `idle`: drain briefly.
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            if msg['parent_header'].get('msg_id') == msg_id:
                self._collect(msg, result)
        why = failure(result.outputs)
        if why is None and reply['content'].get('status') != 'ok':
            why = f'the kernel replied {reply["content"]} without details'
        if why is not None:
            raise CellError(f'cell {index} {tags_text(result.tags)}failed:\n{why}\n'
                            f'{result.stdout}'.rstrip())
        return result

    @staticmethod
    def _collect(msg: dict[str, Any], result: CellResult) -> bool:
        kind, content = msg['msg_type'], msg['content']
        if kind == 'status':
            return content.get('execution_state') == 'idle'
        if kind == 'stream':
            text = ANSI.sub('', text_of_stream(content))
            if content['name'] == 'stderr':
                result.stderr += text
            else:
                result.stdout += text
            result.outputs.append({'output_type': 'stream', 'name': content['name'], 'text': text})
        elif kind in ('execute_result', 'display_data'):
            data = content.get('data', {})
            result.text += data.get('text/plain', '')
            out = {'output_type': kind, 'data': data, 'metadata': content.get('metadata', {})}
            if kind == 'execute_result':
                out['execution_count'] = content.get('execution_count')
            result.outputs.append(out)
        elif kind == 'error':
            trace = ANSI.sub('', '\n'.join(content.get('traceback', [])))
            result.outputs.append({'output_type': 'error', 'ename': content.get('ename', ''),
                                   'evalue': ANSI.sub('', content.get('evalue', '')),
                                   'traceback': [trace]})
        return False

    def shutdown(self, now: bool = False) -> None:
        """Stops the kernel: by default with a shutdown request, so its folder is reused warm
        by the next kernel (a killed kernel's folder is rebuilt from scratch)."""
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=now)


def tags_text(cell_tags: list[str]) -> str:
    return f'({", ".join(cell_tags)}) ' if cell_tags else ''


def text_of(results: list[CellResult], tag: str) -> str:
    """The text output of the cell tagged `tag`."""
    for result in results:
        if tag in result.tags:
            return result.text
    raise KeyError(f'no cell tagged {tag!r} ran')


def run_notebook(nb: dict[str, Any], kernel: Kernel, executed_path: Path | None = None,
                 until: str | None = None) -> list[CellResult]:
    """Runs the code cells in order (through the cell tagged `until`, if given); saves the
    executed copy (also when a cell fails)."""
    results: list[CellResult] = []
    try:
        for index, cell in enumerate(nb['cells']):
            if cell['cell_type'] != 'code':
                continue
            cell['outputs'] = []
            result = kernel.execute(source(cell), index, cell_tags=tags(cell))
            cell['outputs'] = result.outputs
            results.append(result)
            if until is not None and until in result.tags:
                break
    except CellError as err:
        cell['outputs'] = [{'output_type': 'error', 'ename': 'CellError', 'evalue': str(err),
                            'traceback': [str(err)]}]
        raise
    finally:
        if executed_path is not None:
            executed_path.parent.mkdir(parents=True, exist_ok=True)
            executed_path.write_text(json.dumps(nb, indent=1) + '\n', encoding='utf-8')
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebook', type=Path)
    parser.add_argument('executed', type=Path, help='where the executed copy is written')
    parser.add_argument('-p', nargs=2, action='append', default=[], metavar=('NAME', 'VALUE'),
                        help='replace a parameter (the value syntax of aquabill-papermill)')
    args = parser.parse_args()
    params = {name: cli_value(value) for name, value in args.p}
    nb = with_parameters(load_notebook(args.notebook), params)
    begun = time.monotonic()
    kernel = Kernel(cwd=args.notebook.resolve().parent)
    try:
        started = time.monotonic()
        results = run_notebook(nb, kernel, args.executed)
        for result in results:
            sys.stdout.write(result.stdout + (result.text + '\n' if result.text else ''))
        cells = ', '.join(f'{r.index}: {r.seconds:.1f}' for r in results)
        print(f'executed {args.notebook} in {time.monotonic() - started:.1f} s '
              f'(kernel start {started - begun:.1f} s; seconds per cell {cells}) '
              f'-> {args.executed}')
    except CellError as err:
        print(err, file=sys.stderr)
        return 1
    finally:
        kernel.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
