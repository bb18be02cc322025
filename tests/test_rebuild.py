"""Rebuild after a data error in the log is fixed: the tables equal what incremental runs over
the corrected log produce, each table changes in one commit, and a crash anywhere in the
rebuild is finished by the next rebuild while ordinary runs wait."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable

import helpers
from helpers import (TABLES, batches_applied_once, crashed, reading, rows, run_once,
                     same_result)

CAP = 24


def finish(binary: Path, log: Path, out: Path) -> None:
    helpers.finish(binary, log, out, cap=CAP, attempts=100)


@pytest.fixture
def corrected_log(tmp_path: Path, generator: Path, run_once_binary: Path
                  ) -> tuple[Path, Path, Path]:
    """A log processed while one of its files held a wrong reading, then corrected: returns
    (log, tables built from the bad log, tables built incrementally from the corrected log)."""
    log = tmp_path / 'log'
    subprocess.run([str(generator), '--output', str(log), '--start-hour', '2026-07-01T00',
                    '--end-hour', '2026-07-02T00', '--meters', '10', '--seed', '3',
                    '--files-per-hour', '2', '--duplicate-rate', '0.03'],
                   check=True, capture_output=True)
    files = sorted(log.glob('*/*.jsonl'))
    bad = files[len(files) // 2]
    original = bad.read_bytes()
    hour = bad.parent.name.removeprefix('ingest_hour=')
    bad.write_bytes(original + (reading('M0000001', 'C000001', f'{hour}:59:30Z', '999.5')
                                + '\n').encode())
    out = tmp_path / 'out'
    finish(run_once_binary, log, out)
    bad.write_bytes(original)
    ref = tmp_path / 'ref'
    finish(run_once_binary, log, ref)
    assert rows(out / 'hourly_usage') != rows(ref / 'hourly_usage'), 'the error changed bills'
    return log, out, ref


def test_rebuild_equals_incremental_runs_over_the_corrected_log(
        corrected_log: tuple[Path, Path, Path], run_once_binary: Path) -> None:
    log, out, ref = corrected_log
    refused = run_once(run_once_binary, log, out, cap=CAP)
    assert refused.returncode == 1
    assert 'changed after it was committed' in refused.stderr and 'rebuild' in refused.stderr

    before = {t: DeltaTable(str(out / t)).version() for t in TABLES}
    old_hourly = rows(out / 'hourly_usage')
    done = run_once(run_once_binary, log, out, cap=CAP, rebuild=True)
    assert done.returncode == 0, done.stderr
    assert 'rebuilt from the log' in done.stdout
    same_result(out, ref)
    batches_applied_once(out)
    # One commit per table: readers see the old version or the new one, never a mix. A table
    # empty before and after records the rebuild's batch all the same.
    for table in TABLES:
        assert DeltaTable(str(out / table)).version() == before[table] + 1, table
    old = DeltaTable(str(out / 'hourly_usage'), version=before['hourly_usage'])
    assert sorted(tuple(r.items()) for r in old.to_pyarrow_table().to_pylist()) == old_hourly
    assert not (out / '_rebuild').exists()

    # Ordinary runs go on with new files, in a batch after the rebuild's.
    (log / 'ingest_hour=2026-07-02T00').mkdir()
    (log / 'ingest_hour=2026-07-02T00' / 'new.jsonl').write_text(
        reading('M0000002', 'C000002', '2026-07-02T00:10:00Z', '3') + '\n')
    finish(run_once_binary, log, out)
    finish(run_once_binary, log, ref)
    same_result(out, ref, later_batches=True)


def test_crash_during_rebuild(corrected_log: tuple[Path, Path, Path], run_once_binary: Path,
                              tmp_path: Path) -> None:
    log, bad, ref = corrected_log

    def crash_rebuild(k: int) -> tuple[Path, str | None]:
        out = tmp_path / f'crash-{k}'
        shutil.copytree(bad, out)
        return out, crashed(run_once(run_once_binary, log, out, cap=CAP, rebuild=True,
                                     crash_at=k))

    # How many durable steps the rebuild takes: the largest k that still crashes.
    low, high = 1, 128
    while low < high:
        mid = (low + high + 1) // 2
        out, step = crash_rebuild(mid)
        shutil.rmtree(out)
        low, high = (mid, high) if step is not None else (low, mid - 1)
    last = low
    steps = []
    for k in sorted({1, last // 2, *range(max(1, last - 24), last + 1)}):
        out, step = crash_rebuild(k)
        assert step is not None
        steps.append(step)
        ordinary = run_once(run_once_binary, log, out, cap=CAP)
        if (out / '_rebuild' / 'rebuild.json').exists():
            assert ordinary.returncode == 1 and 'rebuild' in ordinary.stderr, (k, step)
        again = run_once(run_once_binary, log, out, cap=CAP, rebuild=True)
        assert again.returncode == 0, (k, step, again.stderr)
        same_result(out, ref)
        batches_applied_once(out)
        shutil.rmtree(out)
    for expected in ('rebuild marker written', 'hourly_usage: committed', 'checkpoint written',
                     'dedup_readings: committed'):
        assert expected in steps, (expected, steps)
