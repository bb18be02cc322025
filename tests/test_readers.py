"""The tables as readers meet them: after a day of hourly runs with replays (main and side files
in the hour partitions, files rewritten and compacted, Delta log checkpoints), every reader users
have reads the same rows, which equal the plain-Python recomputation."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from conftest import Generate
from expected import alerts, recompute
from readers import READERS, with_duckdb, with_polars_scan, with_pyarrow
from helpers import ALERT_BATCHES, assert_tables_match, rows, run_once

TABLES = ('hourly_usage', 'cumulative_usage', 'meter_alerts', 'quarantine', 'run_metrics')


def side_files(table: Path) -> int:
    """Files the table's log tags as side files, added and not removed."""
    live: dict[str, bool] = {}
    for commit in sorted((table / '_delta_log').glob('*.json')):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if 'add' in action:
                tags = action['add'].get('tags') or {}
                live[action['add']['path']] = tags.get('aquabill.role') == 'side'
            elif 'remove' in action:
                live.pop(action['remove']['path'], None)
    return sum(live.values())


def test_every_reader_reads_the_same_rows(tmp_path: Path, generate: Generate,
                                          run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    # Half the meters go quiet for up to 12 hours and replay: side files in many hours.
    generate(log, '2026-03-01T00', '2026-03-02T06', '--meters', '30', '--seed', '4',
             '--offline-share', '0.5', '--max-outage-hours', '12', '--files-per-hour', '1',
             '--duplicate-rate', '0.05', '--malformed-rate', '0.01')
    runs = 0
    while True:
        done = run_once(run_once_binary, log, out, cap=1)
        assert done.returncode == 0, done.stderr
        if 'no new files' in done.stdout:
            break
        runs += 1
    assert runs == len(list(log.rglob('*.jsonl')))
    assert_tables_match(out, recompute(log))
    assert rows(out / 'meter_alerts', ALERT_BATCHES) == alerts(recompute(log))
    assert side_files(out / 'hourly_usage') > 0 and side_files(out / 'cumulative_usage') > 0
    assert list((out / 'cumulative_usage' / '_delta_log').glob('*.checkpoint.parquet'))
    for table in TABLES:
        path = out / table
        expected = with_pyarrow(path)
        assert expected, table
        for name, read in READERS.items():
            assert read(path) == expected, (table, name)
    # Filters on the partition column give the hour's rows.
    hour = '2026-03-01T09'
    want = [r for r in with_pyarrow(out / 'cumulative_usage') if ('usage_hour', hour) in r]
    assert want
    assert with_polars_scan(out / 'cumulative_usage', pl.col('usage_hour') == hour) == want
    assert with_duckdb(out / 'cumulative_usage', f"usage_hour = '{hour}'") == want
