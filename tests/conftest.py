"""Shared fixtures: the generator binary, one evcxr kernel for the session, notebook runs."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from aquabill_tools import nbexec
from aquabill_tools.env import built, load_build_env, source_digest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'hourly_billing.ipynb'


@pytest.fixture(scope='session')
def build_env() -> dict[str, str]:
    """The environment of scripts/env.sh: the shared target folder the binaries are built in."""
    load_build_env()
    return dict(os.environ)


@pytest.fixture(scope='session')
def generator(build_env: dict[str, str]) -> Path:
    """Path of the generator binary, built if needed."""
    return built('aquabill-gen')


Generate = Callable[..., dict]


@pytest.fixture
def generate(generator: Path) -> Generate:
    """Runs the generator; returns its JSON summary."""

    def run(output: Path, start: str, end: str, *args: str) -> dict:
        proc = subprocess.run(
            [str(generator), '--output', str(output), '--start-hour', start, '--end-hour', end,
             '--json', *args],
            check=True, capture_output=True, text=True)
        return json.loads(proc.stdout)

    return run


class SharedKernel:
    """The session's evcxr kernel, started on first use and reused by the tests that run the
    notebook (a kernel start and the first compiles take a few seconds)."""

    def __init__(self) -> None:
        self._kernel: nbexec.Kernel | None = None

    def get(self) -> nbexec.Kernel:
        if self._kernel is None:
            self._kernel = nbexec.Kernel(cwd=NOTEBOOK.parent)
        return self._kernel

    def release(self) -> None:
        if self._kernel is not None:
            self._kernel.shutdown()
            self._kernel = None


@pytest.fixture(scope='session')
def shared_kernel(build_env: dict[str, str]) -> Iterator[SharedKernel]:
    shared = SharedKernel()
    yield shared
    shared.release()


@pytest.fixture
def kernel(shared_kernel: SharedKernel) -> nbexec.Kernel:
    """The shared kernel: runs reuse its compiled cells."""
    return shared_kernel.get()


KernelFactory = Callable[[dict[str, str]], AbstractContextManager[nbexec.Kernel]]


@pytest.fixture
def kernel_factory(build_env: dict[str, str]) -> KernelFactory:
    """Starts a kernel of the test's own (beside the shared one) with extra environment
    variables."""

    @contextmanager
    def start(env: dict[str, str]) -> Iterator[nbexec.Kernel]:
        own = nbexec.Kernel(cwd=NOTEBOOK.parent, env=dict(os.environ) | env)
        try:
            yield own
        finally:
            own.shutdown()

    return start


@pytest.fixture(scope='session')
def run_once_binary(build_env: dict[str, str]) -> Path:
    """The `run_once` example: one pipeline run per process, no kernel."""
    return built('aquabill', 'run_once')


@pytest.fixture(scope='session')
def computed_by() -> str:
    """What every bill this checkout computes records in `computed_by`."""
    version = tomllib.loads((ROOT / 'Cargo.toml').read_text())['package']['version']
    return f'aquabill {version} source {source_digest(ROOT)}'


RunNotebook = Callable[..., list[nbexec.CellResult]]


@pytest.fixture
def run_notebook(kernel: nbexec.Kernel, tmp_path: Path) -> RunNotebook:
    """Runs the notebook with the given parameters; keeps the executed copy in tmp_path."""
    count = 0

    def run(**params: object) -> list[nbexec.CellResult]:
        nonlocal count
        count += 1
        nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), params)
        return nbexec.run_notebook(nb, kernel, tmp_path / f'executed-{count}.ipynb')

    return run
