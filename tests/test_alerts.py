"""Meter alerts: `meter_alerts` equals the plain-Python recomputation (`expected.alerts`) on a
hand-worked log, hour by hour and after a late replay, whatever the split of the log into runs;
and on generated logs in every reader (see also the crash, split and rebuild tests, whose
compared state holds both alert tables)."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from conftest import Generate
from expected import alerts, hour_name, recompute
from helpers import (ALERT_BATCHES, add, crashed, finish, reading, rows, run_once, state,
                     table_rows)

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def at(hour: int, minute: int = 30) -> str:
    return (START + timedelta(hours=hour, minutes=minute)).strftime('%Y-%m-%dT%H:%M:%SZ')


def name(hour: int) -> str:
    return hour_name(START + timedelta(hours=hour))


def folder_lines(hour: int) -> list[str]:
    """The readings sent in ingestion hour `hour` of the hand-worked log.

    - LEAK (customer C1) uses 1 l in every hour from 0 to 59 but hour 10 (no reading: the hour
      is unknown) and hour 30 (a reading of 0 l: a dry hour).
    - QUIET (C2) sends 2 l an hour, 0 l in hours divisible by 6 (so it never flows for a day);
      it goes silent after folder 9 and sends hours 10 to 39 with hour 40's readings in folder
      40 (an outage replayed).
    - STEADY (C3) reads every hour like QUIET, so every folder holds a file.
    """
    lines = []
    if hour < 60 and hour != 10:
        lines.append(reading('LEAK', 'C1', at(hour), '0' if hour == 30 else '1'))
    liters = lambda h: '0' if h % 6 == 0 else '2'  # noqa: E731
    if hour < 10 or hour > 40:
        lines.append(reading('QUIET', 'C2', at(hour, 15), liters(hour)))
    if hour == 40:
        lines += [reading('QUIET', 'C2', at(h, 15), liters(h)) for h in range(10, 41)]
    lines.append(reading('STEADY', 'C3', at(hour, 45), liters(hour)))
    return lines


def first_hours(tmp_path: Path, binary: Path, hours: int) -> tuple[Path, Path]:
    """The hand-worked log's first `hours` folders, the first 10 of them taken: (log, out)."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    for hour in range(hours):
        add(log, name(hour), 'part-0.jsonl', *folder_lines(hour))
    assert run_once(binary, log, out, cap=10).returncode == 0
    return log, out


def alert_rows(out: Path) -> list[tuple]:
    return rows(out / 'meter_alerts', ALERT_BATCHES)


