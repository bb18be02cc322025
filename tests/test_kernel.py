"""The notebook kernel as users meet it: it starts without the project's environment, kernels run
side by side, a kernel folder that does not exist yet is no problem, and a killed kernel never
poisons the next one."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aquabill_tools import nbexec
from aquabill_tools.env import built
from conftest import NOTEBOOK, ROOT, Generate, KernelFactory
from expected import recompute
from helpers import assert_tables_match

SAMPLE = ROOT / 'data' / 'sample'


@pytest.fixture
def kernels(build_env: dict[str, str]) -> Iterator[Path]:
    """A folder for the test's kernel folders that does not exist yet, where the kernels' own
    would be (under the build cache: the depth of a folder matters to how a cell's code finds
    the Rust standard library)."""
    root = Path(os.environ['AQUABILL_CACHE']) / 'test-kernels' / uuid.uuid4().hex
    yield root
    shutil.rmtree(root, ignore_errors=True)


def minimal_env(**extra: str) -> dict[str, str]:
    """What a desktop session starting JupyterLab or VS Code may give a kernel: no
    LD_LIBRARY_PATH, none of the project's variables, not even cargo on the PATH; a full kernel,
    not the lean one of unattended runs (`AQUABILL_LEAN_KERNEL` unset means 0)."""
    return {'HOME': os.environ['HOME'], 'PATH': '/usr/bin:/bin', 'AQUABILL_LEAN_KERNEL': '0',
            **extra}


def run_sample(kernel: nbexec.Kernel, out: Path, tmp: Path, name: str) -> None:
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK),
                                {'input_root': str(SAMPLE), 'output_root': str(out)})
    nbexec.run_notebook(nb, kernel, tmp / f'{name}.ipynb')


def test_kernel_starts_and_runs_in_a_minimal_environment(tmp_path: Path, kernels: Path) -> None:
    kernel = nbexec.Kernel(cwd=NOTEBOOK.parent, env=minimal_env(AQUABILL_KERNELS=str(kernels)))
    try:
        run_sample(kernel, tmp_path / 'out', tmp_path, 'minimal')
        # A person's own cell: the full kernel infers a variable's type from the standard library.
        kernel.execute('let readings = vec![3, 1, 2];')
        assert kernel.execute('readings.len()').text == '3'
    finally:
        kernel.shutdown()
    assert_tables_match(tmp_path / 'out', recompute(SAMPLE))


def test_a_lean_kernel_runs_typed_cells_and_asks_for_other_types(
        kernel_factory: KernelFactory) -> None:
    # The kernel of unattended runs skips the standard library's analysis: typed variables (all
    # the notebook has) work as ever, an untyped one gets evcxr's request for its type.
    with kernel_factory({'AQUABILL_LEAN_KERNEL': '1'}) as lean:
        lean.execute('let count: usize = vec![3, 1, 2].len();')
        assert lean.execute('count + 1').text == '4'
        with pytest.raises(nbexec.CellError, match='explicit type'):
            lean.execute('let readings = vec![3, 1, 2];')


def test_kernels_run_side_by_side(tmp_path: Path, kernels: Path, generate: Generate) -> None:
    # Two people (or a person and the schedule) at once, each in a fresh kernel folder whose
    # profile folder does not exist when the kernel starts.
    log = tmp_path / 'log'
    generate(log, '2026-03-01T00', '2026-03-01T06', '--meters', '10', '--seed', '3')
    env = dict(os.environ, AQUABILL_KERNELS=str(kernels))
    failures: list[BaseException] = []

    def one(name: str) -> None:
        try:
            kernel = nbexec.Kernel(cwd=NOTEBOOK.parent, env=env)
            try:
                nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK),
                                            {'input_root': str(log),
                                             'output_root': str(tmp_path / name)})
                nbexec.run_notebook(nb, kernel, tmp_path / f'{name}.ipynb')
            finally:
                kernel.shutdown()
        except BaseException as err:  # reported below, from the test's own thread
            failures.append(err)

    threads = [threading.Thread(target=one, args=(name,)) for name in ('a', 'b')]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not failures, failures
    assert sorted(p.name for p in kernels.iterdir() if p.is_dir()) == ['0', '1']
    exp = recompute(log)
    for name in ('a', 'b'):
        assert_tables_match(tmp_path / name, exp)


def kernel_folder(kernel: nbexec.Kernel) -> Path:
    """The folder a running kernel compiles in: its launcher's child's `EVCXR_TMPDIR`."""
    launcher = kernel.km.provisioner.process.pid
    for child in Path(f'/proc/{launcher}/task/{launcher}/children').read_text().split():
        for var in Path(f'/proc/{child}/environ').read_bytes().split(b'\0'):
            if var.startswith(b'EVCXR_TMPDIR='):
                return Path(var.split(b'=', 1)[1].decode())
    raise AssertionError(f'no kernel under launcher {launcher}')


def wait_until_free(folder: Path, timeout: float = 60) -> None:
    """Waits until no process holds the folder's slot lock (a killed kernel's processes end
    a moment after the signal)."""
    deadline = time.monotonic() + timeout
    with open(folder.parent / f'{folder.name}.lock', 'a') as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                assert time.monotonic() < deadline, f'{folder} still held after the kill'
                time.sleep(0.1)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


def test_a_killed_kernel_never_poisons_the_next(tmp_path: Path, kernels: Path) -> None:
    slots = kernels
    env = dict(os.environ, AQUABILL_KERNELS=str(slots))
    rng = random.Random(12)
    for attempt in range(5):
        kernel = nbexec.Kernel(cwd=NOTEBOOK.parent, env=env)
        slot = kernel_folder(kernel)
        assert (slot / '.in-use').exists()
        # Whatever a kill leaves in the kernel's folder must not reach the next kernel.
        (slot / 'left-by-a-killed-kernel').write_text(str(attempt))
        # A cell that compiles (the facade, or new code), killed at a random point of it, as an
        # OOM kill or a scheduler's timeout would: the kernel's whole process group, SIGKILL.
        kernel.kc.execute(':dep aquabill-notebook = { path = "../notebook-api" }\n'
                          f'let n: i64 = {attempt};\nn * 2')
        time.sleep(rng.uniform(0.2, 4.0))
        pid = kernel.km.provisioner.process.pid
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        kernel.kc.stop_channels()
        kernel.km.cleanup_resources()
        # Once the killed kernel's processes are gone, the next kernel takes its folder (the
        # first free one).
        wait_until_free(slot)
        again = nbexec.Kernel(cwd=NOTEBOOK.parent, env=env)
        try:
            assert kernel_folder(again) == slot
            assert not (slot / 'left-by-a-killed-kernel').exists(), 'the slot was reused as is'
            assert again.execute('let m: i64 = 21;\nm * 2').text.strip() == '42'
        finally:
            again.shutdown()
        assert not (slot / '.in-use').exists(), 'a clean shutdown marks the folder reusable'
    kernel = nbexec.Kernel(cwd=NOTEBOOK.parent, env=env)
    try:
        run_sample(kernel, tmp_path / 'out', tmp_path, 'after-kills')
    finally:
        kernel.shutdown()
    assert_tables_match(tmp_path / 'out', recompute(SAMPLE))


def test_each_clone_runs_its_own_library(tmp_path: Path, kernels: Path,
                                         kernel_factory: KernelFactory) -> None:
    """Two clones on one machine build into one target folder. Another clone whose validate
    cell shows a changed label builds its library and `run_once`; this clone's notebook still
    runs this clone's code, the other clone's notebook runs the other's, and the binary the
    tests run is this clone's."""
    other = tmp_path / 'other'
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (other / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, other / name)
    # The other clone's validate cell shows a changed label, and its `run_once` another word.
    for rel, text, changed in (
            ('src/present/settings.rs', '("rebuild_from_log", ',
             '("rebuild_from_log of the other clone", '),
            ('src/present/run.rs', '"no new files: nothing changed"',
             '"no new files: nothing changed in the other clone"')):
        source = other / rel
        assert text in source.read_text(), (rel, text)
        source.write_text(source.read_text().replace(text, changed))
    subprocess.run(['cargo', 'build', '-p', 'aquabill', '--lib', '--example', 'run_once'],
                   cwd=other, check=True, capture_output=True)

    def idle_run(binary: Path) -> str:
        empty = tmp_path / 'empty-log'
        empty.mkdir(exist_ok=True)
        return subprocess.run([str(binary), '-p', 'input_root', str(empty), '-p', 'output_root',
                               str(tmp_path / 'idle')], capture_output=True, text=True,
                              check=True).stdout

    plain = Path(os.environ['CARGO_TARGET_DIR']) / 'debug' / 'examples' / 'run_once'
    assert 'in the other clone' in idle_run(plain), 'the plain name is the clone built last'
    own = idle_run(built('aquabill', 'run_once'))
    assert 'no new files: nothing changed' in own and 'other clone' not in own, own
    params = {'input_root': str(SAMPLE), 'output_root': str(tmp_path / 'out')}

    def validate_cell(kernel: nbexec.Kernel, notebook: Path) -> str:
        nb = nbexec.with_parameters(nbexec.load_notebook(notebook), params)
        results = nbexec.run_notebook(nb, kernel, until='validate')
        return '\n'.join(r.stdout + r.text for r in results)

    with kernel_factory({'AQUABILL_KERNELS': str(kernels)}) as own:
        shown = validate_cell(own, NOTEBOOK)
    assert 'rebuild_from_log' in shown and 'of the other clone' not in shown, shown
    theirs = nbexec.Kernel(cwd=other / 'notebooks',
                           env=dict(os.environ) | {'AQUABILL_KERNELS': str(kernels)})
    try:
        shown = validate_cell(theirs, other / 'notebooks' / NOTEBOOK.name)
    finally:
        theirs.shutdown()
    assert 'rebuild_from_log of the other clone' in shown, shown
