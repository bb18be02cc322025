"""Hand-worked small logs through the notebook: every expected value below is worked out by hand
from SPEC.md (7-day watermark by ingestion hour, first copy wins, dense monthly running totals)."""

from __future__ import annotations

import json
from pathlib import Path

from deltalake import DeltaTable

from conftest import RunNotebook
from helpers import add, reading


def table(out: Path, name: str) -> list[dict]:
    return DeltaTable(str(out / name)).to_pyarrow_table().to_pylist()


def cumulative(out: Path) -> dict[tuple[str, str], dict]:
    rows = table(out, 'cumulative_usage')
    by_key = {(r['customer_id'], r['usage_hour']): r for r in rows}
    assert len(by_key) == len(rows), 'one row per customer and hour'
    return by_key


def test_hand_worked_log(tmp_path: Path, run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    add(log, '2026-03-08T10', 'a.jsonl',
        reading('M1', 'C1', '2026-03-08T10:05:00Z', '1.000'),
        reading('M1', 'C1', '2026-03-08T10:05:00Z', '1.000'),    # duplicate in the same file
        reading('M2', 'C1', '2026-03-08T10:10:00Z', '2'),
        reading('M3', 'C1', '2026-03-08T10:15:00Z', '0.5'),      # C1's third meter
        reading('M4', 'C2', '2026-03-01T11:05:00Z', '0.7'),      # 6 days 23 hours late: counts
        reading('M4', 'C2', '2026-03-01T08:55:00Z', '9'),        # 7 days 1 hour late: quarantined
        reading('M5', 'C3', '2026-03-08T12:00:00Z', '4'))        # future-dated: quarantined
    run_notebook(input_root=str(log), output_root=str(out))

    hourly = {(r['customer_id'], r['usage_hour']): (r['usage_ml'], r['reading_count'],
                                                    r['meter_count'])
              for r in table(out, 'hourly_usage')}
    assert hourly == {('C1', '2026-03-08T10'): (3500, 3, 3), ('C2', '2026-03-01T11'): (700, 1, 1)}
    [m] = table(out, 'run_metrics')
    assert (m['lines_read'], m['accepted'], m['duplicates'], m['late'], m['future']) == \
        (7, 4, 1, 1, 1)
    # Driven by the ingestion hour (03-08T10 minus 7 days), not by the future-dated reading.
    assert m['watermark_hour'] == '2026-03-01T10'
    reasons = sorted(q['reason'] for q in table(out, 'quarantine'))
    assert reasons == ['future', 'late']

    cum = cumulative(out)
    # March 1st 00:00 through March 8th 10:00: 7 * 24 + 11 hours, for C1 and C2 (C3 had nothing).
    assert len(cum) == 2 * (7 * 24 + 11)
    assert cum[('C2', '2026-03-01T10')]['cumulative_ml'] == 0
    assert cum[('C2', '2026-03-01T11')]['cumulative_ml'] == 700
    assert cum[('C2', '2026-03-08T10')]['cumulative_ml'] == 700
    assert cum[('C1', '2026-03-08T09')]['cumulative_ml'] == 0
    assert cum[('C1', '2026-03-08T10')]['cumulative_ml'] == 3500
    assert cum[('C1', '2026-03-05T00')]['usage_ml'] == 0, 'zero-usage hours are present'
    assert cum[('C2', '2026-03-01T09')]['is_final'] and not cum[('C2', '2026-03-01T10')]['is_final']

    # 59 minutes later, in the next hour folder and the next run: the same reading again, and
    # M2's reading with another payload.
    add(log, '2026-03-08T11', 'b.jsonl',
        reading('M1', 'C1', '2026-03-08T10:05:00Z', '1.000'),
        reading('M2', 'C1', '2026-03-08T10:10:00Z', '2.5'))
    run_notebook(input_root=str(log), output_root=str(out))
    m = max(table(out, 'run_metrics'), key=lambda r: r['batch_id'])
    assert (m['lines_read'], m['accepted'], m['duplicates'], m['conflicts']) == (2, 0, 1, 1)
    # Only hour 03-08T10 can hold a collision, and only the batch's meters can collide:
    # M1's and M2's rows are read, not M3's.
    assert m['state_rows_read'] == 2, 'only hour 03-08T10 of meters M1 and M2 was read'
    conflict = [q for q in table(out, 'quarantine') if q['reason'] == 'conflict']
    assert len(conflict) == 1 and json.loads(conflict[0]['raw_line'])['usage_liters'] == 2.5
    assert cumulative(out)[('C1', '2026-03-08T10')]['cumulative_ml'] == 3500, 'first copy kept'
    assert cumulative(out)[('C2', '2026-03-01T10')]['is_final'], 'the watermark moved one hour'

    # Across the month boundary: March closes at 03-31T23 (the bill), April restarts at 0.
    add(log, '2026-04-01T01', 'c.jsonl',
        reading('M1', 'C1', '2026-03-31T23:50:00Z', '2'),
        reading('M1', 'C1', '2026-04-01T00:10:00Z', '1'))
    run_notebook(input_root=str(log), output_root=str(out))
    cum = cumulative(out)
    bills = {c: r['cumulative_ml'] for (c, h), r in cum.items() if h == '2026-03-31T23'}
    assert bills == {'C1': 5500, 'C2': 700}
    april = {k: (r['billing_month'], r['cumulative_ml']) for k, r in cum.items()
             if k[1] >= '2026-04'}
    assert april == {('C1', '2026-04-01T00'): ('2026-04', 1000)}
    assert len(cum) == 2 * 31 * 24 + 1