def test_episodes_open_close_join_and_equal_the_recomputation(tmp_path: Path,
                                                               run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    by_hour: dict[int, list[dict]] = {}
    for hour in range(62):
        add(log, name(hour), 'part-0.jsonl', *folder_lines(hour))
        done = run_once(run_once_binary, log, out)
        assert done.returncode == 0, done.stderr
        assert alert_rows(out) == alerts(recompute(log)), f'after folder {hour}'
        by_hour[hour] = table_rows(out / 'meter_alerts')

    def of(hour: int, meter: str, kind: str) -> list[dict]:
        return sorted(({k: r[k] for k in ('first_hour', 'last_hour', 'is_open', 'hours',
                                            'usage_ml')}
                       for r in by_hour[hour] if r['meter_id'] == meter and r['kind'] == kind),
                      key=lambda r: str(r['first_hour']))

    # Hand-worked: LEAK's 24th flow hour is hour 24 (hour 10 has no reading).
    assert of(23, 'LEAK', 'continuous_flow') == []
    assert of(24, 'LEAK', 'continuous_flow') == [
        {'first_hour': name(0), 'last_hour': name(24), 'is_open': True, 'hours': 24,
         'usage_ml': 24_000}]
    # Hour 30's 0 l closes it; from hour 31 a second stretch reaches 24 hours at hour 54.
    assert of(30, 'LEAK', 'continuous_flow') == [
        {'first_hour': name(0), 'last_hour': name(29), 'is_open': False, 'hours': 29,
         'usage_ml': 29_000}]
    assert of(61, 'LEAK', 'continuous_flow') == [
        {'first_hour': name(0), 'last_hour': name(29), 'is_open': False, 'hours': 29,
         'usage_ml': 29_000},
        {'first_hour': name(31), 'last_hour': name(59), 'is_open': True, 'hours': 29,
         'usage_ml': 29_000}]
    # QUIET's folders 10..33 are its 24 quiet ones, judged once folder 34 is taken.
    assert of(33, 'QUIET', 'silent') == []
    assert of(34, 'QUIET', 'silent') == [
        {'first_hour': name(10), 'last_hour': name(33), 'is_open': True, 'hours': 24,
         'usage_ml': 0}]
    assert of(40, 'QUIET', 'silent') == [
        {'first_hour': name(10), 'last_hour': name(39), 'is_open': False, 'hours': 30,
         'usage_ml': 0}]
    assert of(61, 'STEADY', 'silent') == of(61, 'QUIET', 'continuous_flow') == []
    # The batch that opened an episode and the one that closed it.
    [closed] = [r for r in by_hour[61] if r['meter_id'] == 'QUIET']
    assert (closed['opened_by_batch'], closed['closed_by_batch']) == (34, 40)
    [still] = [r for r in by_hour[61] if r['meter_id'] == 'LEAK' and r['is_open']]
    assert (still['opened_by_batch'], still['closed_by_batch']) == (54, None)

    # A late reading of hour 30 used water after all: the two episodes are one.
    add(log, name(62), 'part-0.jsonl', reading('LEAK', 'C1', at(30, 50), '0.5'),
        *folder_lines(62))
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 0, done.stderr
    assert alert_rows(out) == alerts(recompute(log))
    leak = [r for r in table_rows(out / 'meter_alerts') if r['meter_id'] == 'LEAK']
    assert [(r['first_hour'], r['last_hour'], r['is_open'], r['hours'], r['usage_ml'],
             r['opened_by_batch']) for r in leak] == [(name(0), name(59), True, 59, 58_500, 24)]

    # The whole log in one run, and a rebuild, give the same alerts.
    once = tmp_path / 'once'
    assert run_once(run_once_binary, log, once).returncode == 0
    assert alert_rows(once) == alert_rows(out)
    rebuilt = run_once(run_once_binary, log, out, rebuild=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert alert_rows(out) == alerts(recompute(log))


def test_a_month_closing_with_one_of_a_customers_two_meters_silent_is_a_bill_at_risk(
        tmp_path: Path, run_once_binary: Path) -> None:
    """C9 has two meters from March 30th: A9 reports every hour to the end (1 l, 0 l at 03:00),
    B9 (2 l an hour) stops after March 31st 11:00. March's end is April 1st 00:00: the watermark
    (the latest folder minus 7 days) comes within 48 hours of it with folder April 6th 00:00,
    and passes it with folder April 8th 00:00."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    start = datetime(2026, 3, 30, tzinfo=timezone.utc)

    def hour(h: int, minute: int = 20) -> str:
        return (start + timedelta(hours=h, minutes=minute)).strftime('%Y-%m-%dT%H:%M:%SZ')

    def write(hours: range) -> None:
        for h in hours:
            lines = [reading('A9', 'C9', hour(h), '0' if h % 24 == 3 else '1')]
            if h < 36:
                lines.append(reading('B9', 'C9', hour(h, 40), '2'))
            add(log, hour_name(start + timedelta(hours=h)), 'part-0.jsonl', *lines)

    def risk() -> list[dict]:
        return [{k: r[k] for k in ('meter_id', 'customer_id', 'first_hour', 'last_hour',
                                   'is_open', 'hours', 'usage_ml')}
                for r in table_rows(out / 'meter_alerts') if r['kind'] == 'bill_at_risk']

    april_6 = 7 * 24  # hours from March 30th
    write(range(april_6))
    assert run_once(run_once_binary, log, out).returncode == 0
    assert alert_rows(out) == alerts(recompute(log))
    assert risk() == [], 'more than 48 hours before March closes'
    write(range(april_6, april_6 + 1))
    # With that folder, a second reading of B9's hour 10 (an hour that has readings already).
    add(log, hour_name(start + timedelta(hours=april_6)), 'part-1.jsonl',
        reading('B9', 'C9', hour(10, 50), '2'))
    assert run_once(run_once_binary, log, out).returncode == 0
    assert alert_rows(out) == alerts(recompute(log))
    # B9's 48 hours of March from its first reading hold 36 with readings.
    at_risk = {'meter_id': 'B9', 'customer_id': 'C9', 'first_hour': '2026-03-30T00',
               'last_hour': '2026-03-31T23', 'is_open': True, 'hours': 12, 'usage_ml': 74_000}
    assert risk() == [at_risk]
    write(range(april_6 + 1, april_6 + 49))
    assert run_once(run_once_binary, log, out, cap=20).returncode == 0
    finish(run_once_binary, log, out, cap=20)
    assert alert_rows(out) == alerts(recompute(log))
    assert risk() == [at_risk | {'is_open': False}]
    bills = {(r['customer_id'], r['billing_month']): r for r in table_rows(out / 'monthly_bills')}
    assert bills[('C9', '2026-03')]['hours_with_readings'] == 48
    # The whole log in one run: the same alerts.
    once = tmp_path / 'once'
    assert run_once(run_once_binary, log, once).returncode == 0
    assert alert_rows(once) == alert_rows(out)


def test_thresholds_are_parameters_and_each_episode_keeps_its_own(
        tmp_path: Path, run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    for hour in range(45):
        add(log, name(hour), 'part-0.jsonl', *folder_lines(hour))
    assert run_once(run_once_binary, log, out, params={'alert_flow_hours': '30'}).returncode == 0
    assert alert_rows(out) == alerts(recompute(log), flow_hours=30)
    assert not [r for r in table_rows(out / 'meter_alerts') if r['kind'] == 'continuous_flow']
    # A later run with the default: the open stretch (hours 31..44) is judged again, the
    # silent episode QUIET closed stays as it was judged.
    add(log, name(45), 'part-0.jsonl', *folder_lines(45))
    assert run_once(run_once_binary, log, out).returncode == 0
    assert alert_rows(out) == alerts(recompute(log))
    bad = run_once(run_once_binary, log, out, params={'alert_silent_hours': '0'})
    assert bad.returncode != 0 and 'alert_silent_hours' in bad.stderr, bad.stderr


def test_a_deployment_without_alert_tables_gets_them_and_one_missing_is_refused(
        tmp_path: Path, run_once_binary: Path) -> None:
    log, out = first_hours(tmp_path, run_once_binary, 30)
    # An earlier version's tables: neither alert table.
    shutil.rmtree(out / 'meter_alerts')
    shutil.rmtree(out / '_checkpoint' / 'alert_meters')
    earlier = tmp_path / 'earlier'
    shutil.copytree(out, earlier)
    done = run_once(run_once_binary, log, out, cap=10)
    assert done.returncode == 0, done.stderr
    assert (out / 'meter_alerts' / '_delta_log').is_dir()
    upgraded = state(out)

    # That first run crashed after each of its durable steps up to the alert tables' commits:
    # the next run finishes it as if it had not.
    covered = []
    for k in range(1, 40):
        target = tmp_path / f'crash-{k}'
        shutil.copytree(earlier, target)
        step = crashed(run_once(run_once_binary, log, target, cap=10, crash_at=k))
        assert step is not None, 'the batch ended before the alert tables committed'
        covered.append(step)
        again = run_once(run_once_binary, log, target, cap=10)
        assert again.returncode == 0, (step, again.stderr)
        assert state(target) == upgraded, step
        shutil.rmtree(target)
        if step == 'alert_meters: committed':
            break
    assert {'meter_alerts: created', 'meter_alerts: committed', 'alert_meters: created'} <= \
        set(covered), covered

    # One of the two gone is a restore gone wrong: refused before any write.
    shutil.rmtree(out / '_checkpoint' / 'alert_meters')
    version = len(list((out / 'hourly_usage' / '_delta_log').glob('*.json')))
    refused = run_once(run_once_binary, log, out, cap=10)
    assert refused.returncode != 0
    assert 'alert_meters' in refused.stderr and 'missing' in refused.stderr, refused.stderr
    assert len(list((out / 'hourly_usage' / '_delta_log').glob('*.json'))) == version


def test_a_leak_longer_than_the_dedup_window_counts_only_its_flow_hours(
        tmp_path: Path, run_once_binary: Path) -> None:
    # LONG reads 0 l in hour 0, then 1 l in every hour to 219 but hour 5 (no reading: unknown).
    # Once the watermark (a week behind) passes hour 5, the runs before it are kept as one:
    # its flow hours stay 218 of the 219 hours it spans.
    log = tmp_path / 'log'
    for hour in range(220):
        if hour != 5:
            add(log, name(hour), 'part-0.jsonl',
                reading('LONG', 'C9', at(hour), '0' if hour == 0 else '1'))
    split, whole = tmp_path / 'split', tmp_path / 'whole'
    finish(run_once_binary, log, split, cap=20)
    assert run_once(run_once_binary, log, whole).returncode == 0
    flow = [dict(r) for r in alert_rows(split) if dict(r)['kind'] == 'continuous_flow']
    assert [(f['first_hour'], f['hours'], f['usage_ml'], f['is_open']) for f in flow] == \
        [(name(1), 218, 218_000, True)]
    assert alert_rows(split) == alert_rows(whole) == alerts(recompute(log))


def test_alert_history_of_the_first_layout_is_refused_until_moved_aside(
        tmp_path: Path, run_once_binary: Path) -> None:
    log, out = first_hours(tmp_path, run_once_binary, 20)
    # The first version with alerts kept one row per run of hours, named by a `part` column.
    history = out / '_checkpoint' / 'alert_meters'
    shutil.rmtree(history)
    longs = {c: pa.array([1], pa.int64()) for c in ('meter', 'customer')}
    hours = {c: pa.array([1], pa.int64()) for c in ('first_hour', 'last_hour', 'hours',
                                                   'usage_ml')}
    write_deltalake(str(history), pa.table({**longs, 'part': pa.array(['heard']), **hours}))
    for hour in range(20, 30):
        add(log, name(hour), 'part-0.jsonl', *folder_lines(hour))
    version = len(list((out / 'hourly_usage' / '_delta_log').glob('*.json')))
    refused = run_once(run_once_binary, log, out, cap=10)
    assert refused.returncode != 0
    for named in ('alert_meters', 'part', 'moved aside', 'meter_alerts'):
        assert named in refused.stderr, (named, refused.stderr)
    assert len(list((out / 'hourly_usage' / '_delta_log').glob('*.json'))) == version

    # Both moved aside: the next run creates them as for a deployment before alerts.
    shutil.rmtree(history)
    shutil.move(out / 'meter_alerts', tmp_path / 'meter_alerts-aside')
    done = run_once(run_once_binary, log, out, cap=10)
    assert done.returncode == 0, done.stderr
    assert table_rows(history), 'no meter histories'


@pytest.mark.parametrize('cap', [1, 3])
def test_generated_logs_give_the_same_alerts_in_any_split(tmp_path: Path, generate: Generate,
                                                          run_once_binary: Path,
                                                          cap: int) -> None:
    log = tmp_path / 'log'
    generate(log, '2026-03-01T00', '2026-03-03T12', '--meters', '20', '--seed', '8',
             '--offline-share', '0.9', '--max-outage-hours', '48', '--files-per-hour', '2',
             '--leak-share', '0.3', '--duplicate-rate', '0.05')
    split, whole = tmp_path / 'split', tmp_path / 'whole'
    finish(run_once_binary, log, split, cap=cap)
    assert run_once(run_once_binary, log, whole).returncode == 0
    want = alerts(recompute(log))
    kinds = {dict(r)['kind'] for r in want}
    assert kinds == {'continuous_flow', 'silent'}, 'the log has leaks and silent meters'
    assert alert_rows(split) == alert_rows(whole) == want
