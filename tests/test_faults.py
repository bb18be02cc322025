"""No crash, rerun, overlap or re-split changes a bill. Runs go through `run_once` (one run per
process, so a crash is a real process abort) and, where it matters, through the notebook."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from aquabill_tools import nbexec
from conftest import NOTEBOOK, KernelFactory
from helpers import (add, assert_every_kind_of_step, batches_applied_once, comparable,
                     crash_at_every_step, crashed, finish, generate_log, reading, rows, run_once,
                     state, state_and_remove)


@pytest.fixture(scope='module')
def log(tmp_path_factory: pytest.TempPathFactory, generator: Path) -> Path:
    return generate_log(generator, tmp_path_factory.mktemp('log') / 'log')


@pytest.fixture(scope='module')
def reference(tmp_path_factory: pytest.TempPathFactory, run_once_binary: Path,
              log: Path) -> dict[str, object]:
    """The state after runs of 20 files that never crashed."""
    out = tmp_path_factory.mktemp('reference') / 'out'
    finish(run_once_binary, log, out, cap=20)
    return state(out)


def test_crash_at_every_durable_step(tmp_path: Path, run_once_binary: Path, log: Path,
                                     reference: dict[str, object]) -> None:
    def attempt(k: int, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        return run_once(run_once_binary, log, tmp_path / f'crash-{k}', cap=20, crash_at=crash_at)

    def state_of(k: int) -> dict[str, object]:
        return state_and_remove(tmp_path / f'crash-{k}')

    covered = crash_at_every_step(attempt, state_of, reference)
    assert_every_kind_of_step(covered)


def test_kernel_killed_mid_write(tmp_path: Path, run_once_binary: Path, log: Path,
                                 kernel: nbexec.Kernel, kernel_factory: KernelFactory) -> None:
    # Find the durable step where cumulative_usage's files are written but not committed.
    probe = tmp_path / 'probe'
    k = 0
    while True:
        k += 1
        step = crashed(run_once(run_once_binary, log, probe, crash_at=k))
        assert step is not None, 'no such step'
        shutil.rmtree(probe)
        if step == 'cumulative_usage: data files written':
            break
    out = tmp_path / 'out'
    params = {'input_root': str(log), 'output_root': str(out)}
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), params)
    with kernel_factory({'AQUABILL_CRASH_AT': str(k)}) as doomed:
        with pytest.raises(nbexec.CellError, match='Subprocess terminated'):
            nbexec.run_notebook(nb, doomed)
    orphans = list((out / 'cumulative_usage').glob('**/*.parquet'))
    assert orphans, 'the kernel died after writing data files'
    nbexec.run_notebook(nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), params), kernel)
    ref = tmp_path / 'ref'
    finish(run_once_binary, log, ref)
    assert state(out) == state(ref)
    batches_applied_once(out)


def test_one_run_at_a_time(tmp_path: Path, run_once_binary: Path, log: Path,
                           kernel: nbexec.Kernel) -> None:
    out = tmp_path / 'out'
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK),
                                {'input_root': str(log), 'output_root': str(out)})
    cells = [(nbexec.tags(c), nbexec.source(c)) for c in nbexec.code_cells(nb)]
    plan = next(i for i, (tags, _) in enumerate(cells) if 'plan' in tags)
    for _, code in cells[:plan + 1]:
        kernel.execute(code)
    # The notebook's run is in flight: another run refuses and changes nothing.
    busy = run_once(run_once_binary, log, out)
    assert busy.returncode == 3, busy.stderr
    assert 'another run is working on these tables' in busy.stderr and 'pid' in busy.stderr
    assert not (out / 'hourly_usage').exists()
    for _, code in cells[plan + 1:]:
        kernel.execute(code)
    after = run_once(run_once_binary, log, out)
    assert after.returncode == 0 and 'no new files' in after.stdout, after.stderr

    # A run killed while holding the lock leaves no stale lock behind.
    killed = tmp_path / 'killed'
    assert crashed(run_once(run_once_binary, log, killed, crash_at=1)) == 'plan written'
    assert 'pid' in (killed / '_checkpoint' / 'run.lock').read_text()
    finish(run_once_binary, log, killed)
    assert state(killed) == state(out)


def test_runs_started_at_once(tmp_path: Path, run_once_binary: Path, log: Path) -> None:
    ref = tmp_path / 'ref'
    finish(run_once_binary, log, ref)

    def args(out: Path) -> list[str]:
        return [str(run_once_binary), '-p', 'input_root', str(log), '-p', 'output_root', str(out)]

    for attempt in range(2):
        # The first run stalls for 3 s right after writing its plan, holding the lock; the
        # second starts in that window and must be refused, changing nothing.
        out = tmp_path / f'out-{attempt}'
        first = subprocess.Popen(args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=dict(os.environ, AQUABILL_STALL_AT='1:3000'))
        assert first.stderr is not None
        stalled = first.stderr.readline()
        assert 'stalling 3000 ms after durable step 1: plan written' in stalled, stalled
        second = subprocess.run(args(out), capture_output=True, text=True, timeout=300)
        assert second.returncode == 3, second.stderr
        assert 'another run is working on these tables' in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()
        finish(run_once_binary, log, out)
        assert state(out) == state(ref)
        batches_applied_once(out)
    # Two started together without a stall never both commit a batch.
    out = tmp_path / 'together'
    procs = [subprocess.Popen(args(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes in ([0, 0], [0, 3]), codes
    finish(run_once_binary, log, out)
    assert state(out) == state(ref)
    batches_applied_once(out)


def test_cells_rerun_in_one_kernel_do_not_double_count(
        tmp_path: Path, run_once_binary: Path, log: Path, kernel: nbexec.Kernel) -> None:
    out, ref = tmp_path / 'out', tmp_path / 'ref'
    finish(run_once_binary, log, ref)
    nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK),
                                {'input_root': str(log), 'output_root': str(out)})
    cells = [(nbexec.tags(c), nbexec.source(c)) for c in nbexec.code_cells(nb)]
    for tags, code in cells:
        kernel.execute(code)
        if {'plan', 'hourly', 'cumulative'} & set(tags):
            again = kernel.execute(code)  # a person runs the cell a second time
            if 'plan' not in tags:
                assert 'already committed' in again.text
    for _, code in cells:  # and then the whole notebook again
        kernel.execute(code)
    assert state(out) == state(ref)
    batches_applied_once(out)


def test_random_resplits_give_identical_tables(tmp_path: Path, run_once_binary: Path,
                                               log: Path) -> None:
    whole = tmp_path / 'whole'
    finish(run_once_binary, log, whole)
    expected = comparable(whole)
    files = sorted(p.relative_to(log) for p in log.glob('*/*.jsonl'))
    for seed in range(21):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(files)), rng.randint(1, 6)))
        arrived, out = tmp_path / f'in-{seed}', tmp_path / f'out-{seed}'
        for chunk in zip([0, *cuts], [*cuts, len(files)]):
            for rel in files[chunk[0]:chunk[1]]:
                (arrived / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(log / rel, arrived / rel)
            finish(run_once_binary, arrived, out, cap=rng.choice([0, 8, 16, 32]))
        assert comparable(out) == expected, f'split {seed} ({cuts}) differs'
        shutil.rmtree(arrived)
        shutil.rmtree(out)


def test_crash_in_a_batch_that_accepts_nothing(tmp_path: Path, run_once_binary: Path) -> None:
    """A batch whose only records are a duplicate of a reading in the hour the watermark passes
    in that batch, and a late one: nothing changes in hourly_usage, yet a crash after the dedup
    state moved on must not let the rerun count the duplicate (the state no longer shows the
    hour it is in)."""
    log = tmp_path / 'log'
    first = reading('M1', 'C1', '2026-03-01T10:50:00Z', '2')
    add(log, '2026-03-01T10', 'a.jsonl', first, reading('M2', 'C2', '2026-03-01T10:20:00Z', '1'))
    add(log, '2026-03-08T10', 'b.jsonl', first)
    add(log, '2026-03-08T11', 'c.jsonl', reading('M1', 'C1', '2026-02-20T10:00:00Z', '5'))

    def runs(out: Path, crash_at: int | None) -> str | None:
        """Batch 0 (the first file), then batch 1 (the other two), crashed after its
        `crash_at`-th durable step and rerun; returns the step crashed after."""
        done = run_once(run_once_binary, log, out, cap=1)
        assert done.returncode == 0, done.stderr
        armed = run_once(run_once_binary, log, out, cap=2, crash_at=crash_at)
        step = crashed(armed)
        if step is None:
            assert armed.returncode == 0, armed.stderr
        else:
            again = run_once(run_once_binary, log, out, cap=2)
            assert again.returncode == 0, again.stderr
        return step

    reference = tmp_path / 'reference'
    runs(reference, None)
    expected = state(reference)
    # The duplicate did not count: 2 L once, in one reading.
    c1 = [dict(r) for r in rows(reference / 'hourly_usage') if ('customer_id', 'C1') in r]
    assert c1 == [{'customer_id': 'C1', 'usage_hour': '2026-03-01T10', 'usage_ml': 2000,
                   'reading_count': 1, 'meter_count': 1}]
    steps = []
    k = 0
    while True:
        k += 1
        out = tmp_path / f'crash-{k}'
        step = runs(out, k)
        if step is None:
            break
        steps.append(step)
        assert state(out) == expected, f'a crash after {step} changed the result'
        batches_applied_once(out)
    assert 'dedup_meters: committed' in steps and 'dedup_readings: committed' in steps, steps
