"""End to end: the notebook on generated logs, its tables against an independent recomputation."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from aquabill_tools import nbexec

from conftest import Generate, RunNotebook
from expected import recompute
from helpers import assert_tables_match

GEN = ('--meters', '40', '--seed', '5', '--duplicate-rate', '0.03', '--offline-share', '0.3',
       '--malformed-rate', '0.01', '--files-per-hour', '2')


def rows(path: Path) -> list[dict]:
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def totals(out: Path) -> dict[str, int]:
    metrics = rows(out / 'run_metrics')
    keys = ('lines_read', 'accepted', 'duplicates', 'conflicts', 'late', 'future', 'malformed')
    return {k: sum(m[k] for m in metrics) for k in keys}


def test_incremental_runs_match_recomputation(tmp_path: Path, generate: Generate,
                                              run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-02-27T00', '2026-03-01T06', *GEN)
    run_notebook(input_root=str(log), output_root=str(out))
    exp = recompute(log)
    assert exp.duplicates > 0 and exp.malformed > 0 and exp.accepted > 1000
    assert_tables_match(out, exp)
    assert totals(out) == {'lines_read': exp.lines, 'accepted': exp.accepted,
                           'duplicates': exp.duplicates, 'conflicts': exp.conflicts,
                           'late': exp.late, 'future': exp.future, 'malformed': exp.malformed}
    quarantine = rows(out / 'quarantine')
    assert len(quarantine) == exp.quarantined
    assert all(q['raw_line'] and q['reason'] and q['line_number'] > 0 for q in quarantine)

    # More data trickles in, partly into the last hour folder already processed.
    generate(log, '2026-03-01T05:30:00Z', '2026-03-01T12', *GEN)
    run_notebook(input_root=str(log), output_root=str(out), batch_cap=5)
    run_notebook(input_root=str(log), output_root=str(out))
    exp = recompute(log)
    assert_tables_match(out, exp)
    assert totals(out)['lines_read'] == exp.lines
    metrics = rows(out / 'run_metrics')
    assert len(metrics) == 3
    steps = ('plan_ms', 'parse_ms', 'dedup_ms', 'hourly_usage_ms', 'cumulative_usage_ms',
             'finish_ms')
    for m in metrics:
        # Every step's wall time is recorded (a run over thousands of lines takes a millisecond
        # somewhere), and the steps fit in the run's own wall time.
        assert max(m[s] for s in steps) > 0, m
        assert m['duration_ms'] >= sum(m[s] for s in steps)

    # Nothing new: nothing changes.
    versions = {t: DeltaTable(str(out / t)).version()
                for t in ('hourly_usage', 'cumulative_usage', 'quarantine', 'run_metrics')}
    results = run_notebook(input_root=str(log), output_root=str(out))
    assert 'no new files' in nbexec.text_of(results, 'finish')
    assert versions == {t: DeltaTable(str(out / t)).version() for t in versions}


def test_final_hours_and_the_bill(tmp_path: Path, generate: Generate,
                                  run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    # Ten days: the watermark (latest ingestion hour - 7 days) passes the first three.
    generate(log, '2026-03-01T00', '2026-03-11T00', '--meters', '8', '--seed', '2',
             '--offline-share', '0')
    run_notebook(input_root=str(log), output_root=str(out))
    cumulative = rows(out / 'cumulative_usage')
    watermark = '2026-03-03T23'  # latest folder 2026-03-10T23 minus 7 days
    for r in cumulative:
        hour_end_passed = r['usage_hour'] < watermark
        assert r['is_final'] == hour_end_passed, r
    exp = recompute(log)
    last = max(h for _, h in exp.cumulative)
    bills = {c: exp.cumulative[(c, last)][2] for c, h in exp.cumulative if h == last}
    got = {r['customer_id']: r['cumulative_ml'] for r in cumulative if r['usage_hour'] == last}
    assert got == bills
    # Across the two tables: the month's running totals at its latest hour add up to the
    # month's hourly usage as `hourly_usage` stores it.
    march = sum(r['usage_ml'] for r in rows(out / 'hourly_usage')
                if r['usage_hour'].startswith('2026-03'))
    assert sum(got.values()) == march, 'bills add up to the hourly usage of the month'
