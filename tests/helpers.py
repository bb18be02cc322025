"""Helpers shared by the tests (one module: test modules import only from here, `conftest`,
`expected` and `readers`): log lines written by hand, one pipeline run in its own process
(`run_once`), the full state of a set of tables (contents, checkpoint, Delta transactions) to
compare runs by, and the comparison of tables with the plain-Python recomputation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from deltalake import DeltaTable

from expected import Expected

# The reliability tests' log: 12 meters, duplicates, replays, malformed lines, 2 files an hour.
GEN = ('--meters', '12', '--seed', '21', '--duplicate-rate', '0.05', '--offline-share', '0.3',
       '--malformed-rate', '0.01', '--files-per-hour', '2')


def generate_log(generator: Path, root: Path) -> Path:
    """About 36 hours across a month boundary, 2 files an hour, with replays and bad lines."""
    subprocess.run([str(generator), '--output', str(root), '--start-hour', '2026-03-31T00',
                    '--end-hour', '2026-04-01T12', *GEN], check=True, capture_output=True)
    return root


TABLES = ('hourly_usage', 'cumulative_usage', 'monthly_bills', 'meter_alerts', 'quarantine',
          'run_metrics')
# meter_alerts columns that name batches: they depend on how the log was split into runs.
ALERT_BATCHES = ('opened_by_batch', 'closed_by_batch')
# run_metrics columns that differ between two runs of the same batch (times; table versions and
# file counts, which vacuum and compaction commits move).
TIMING = ('started_at', 'duration_ms', 'plan_ms', 'parse_ms', 'dedup_ms', 'hourly_usage_ms',
          'cumulative_usage_ms', 'finish_ms', 'hourly_usage_version', 'hourly_usage_files',
          'cumulative_usage_version', 'cumulative_usage_files')


def run_once(binary: Path, log: Path | str, out: Path | str, cap: int = 0,
             crash_at: int | None = None, tz: str = 'UTC', rebuild: bool = False,
             env: dict[str, str] | None = None, params: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """One run in its own process; `log` and `out` are folders or `s3://` URLs (`env` then
    holds the S3 settings); `params` are further notebook parameters."""
    env = dict(os.environ) | (env or {})
    env.pop('AQUABILL_CRASH_AT', None)
    if crash_at is not None:
        env['AQUABILL_CRASH_AT'] = str(crash_at)
    args = [str(binary), '-p', 'input_root', str(log), '-p', 'output_root', str(out),
            '-p', 'billing_timezone', tz, '-p', 'batch_cap', str(cap)]
    for name, value in (params or {}).items():
        args += ['-p', name, value]
    return subprocess.run(args + (['-p', 'rebuild', 'true'] if rebuild else []),
                          capture_output=True, text=True, env=env, timeout=300)


def finish(binary: Path, log: Path | str, out: Path | str, cap: int = 0, attempts: int = 200,
           tz: str = 'UTC', env: dict[str, str] | None = None) -> None:
    """Runs until no new files are left."""
    for _ in range(attempts):
        done = run_once(binary, log, out, cap, tz=tz, env=env)
        assert done.returncode == 0, done.stderr
        if 'no new files' in done.stdout:
            return
    raise AssertionError('runs never ran out of files')


def crash_at_every_step(attempt: Callable[[int, int | None], subprocess.CompletedProcess[str]],
                        state_of: Callable[[int], dict[str, object]],
                        reference: dict[str, object]) -> list[str]:
    """Crashes runs after durable step k = 1, 2, ... in turn, each k into a target of its own:
    `attempt(k, crash_at)` runs once into target k (armed or not), every crash is followed by
    an unarmed run, and the runs go on until no new files are left; then `state_of(k)` must
    equal `reference`. Stops at the first k no run reaches; returns the steps crashed after."""
    covered: list[str] = []
    k = 0
    while True:
        k += 1
        crashes = 0
        for _ in range(100):
            armed = attempt(k, k)
            step = crashed(armed)
            if step is not None:
                crashes += 1
                covered.append(step)
                assert armed.returncode != 0
                # The next run, unarmed, must finish what the crashed one left.
                again = attempt(k, None)
                assert again.returncode == 0, again.stderr
                continue
            assert armed.returncode == 0, armed.stderr
            if 'no new files' in armed.stdout:
                break
        assert state_of(k) == reference, f'crash after durable step {k} changed the result'
        if crashes == 0:
            return covered


def state_and_remove(out: Path) -> dict[str, object]:
    """The state of a crash test's target `out` (each batch committed once to every table),
    then `out` removed: what `crash_at_every_step`'s `state_of` gives for a local target."""
    found = state(out)
    batches_applied_once(out)
    shutil.rmtree(out)
    return found


