"""Billing months in the billing time zone: they start at local midnight on the first, across DST
changes, while hour partitions stay in UTC. Expected hours are worked out by hand from the zones'
rules (2026: New York on EDT, UTC-4, from March 8; Berlin on CEST, UTC+2, from March 29 01:00Z)
and checked against the plain-Python recomputation on a generated log."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from deltalake import DeltaTable

from conftest import Generate, RunNotebook
from expected import recompute
from helpers import add, assert_tables_match, reading


def cumulative(out: Path) -> dict[tuple[str, str], dict]:
    rows = DeltaTable(str(out / 'cumulative_usage')).to_pyarrow_table().to_pylist()
    return {(r['customer_id'], r['usage_hour']): r for r in rows}


def test_new_york_month_boundary(tmp_path: Path, run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    add(log, '2026-04-01T03', 'a.jsonl',
        reading('M1', 'C1', '2026-03-31T12:00:00Z', '5'),        # March 31, 08:00 EDT
        reading('M1', 'C1', '2026-04-01T03:30:00Z', '2'))        # March 31, 23:30 EDT: March
    add(log, '2026-04-01T04', 'a.jsonl',
        reading('M1', 'C1', '2026-04-01T04:30:00Z', '7'))        # April 1, 00:30 EDT: April
    run_notebook(input_root=str(log), output_root=str(out), billing_timezone='America/New_York')
    cum = cumulative(out)
    march = sorted(h for (c, h), r in cum.items() if r['billing_month'] == '2026-03')
    april = sorted(h for (c, h), r in cum.items() if r['billing_month'] == '2026-04')
    # March in New York: 2026-03-01 00:00 EST (05Z) to 2026-04-01 00:00 EDT (04Z), one hour
    # short (DST began March 8): 31 * 24 - 1 hours.
    assert (march[0], march[-1], len(march)) == ('2026-03-01T05', '2026-04-01T03', 743)
    assert april == ['2026-04-01T04']
    assert cum[('C1', '2026-04-01T03')]['cumulative_ml'] == 7000, 'the March bill'
    assert cum[('C1', '2026-04-01T04')]['cumulative_ml'] == 7000, 'April restarts at 0'
    assert cum[('C1', '2026-03-31T11')]['cumulative_ml'] == 0


def test_berlin_month_across_dst(tmp_path: Path, run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    add(log, '2026-03-29T00', 'a.jsonl',
        reading('M1', 'C1', '2026-03-29T00:30:00Z', '1'))        # 01:30 CET
    add(log, '2026-03-29T01', 'a.jsonl',
        reading('M1', 'C1', '2026-03-29T01:30:00Z', '2'))        # 03:30 CEST: 02:00 never was
    add(log, '2026-03-31T21', 'a.jsonl',
        reading('M1', 'C1', '2026-03-31T21:30:00Z', '4'))        # March 31, 23:30 CEST: March
    add(log, '2026-03-31T22', 'a.jsonl',
        reading('M1', 'C1', '2026-03-31T22:30:00Z', '8'))        # April 1, 00:30 CEST: April
    run_notebook(input_root=str(log), output_root=str(out), billing_timezone='Europe/Berlin')
    cum = cumulative(out)
    months = Counter(r['billing_month'] for r in cum.values())
    # March in Berlin: 2026-02-28T23Z (00:00 CET) to 2026-03-31T22Z (00:00 CEST): 743 hours.
    assert months == {'2026-03': 743, '2026-04': 1}
    hours = sorted(h for (_, h) in cum)
    assert hours[0] == '2026-02-28T23', 'partitions are UTC hours'
    total = {h: cum[('C1', h)]['cumulative_ml'] for h in
             ('2026-03-29T00', '2026-03-29T01', '2026-03-31T21', '2026-03-31T22')}
    assert total == {'2026-03-29T00': 1000, '2026-03-29T01': 3000, '2026-03-31T21': 7000,
                     '2026-03-31T22': 8000}


def test_generated_log_in_berlin_matches_recomputation(
        tmp_path: Path, generate: Generate, run_notebook: RunNotebook) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-10-24T18', '2026-10-26T06', '--meters', '15', '--seed', '11',
             '--duplicate-rate', '0.03', '--files-per-hour', '2')
    # Berlin leaves DST on 2026-10-25 at 01:00Z: October has 745 hours.
    run_notebook(input_root=str(log), output_root=str(out), billing_timezone='Europe/Berlin',
                 batch_cap=20)
    run_notebook(input_root=str(log), output_root=str(out), billing_timezone='Europe/Berlin')
    assert_tables_match(out, recompute(log, tz='Europe/Berlin'))
