"""Executes a notebook on the evcxr Rust kernel cell by cell, and fails loudly.

The tests use it to run the notebook with their own parameters in one shared kernel
(`python -m aquabill_tools.nbexec NOTEBOOK EXECUTED -p name value` runs one notebook). It loads the `.ipynb` JSON, replaces the values in
the first code cell (typed `let` bindings), sends each code cell to the kernel through
jupyter_client and stops at the first cell that fails: an `error` reply (compile error, abort
after a panic), or anything on stderr (evcxr reports a top-level `?` error only there).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from aquabill_tools.env import load_build_env, lock_kernel_dir
from aquabill_tools.rust import LET, binding

ANSI = re.compile(r'\x1b\[[0-9;]*m')


class CellError(Exception):
    """A cell failed; the message names the cell and carries the kernel's error text."""


@dataclass
class CellResult:
    """What one cell produced."""

    index: int
    source: str = ''
    seconds: float = 0.0
    stdout: str = ''
    stderr: str = ''
    text: str = ''
    outputs: list[dict[str, Any]] = field(default_factory=list)


def load_notebook(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding='utf-8'))


def code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb['cells'] if c['cell_type'] == 'code']


def source(cell: dict[str, Any]) -> str:
    src = cell['source']
    return src if isinstance(src, str) else ''.join(src)


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
    """One evcxr kernel, started in `cwd`; at most one runs per EVCXR_TMPDIR at a time."""

    def __init__(self, cwd: Path, startup_timeout: float = 900,
                 env: dict[str, str] | None = None) -> None:
        load_build_env()
        self._lock = lock_kernel_dir()
        self.km = KernelManager(kernel_name='rust')
        self.km.start_kernel(cwd=str(cwd), env=dict(os.environ) | (env or {}))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=startup_timeout)

    def execute(self, code: str, index: int = 0, timeout: float = 1800) -> CellResult:
        """Runs one cell; raises CellError if it fails."""
        result = CellResult(index)
        started = time.monotonic()
        msg_id = self.kc.execute(code, store_history=True)
        deadline = time.monotonic() + timeout
        errors: list[str] = []
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CellError(f'cell {index} timed out after {timeout:.0f} s')
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg['parent_header'].get('msg_id') != msg_id:
                continue
            idle = self._collect(msg, result, errors)
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
                self._collect(msg, result, errors)
        if reply['content'].get('status') != 'ok' or errors:
            detail = '\n'.join(errors + [result.stdout, result.stderr]).strip()
            raise CellError(f'cell {index} failed:\n'
                            + (detail or f'the kernel replied {reply["content"]} without details'))
        if result.stderr.strip():
            raise CellError(f'cell {index} wrote to stderr (an error):\n{result.stderr.strip()}')
        return result

    @staticmethod
    def _collect(msg: dict[str, Any], result: CellResult, errors: list[str]) -> bool:
        kind, content = msg['msg_type'], msg['content']
        if kind == 'status':
            return content.get('execution_state') == 'idle'
        if kind == 'stream':
            text = ANSI.sub('', content['text'])
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
            errors.append(trace or content.get('evalue', ''))
            result.outputs.append({'output_type': 'error', 'ename': content.get('ename', ''),
                                   'evalue': ANSI.sub('', content.get('evalue', '')),
                                   'traceback': [trace]})
        return False

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=True)
        finally:
            self._lock.close()


def text_of(results: list[CellResult], code: str) -> str:
    """The text output of the cell whose source is `code`."""
    for result in results:
        if result.source.strip() == code:
            return result.text
    raise KeyError(f'no cell ran {code!r}')


def run_notebook(nb: dict[str, Any], kernel: Kernel, executed_path: Path | None = None
                 ) -> list[CellResult]:
    """Runs every code cell in order; saves the executed copy (also when a cell fails)."""
    results: list[CellResult] = []
    try:
        for index, cell in enumerate(nb['cells']):
            if cell['cell_type'] != 'code':
                continue
            cell['outputs'] = []
            result = kernel.execute(source(cell), index)
            result.source = source(cell)
            cell['outputs'] = result.outputs
            results.append(result)
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
                        help='replace a parameter (integers and true/false are typed)')
    args = parser.parse_args()
    params: dict[str, object] = {}
    for name, value in args.p:
        params[name] = (value == 'true') if value in ('true', 'false') else (
            int(value) if re.fullmatch(r'-?\d+', value) else value)
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
