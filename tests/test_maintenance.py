"""Table maintenance on an hourly schedule: bounded file counts, Delta log checkpoints, vacuum of
files no recent version needs, and metrics that show versions and files. 50 hourly runs."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from deltalake import DeltaTable

from conftest import Generate
from expected import recompute
from helpers import add, assert_tables_match, reading, run_once

RUNS = 50
EIGHT_DAYS = 8 * 24 * 3600


def test_fifty_hourly_runs_stay_compact(tmp_path: Path, generate: Generate,
                                         run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    start = datetime(2026, 6, 3, 0)
    old_orphan = out / 'hourly_usage' / 'usage_hour=2026-06-03T00' / 'part-orphan-old.parquet'
    new_orphan = old_orphan.with_name('part-orphan-new.parquet')
    for i in range(RUNS):
        hour = start + timedelta(hours=i)
        generate(log, hour.strftime('%Y-%m-%dT%H'),
                 (hour + timedelta(hours=1)).strftime('%Y-%m-%dT%H'), '--meters', '20',
                 '--seed', '9', '--offline-share', '0.5', '--duplicate-rate', '0.02',
                 '--files-per-hour', '2')
        if i == 20:
            # What a run that crashed before committing leaves: files no version refers to.
            for orphan, age in ((old_orphan, EIGHT_DAYS), (new_orphan, 0)):
                orphan.parent.mkdir(parents=True, exist_ok=True)
                orphan.write_bytes(b'PAR1 left by a crashed run')
                os.utime(orphan, (time.time() - age, time.time() - age))
        done = run_once(run_once_binary, log, out)
        assert done.returncode == 0, done.stderr
    assert_tables_match(out, recompute(log))

    hourly = DeltaTable(str(out / 'hourly_usage'))
    cumulative = DeltaTable(str(out / 'cumulative_usage'))
    per_hour: dict[str, int] = {}
    for path in cumulative.file_uris():
        hour = path.split('usage_hour=')[1].split('/')[0]
        per_hour[hour] = per_hour.get(hour, 0) + 1
    assert max(per_hour.values()) <= 3, 'appended hours are rewritten at 4 files'
    hourly_per_hour: dict[str, int] = {}
    for path in hourly.file_uris():
        hour = path.split('usage_hour=')[1].split('/')[0]
        hourly_per_hour[hour] = hourly_per_hour.get(hour, 0) + 1
    # A main file, and a side file for the customers with a meter gone quiet.
    assert max(hourly_per_hour.values()) <= 2, 'at most a main and a side file per hour'
    for table in ('quarantine', 'run_metrics'):
        assert len(DeltaTable(str(out / table)).file_uris()) < 48

    # A Delta log checkpoint once a day of commits; readers open from it.
    for table in ('hourly_usage', 'cumulative_usage', 'run_metrics'):
        assert list((out / table / '_delta_log').glob('*.checkpoint.parquet')), table

    # Vacuum ran after batch 23: the week-old orphan went, the fresh one stays (it may belong
    # to a run in flight), and nothing a version of the last 7 days refers to was deleted.
    assert not old_orphan.exists() and new_orphan.exists()
    for table in (hourly, cumulative):
        for version in range(max(0, table.version() - 30), table.version() + 1):
            table.load_as_version(version)
            assert all(Path(uri.removeprefix('file://')).exists() for uri in table.file_uris())

    metrics = DeltaTable(str(out / 'run_metrics')).to_pyarrow_table().to_pylist()
    last = max(metrics, key=lambda m: m['batch_id'])
    assert len(metrics) == RUNS
    assert last['hourly_usage_version'] == DeltaTable(str(out / 'hourly_usage')).version()
    assert last['hourly_usage_files'] == len(DeltaTable(str(out / 'hourly_usage')).file_uris())
    assert last['cumulative_usage_files'] == \
        len(DeltaTable(str(out / 'cumulative_usage')).file_uris())


def test_newcomers_zero_rows_are_compacted(tmp_path: Path, run_once_binary: Path) -> None:
    """Each run brings a customer new to the month: its zero rows from the month's first hour
    are appended to the early hours, which are rewritten as one file once they would have 4."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    for k in range(6):
        hour = f'2026-06-01T{10 + k:02d}'
        add(log, hour, 'a.jsonl', reading(f'M{k}', f'C{k}', f'{hour}:30:00Z', str(k + 1)))
        done = run_once(run_once_binary, log, out)
        assert done.returncode == 0, done.stderr
    table = DeltaTable(str(out / 'cumulative_usage'))
    files = [uri for uri in table.file_uris() if 'usage_hour=2026-06-01T00/' in uri]
    assert 1 <= len(files) <= 3, files
    rows = table.to_pyarrow_table().to_pylist()
    got = {(r['customer_id'], r['usage_hour']): r['cumulative_ml'] for r in rows}
    assert len(got) == len(rows), 'no row twice'
    for k in range(6):
        # Dense from 00 to the latest hour (15), zero before the customer's reading.
        for h in range(16):
            expected = (k + 1) * 1000 if h >= 10 + k else 0
            assert got[(f'C{k}', f'2026-06-01T{h:02d}')] == expected, (k, h)
