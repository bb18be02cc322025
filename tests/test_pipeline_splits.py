"""The same log processed in one run and in many small runs gives the same tables, and the tables
read the same through the Python deltalake package, Polars and DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
from deltalake import DeltaTable

from aquabill_tools import nbexec

from conftest import Generate, RunNotebook
from readers import with_duckdb

TABLES = ('hourly_usage', 'cumulative_usage')


def table_rows(path: Path) -> list[tuple]:
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(tuple(sorted(r.items())) for r in rows)


def test_one_run_equals_many_small_runs(tmp_path: Path, generate: Generate,
                                        run_notebook: RunNotebook) -> None:
    log = tmp_path / 'log'
    generate(log, '2026-03-30T18', '2026-04-01T06', '--meters', '25', '--seed', '9',
             '--duplicate-rate', '0.05', '--offline-share', '0.3', '--malformed-rate', '0.01',
             '--files-per-hour', '2')
    files = len(list(log.rglob('*.jsonl')))
    run_notebook(input_root=str(log), output_root=str(tmp_path / 'one'))
    runs = 0
    while True:
        results = run_notebook(input_root=str(log), output_root=str(tmp_path / 'many'),
                               batch_cap=12)
        if 'no new files' in nbexec.text_of(results, 'finish'):
            break
        runs += 1
    assert runs == -(-files // 12)
    for table in TABLES:
        assert table_rows(tmp_path / 'one' / table) == table_rows(tmp_path / 'many' / table), table
    metrics = DeltaTable(str(tmp_path / 'many' / 'run_metrics')).to_pyarrow_table().to_pylist()
    assert len(metrics) == runs
    one = DeltaTable(str(tmp_path / 'one' / 'run_metrics')).to_pyarrow_table().to_pylist()[0]
    for count in ('lines_read', 'accepted', 'duplicates', 'conflicts', 'late', 'future',
                  'malformed'):
        assert sum(m[count] for m in metrics) == one[count], count


def test_tables_read_alike_in_polars_and_duckdb(tmp_path: Path, generate: Generate,
                                                run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-03-01T00', '2026-03-01T12', '--meters', '20', '--seed', '4')
    run_notebook(input_root=str(log), output_root=str(out))
    for table in TABLES:
        path = out / table
        expected = table_rows(path)
        frame = pl.read_delta(str(path))
        assert sorted(tuple(sorted(r.items())) for r in frame.to_dicts()) == expected
        assert frame.schema['usage_ml'] == pl.Int64 and frame.schema['usage_hour'] == pl.String
        # DuckDB reads the table's current files (from the Delta log) as hive partitions.
        files = DeltaTable(str(path)).file_uris()
        rel = duckdb.read_parquet(files, hive_partitioning=True)
        columns = rel.columns
        got = sorted(tuple(sorted(zip(columns, row))) for row in rel.fetchall())
        assert got == expected
        # And through the Delta log, as DuckDB users query Delta tables.
        assert with_duckdb(path) == expected