def crashed(proc: subprocess.CompletedProcess[str]) -> str | None:
    """The durable step a run crashed after, or None if it did not crash."""
    for line in proc.stderr.splitlines():
        if 'crash injected after durable step' in line:
            return line.split(': ', 2)[-1]
    return None


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[tuple]:
    """A table's rows as sorted tuples (without the columns in `drop`)."""
    table = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in table)


def state(out: Path) -> dict[str, object]:
    """Everything a run leaves behind that must not depend on crashes and reruns."""
    found: dict[str, object] = {t: rows(out / t, TIMING) for t in TABLES}
    found['dedup_readings'] = rows(out / '_checkpoint' / 'dedup_readings')
    found['dedup_keys'] = rows(out / '_checkpoint' / 'dedup_keys')
    found['dedup_meters'] = rows(out / '_checkpoint' / 'dedup_meters')
    found['alert_meters'] = rows(out / '_checkpoint' / 'alert_meters')
    checkpoint = json.loads((out / '_checkpoint' / 'checkpoint.json').read_text())
    # Which files sit in the archive depends on the batches the log was split into: the record
    # of committed files is compared whole.
    checkpoint.pop('archive', None)
    checkpoint['files'] = committed_files(out)
    found['checkpoint'] = checkpoint
    return found


def comparable(out: Path) -> dict[str, object]:
    """What must not depend on how the log was split into runs."""
    metrics = rows(out / 'run_metrics', TIMING)
    counted = ('files', 'lines_read', 'accepted', 'duplicates', 'conflicts', 'late', 'future',
               'malformed')
    totals = {k: sum(dict(m)[k] for m in metrics) for k in counted}
    checkpoint = state(out)['checkpoint']
    assert isinstance(checkpoint, dict)
    return {
        'hourly_usage': rows(out / 'hourly_usage'),
        'cumulative_usage': rows(out / 'cumulative_usage'),
        'dedup_readings': rows(out / '_checkpoint' / 'dedup_readings'),
        'dedup_keys': rows(out / '_checkpoint' / 'dedup_keys'),
        'dedup_meters': rows(out / '_checkpoint' / 'dedup_meters'),
        'monthly_bills': rows(out / 'monthly_bills', ('closed_by_batch',)),
        'meter_alerts': rows(out / 'meter_alerts', ALERT_BATCHES),
        'alert_meters': rows(out / '_checkpoint' / 'alert_meters'),
        'quarantine': rows(out / 'quarantine', ('batch_id',)),
        'totals': totals,
        'watermark': checkpoint['watermark_hour'],
        'files': checkpoint['files'],
    }


def committed_files(out: Path) -> dict[str, int]:
    """Every committed file and its size: `checkpoint.json`'s and its archive's (read here
    as the checkpoint documents them, not through the library)."""
    folder = out / '_checkpoint'
    checkpoint = json.loads((folder / 'checkpoint.json').read_text())
    files: dict[str, int] = dict(checkpoint['files'])
    archive = checkpoint.get('archive')
    if archive is not None:
        archived = json.loads((folder / 'committed' / archive['name']).read_text())['files']
        assert len(archived) == archive['files'], archive
        assert not archived.keys() & files.keys(), 'a file both archived and in the checkpoint'
        assert all(hour_of_path(f) < archive['before_hour'] for f in archived), archive
        files |= archived
    return files


