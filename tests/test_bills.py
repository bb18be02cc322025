"""`monthly_bills`: a billing month's bills are written once, by the run whose watermark passes the
month's end, and equal the plain-Python recomputation however the log is split into runs, in
the billing time zone, after reruns and after a crash at any of the table's durable steps."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable

from aquabill_tools import nbexec
from conftest import RunNotebook
from expected import Bill, closed_bills, log_files, recompute
from readers import READERS, with_pyarrow
from helpers import (TABLES, add, batches_applied_once, crashed, finish, reading, run_once,
                     same_result, state)

# Six meters over ten days across the end of March, one file an hour, with outages and retries.
# The watermark (latest ingestion hour minus 7 days) passes March's end in UTC (04-01T00) with
# ingestion hour 04-08T00 and in New York (04-01T04) with 04-08T04; the log goes on for a day
# after, so later runs must leave the closed month alone.
GEN = ('--meters', '6', '--seed', '5', '--offline-share', '0.4', '--max-outage-hours', '30',
       '--files-per-hour', '1', '--duplicate-rate', '0.02')
START, END = '2026-03-30T00', '2026-04-09T06'
# Files per batch for the split runs: a day's files.
DAY = 24


# A customer of our own whose readings have gaps: two meters, readings at 01:xx and 05:xx on
# March 30th only. Worked by hand: 2.5 + 1 + 0.75 L; hours with readings 2 (T01, T05); hours from
# the first reading (T01) to April's first hour (UTC) 47; at most 2 meters in one hour (T05).
GAPS = 'C_GAPS'
GAPS_UTC = Bill(total_ml=4250, last_hour='2026-03-31T23', hours_with_readings=2,
                hours_since_first_reading=47, meters_reported=2)


@pytest.fixture(scope='module')
def log(tmp_path_factory: pytest.TempPathFactory, generator: Path) -> Path:
    root = tmp_path_factory.mktemp('bills-log') / 'log'
    subprocess.run([str(generator), '--output', str(root), '--start-hour', START,
                    '--end-hour', END, *GEN], check=True, capture_output=True)
    add(root, '2026-03-30T05', 'gaps.jsonl',
        reading('M_GAPS_1', GAPS, '2026-03-30T01:10:00Z', '2.5'),
        reading('M_GAPS_1', GAPS, '2026-03-30T05:20:00Z', '1'),
        reading('M_GAPS_2', GAPS, '2026-03-30T05:25:00Z', '0.75'))
    return root


def bills_of(out: Path, computed_by: str, tz: str = 'UTC'
             ) -> dict[tuple[str, str], tuple[Bill, int]]:
    """`monthly_bills` as (customer, month) -> (bill, closing batch); m³ must equal ml exactly,
    and every bill names the library that computed it and the parameters it was computed with."""
    found: dict[tuple[str, str], tuple[Bill, int]] = {}
    for r in DeltaTable(str(out / 'monthly_bills')).to_pyarrow_table().to_pylist():
        assert isinstance(r['total_m3'], Decimal)
        assert r['total_m3'] * 1_000_000 == r['total_ml'], r
        assert r['computed_by'] == computed_by, r
        assert json.loads(r['parameters']) == {'billing_timezone': tz,
                                                'clock_skew_minutes': 5}, r
        key = (r['customer_id'], r['billing_month'])
        assert key not in found, f'two bills for {key}'
        found[key] = (Bill(r['total_ml'], r['last_hour'], r['hours_with_readings'],
                           r['hours_since_first_reading'], r['meters_reported']),
                      r['closed_by_batch'])
    return found


def closing_batch(log: Path, cap: int, month_end_utc: str) -> int:
    """The batch that takes the first file of ingestion hour `month_end_utc` + 7 days: its
    watermark is the first to reach the month's end (batches take `cap` files in order)."""
    hours = [hour.strftime('%Y-%m-%dT%H') for hour, _ in log_files(log)]
    return next(i for i, h in enumerate(hours) if h >= month_end_utc) // cap


