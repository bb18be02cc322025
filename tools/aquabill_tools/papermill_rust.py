"""papermill for notebooks on the evcxr Rust kernel: a Rust parameter translator, an engine that
fails on errors evcxr reports only on stderr, and the `aquabill-papermill` command.

papermill has no Rust translator and no plugin hook for translators, so this module registers
one (for the kernel names `aquabill` and `rust` and the language names `rust` and `Rust`).
`aquabill-papermill` takes papermill's own arguments (`aquabill-papermill IN.ipynb OUT.ipynb -p
batch_cap 10`) and adds, unless given: the engine below, the notebook's folder as the kernel's
working directory, a start timeout long enough for a first compilation, and a lean kernel
(`AQUABILL_LEAN_KERNEL=1`, see `scripts/kernel/launch`: no analysis of the standard library,
which an unattended run never needs and which costs 3-4 s and 0.5 GB). The kernel carries
its own build environment, and any number of runs may go at once (each kernel compiles in a
folder of its own; the tables' run lock keeps two runs off the same tables).

Parameters are typed as the notebook's `parameters` cell declares them (`let batch_cap: i64 =
0;`): `-p batch_cap 10` becomes `let batch_cap: i64 = 10;`, and `-p input_root 2026` the string
`"2026"`. Parameters the cell does not declare are typed from their value (str `&str`, int
`i64`, float `f64`, bool `bool`). Strings may hold any character.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import nbformat
from nbclient.exceptions import CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from papermill.models import Parameter
from papermill.translators import Translator, papermill_translators
from papermill.utils import merge_kwargs, remove_args

from aquabill_tools.cells import failure
from aquabill_tools.env import KERNEL_NAME, batch_kernel_env
from aquabill_tools.rust import LET, binding, declared_parameters

ENGINE = 'aquabill'


class RustTranslator(Translator):
    """Writes papermill's parameters as typed Rust `let` bindings."""

    # Types the notebook's parameters cell declares; `aquabill-papermill` fills it in.
    declared: ClassVar[dict[str, str]] = {}

    @classmethod
    def translate_none(cls, val: object) -> str:
        raise ValueError('Rust has no untyped null: give the parameter a value')

    @classmethod
    def comment(cls, cmt_str: str) -> str:
        return f'// {cmt_str}'.strip()

    @classmethod
    def codify(cls, parameters: dict[str, Any], comment: str = 'Parameters') -> str:
        lines = [cls.comment(comment)]
        for name, value in parameters.items():
            try:
                lines.append(binding(name, value, cls.declared.get(name)))
            except ValueError as err:
                raise ValueError(f'parameter {name}: {err}') from None
        return '\n'.join(lines) + '\n'

    @classmethod
    def inspect(cls, parameters_cell: Any) -> list[Parameter]:
        found = []
        for line in parameters_cell.source.splitlines():
            m = LET.match(line.strip())
            if m:
                found.append(Parameter(name=m['name'], inferred_type_name=m['type'].strip(),
                                       default=m['value'].strip(),
                                       help=(m['comment'] or '').strip()))
        return found


class StderrFailsClient(PapermillNotebookClient):
    """A cell fails by the rule the tests' runner applies too (`cells.failure`): besides errors,
    anything on stderr, where evcxr reports a cell's `?` error with status ok. The cell gets an
    error output and the run stops like on any other error."""

    async def async_execute_cell(self, cell: Any, cell_index: int,
                                 execution_count: int | None = None,
                                 store_history: bool = True) -> Any:
        cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        why = failure(cell.get('outputs', [])) if cell.cell_type == 'code' else None
        if why is not None and not any(o.get('output_type') == 'error' for o in cell.outputs):
            error = {'output_type': 'error', 'ename': 'Error', 'evalue': why,
                     'traceback': [why]}
            cell.outputs.append(nbformat.from_dict(error))
            raise CellExecutionError.from_cell_and_msg(cell, error)
        return cell


class AquabillEngine(NBClientEngine):
    """papermill's nbclient engine with [`StderrFailsClient`]."""

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None,
                                 start_timeout: int = 60, execution_timeout: int | None = None,
                                 **kwargs: Any) -> Any:
        kwargs = remove_args(['input_path'], **kwargs)
        safe_kwargs = remove_args(['timeout', 'startup_timeout'], **kwargs)
        final_kwargs = merge_kwargs(
            safe_kwargs,
            timeout=execution_timeout if execution_timeout else kwargs.get('timeout'),
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        return StderrFailsClient(nb_man, **final_kwargs).execute()


def register() -> None:
    """Registers the Rust translator and the engine with papermill (idempotent)."""
    for key in (KERNEL_NAME, 'rust', 'Rust'):
        papermill_translators.register(key, RustTranslator)
    papermill_engines.register(ENGINE, AquabillEngine)


def declare_from(notebook: Path) -> None:
    """Reads the parameter types from the notebook's cell tagged `parameters`."""
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except (OSError, ValueError):
        return  # papermill reports an unreadable notebook itself
    for cell in nb.cells:
        if cell.cell_type == 'code' and 'parameters' in cell.get('metadata', {}).get('tags', []):
            RustTranslator.declared = declared_parameters(cell.source)
            return


def _with_defaults(argv: list[str]) -> list[str]:
    """papermill arguments plus this project's defaults for those not given."""
    args = list(argv)
    given = {a.split('=', 1)[0] for a in args if a.startswith('--')}
    positional = [a for a in args if a.endswith('.ipynb') and not a.startswith('-')]
    if '--engine' not in given:
        args += ['--engine', ENGINE]
    if '--cwd' not in given and positional:
        args += ['--cwd', str(Path(positional[0]).resolve().parent)]
    if '--start-timeout' not in given and '--start_timeout' not in given:
        args += ['--start-timeout', '900']
    return args


def main(argv: list[str] | None = None) -> int:
    """`aquabill-papermill`: papermill's command line with Rust support; see the module doc."""
    from papermill.cli import papermill as papermill_cli

    argv = sys.argv[1:] if argv is None else argv
    register()
    # papermill starts the kernel with this process's environment.
    os.environ.update(batch_kernel_env())
    notebooks = [a for a in argv if a.endswith('.ipynb') and not a.startswith('-')]
    if notebooks:
        declare_from(Path(notebooks[0]))
    args = _with_defaults(argv)
    if any(a in ('--help', '-h', '--version', '--help-notebook') for a in argv):
        return papermill_cli.main(args=args, prog_name='aquabill-papermill', standalone_mode=True)
    if len(notebooks) > 1 and '://' not in notebooks[1]:
        Path(notebooks[1]).parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill_cli.main(args=args, prog_name='aquabill-papermill', standalone_mode=False)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as err:  # papermill's own errors: the executed notebook shows them
        print(f'aquabill-papermill: {type(err).__name__}: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