def hour_of_path(rel_path: str) -> int:
    """The hour index (hours since 1970-01-01T00 UTC) of a log file's ingestion-hour folder."""
    folder = rel_path.split('/')[0].removeprefix('ingest_hour=')
    stamp = datetime.strptime(folder, '%Y-%m-%dT%H').replace(tzinfo=timezone.utc)
    return int(stamp.timestamp()) // 3600


def batches_applied_once(out: Path) -> None:
    """Asserts that no table has two commits for one batch (app transaction version)."""
    for table in (*TABLES, '_checkpoint/dedup_keys', '_checkpoint/dedup_meters',
                  '_checkpoint/dedup_readings', '_checkpoint/alert_meters'):
        versions: Counter[int] = Counter()
        for commit in sorted((out / table / '_delta_log').glob('*.json')):
            for line in commit.read_text().splitlines():
                action = json.loads(line)
                if 'txn' in action and action['txn']['appId'] == 'aquabill':
                    versions[action['txn']['version']] += 1
        twice = {v: n for v, n in versions.items() if n > 1}
        assert not twice, f'{table}: batches committed more than once: {twice}'


def table_rows(path: Path) -> list[dict]:
    """A table's rows as dicts, as the Python `deltalake` package reads them."""
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def reading(meter: str, customer: str, recorded: str, liters: str) -> str:
    return (f'{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{recorded}",'
            f'"usage_liters":{liters},"ingested_at":"{recorded}"}}')


def add(log: Path, folder: str, name: str, *lines: str) -> None:
    d = log / f'ingest_hour={folder}'
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(''.join(line + '\n' for line in lines))


def assert_tables_match(out: Path, exp: Expected) -> None:
    hourly_rows = table_rows(out / 'hourly_usage')
    assert len(hourly_rows) == len(exp.hourly), 'one row per customer and hour, no duplicates'
    hourly = {(r['customer_id'], r['usage_hour']): (r['usage_ml'], r['reading_count'],
                                                    r['meter_count'])
              for r in hourly_rows}
    assert hourly == exp.hourly
    cumulative = table_rows(out / 'cumulative_usage')
    assert len(cumulative) == len(exp.cumulative), 'one row per customer and hour, no duplicates'
    got = {(r['customer_id'], r['usage_hour']): (r['billing_month'], r['usage_ml'],
                                                 r['cumulative_ml'])
           for r in cumulative}
    assert got == exp.cumulative


def same_result(out: Path, ref: Path, later_batches: bool = False) -> None:
    """Tables, dedup state and checkpoint agree; the rebuild takes a batch id of its own, so
    batch ids differ for batches after it (`later_batches`)."""
    got, expected = state(out), state(ref)
    for found, root in ((got, out), (expected, ref)):
        checkpoint = found['checkpoint']
        assert isinstance(checkpoint, dict)
        checkpoint.pop('next_batch')
        if later_batches:
            for table in ('quarantine', 'run_metrics'):
                found[table] = rows(root / table, (*TIMING, 'batch_id'))
            found['meter_alerts'] = rows(root / 'meter_alerts', ALERT_BATCHES)
    assert got == expected


def assert_every_kind_of_step(covered: list[str]) -> None:
    """Every kind of durable step was hit, in the first batch and in later ones."""
    kinds = set(covered)
    for expected in ('plan written', 'checkpoint written', 'hourly_usage: committed',
                     'hourly_usage: data files written', 'cumulative_usage: committed',
                     'quarantine: committed', 'run_metrics: committed',
                     'dedup_readings: committed', 'dedup_readings: created',
                     'dedup_keys: committed', 'dedup_meters: committed',
                     'meter_alerts: committed', 'alert_meters: committed'):
        assert expected in kinds, (expected, sorted(kinds))
    print(f'{len(covered)} crashes: {sorted(kinds)}')