@pytest.mark.parametrize('tz, passes_month_end', [('UTC', '2026-04-08T00'),
                                                  ('America/New_York', '2026-04-08T04')])
def test_bills_match_the_recomputation_however_the_log_is_split(
        tmp_path: Path, run_once_binary: Path, log: Path, tz: str, passes_month_end: str,
        computed_by: str) -> None:
    want = closed_bills(recompute(log, tz=tz), log, tz)
    assert {month for _, month in want} == {'2026-03'}
    assert len(want) >= 3, 'customers billed for March'
    if tz == 'UTC':
        assert want[(GAPS, '2026-03')] == GAPS_UTC, 'the recomputation agrees with the hand'
    # One batch: the month closes in the middle of it.
    whole = tmp_path / 'whole'
    finish(run_once_binary, log, whole, cap=0, tz=tz)
    got = bills_of(whole, computed_by, tz)
    assert {k: b for k, (b, _) in got.items()} == want
    assert {batch for _, batch in got.values()} == {0}
    # A day's files per run: the month closes in the run that takes the watermark past its end.
    daily = tmp_path / 'daily'
    finish(run_once_binary, log, daily, cap=DAY, tz=tz)
    got = bills_of(daily, computed_by, tz)
    assert {k: b for k, (b, _) in got.items()} == want
    assert {batch for _, batch in got.values()} == {closing_batch(log, DAY, passes_month_end)}
    # Nothing new: nothing written again.
    version = DeltaTable(str(daily / 'monthly_bills')).version()
    again = run_once(run_once_binary, log, daily, cap=DAY, tz=tz)
    assert again.returncode == 0 and 'no new files' in again.stdout, again.stderr
    assert DeltaTable(str(daily / 'monthly_bills')).version() == version
    batches_applied_once(daily)


def test_every_reader_reads_the_bills_alike(tmp_path: Path, run_once_binary: Path,
                                            log: Path) -> None:
    out = tmp_path / 'out'
    finish(run_once_binary, log, out, cap=0)
    expected = with_pyarrow(out / 'monthly_bills')
    assert len(expected) == len(closed_bills(recompute(log), log)) >= 3
    for name, read in READERS.items():
        assert read(out / 'monthly_bills') == expected, name


def test_a_crash_at_each_bills_step_is_finished_by_the_next_run(
        tmp_path: Path, run_once_binary: Path, log: Path) -> None:
    reference = tmp_path / 'reference'
    finish(run_once_binary, log, reference, cap=0)
    want = state(reference)
    assert want['monthly_bills'], 'the reference closed a month'
    hit: list[str] = []
    k = 0
    while 'monthly_bills: committed' not in hit:
        k += 1
        out = tmp_path / f'crash-{k}'
        step = crashed(run_once(run_once_binary, log, out, cap=0, crash_at=k))
        assert step is not None, f'the run finished before a monthly_bills commit (k={k})'
        if step.startswith('monthly_bills'):
            hit.append(step)
            finish(run_once_binary, log, out, cap=0)
            assert state(out) == want, f'a crash after {step} changed the result'
            batches_applied_once(out)
        shutil.rmtree(out)
    assert hit == ['monthly_bills: created', 'monthly_bills: data files written',
                   'monthly_bills: committed'], hit


def test_the_notebook_closes_a_month_in_the_billing_time_zone(
        tmp_path: Path, log: Path, run_notebook: RunNotebook, computed_by: str) -> None:
    out = tmp_path / 'out'
    tz = 'America/New_York'
    results = run_notebook(input_root=str(log), output_root=str(out), billing_timezone=tz)
    want = closed_bills(recompute(log, tz=tz), log, tz)
    assert {k: b for k, (b, _) in bills_of(out, computed_by, tz).items()} == want
    shown = nbexec.text_of(results, 'cumulative') + nbexec.text_of(results, 'catch_up')
    assert f'closed 2026-03: {len(want)} bills' in shown or \
        f'2026-03 ({len(want)} bills)' in shown, shown
    bills = nbexec.text_of(results, 'bills')
    total = sum(b.total_ml for b in want.values())
    assert (f'2026-03 closed at 2026-04-01T03: {len(want)} customers, '
            f'{Decimal(total) / 10**6} m³') in bills, bills


def test_a_rebuild_in_another_time_zone_rewrites_closed_bills_only_when_asked(
        tmp_path: Path, run_once_binary: Path, log: Path, computed_by: str) -> None:
    """Bills closed in UTC, then the utility bills in New York time: a rebuild recomputes every
    table in the new zone, in place, only with `rewrite_closed_bills`, and first writes a report
    of every closed bill that changed; rebuilt, the tables are those of runs in the new zone
    from the start, and store it."""
    out, ref, zone = tmp_path / 'out', tmp_path / 'ref', 'America/New_York'
    finish(run_once_binary, log, out, cap=DAY)
    before = {t: DeltaTable(str(out / t)).version() for t in TABLES}
    rewrite = {'rewrite_closed_bills': 'true'}
    refused = run_once(run_once_binary, log, out, cap=DAY, tz=zone, rebuild=True)
    assert refused.returncode == 1 and 'rewrite_closed_bills = true' in refused.stderr, \
        refused.stderr
    alone = run_once(run_once_binary, log, out, cap=DAY, tz=zone, params=rewrite)
    assert alone.returncode == 1 and 'only with rebuild = true' in alone.stderr, alone.stderr
    assert {t: DeltaTable(str(out / t)).version() for t in TABLES} == before
    assert not (out / '_reports').exists()

    done = run_once(run_once_binary, log, out, cap=DAY, tz=zone, rebuild=True, params=rewrite)
    assert done.returncode == 0, done.stderr
    finish(run_once_binary, log, ref, cap=DAY, tz=zone)
    same_result(out, ref)
    utc, new_york = (closed_bills(recompute(log, tz=tz), log, tz) for tz in ('UTC', zone))
    assert {k: b for k, (b, _) in bills_of(out, computed_by, zone).items()} == new_york
    for t in (*TABLES, '_checkpoint/dedup_readings'):
        assert DeltaTable(str(out / t)).metadata().configuration.get(
            'aquabill.billing_timezone') == zone, t
    # The report: every (customer, month) whose bill differs, worked out from the two
    # recomputations.
    (report,) = (out / '_reports').glob('bill-changes-batch-*.jsonl')
    assert f'{report}' in done.stdout, done.stdout
    reported = [json.loads(line) for line in report.read_text().splitlines()]
    assert all(r['billing_timezone_before'] == 'UTC' and r['billing_timezone_after'] == zone
               for r in reported), reported
    want = {}
    for key in utc.keys() | new_york.keys():
        old, new = utc.get(key), new_york.get(key)
        if old is None or new is None or (old.total_ml, old.last_hour) != \
                (new.total_ml, new.last_hour):
            want[key] = (old and old.total_ml, new and new.total_ml)
    assert want, 'the zones bill March differently'
    assert {(r['customer_id'], r['billing_month']): (r['total_ml_before'], r['total_ml_after'])
            for r in reported} == want
    # The tables now run in the new zone only, and the rebuild works again (nothing changes).
    assert run_once(run_once_binary, log, out, cap=DAY).returncode == 1
    again = run_once(run_once_binary, log, out, cap=DAY, tz=zone, rebuild=True, params=rewrite)
    assert again.returncode == 0 and 'no closed bill changed' in again.stdout, again.stdout
    finish(run_once_binary, log, out, cap=DAY, tz=zone)
    assert {k: b for k, (b, _) in bills_of(out, computed_by, zone).items()} == new_york
