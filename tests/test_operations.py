"""What operators do keeps the bills right or is refused before any write: rebuilding any number
of times, a folder named by a clock in the future, a checkpoint restored from an older copy, a
changed billing time zone, a batch replayed with another clock-skew tolerance. Each run is one
`run_once` process; the log arrives hour by hour, with the run's clock (`AQUABILL_NOW`) half an
hour into the newest hour, as on an hourly schedule."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, TableFeatures

from aquabill_tools import nbexec
from aquabill_tools.env import built
from conftest import ROOT, RunNotebook
from helpers import (TABLES, add, batches_applied_once, comparable, committed_files,
                     crash_at_every_step, crashed, finish, hour_of_path, reading, rows, run_once,
                     same_result, state, state_and_remove)

PREFIX = 'ingest_hour='


def hour_of(folder: Path | str) -> datetime:
    return datetime.strptime(Path(folder).name.removeprefix(PREFIX), '%Y-%m-%dT%H')


def folder_of(hour: datetime) -> str:
    return f'{PREFIX}{hour:%Y-%m-%dT%H}'


def now_in(hour: datetime) -> dict[str, str]:
    """The run's clock half an hour into `hour`."""
    return {'AQUABILL_NOW': f'{hour + timedelta(minutes=30):%Y-%m-%dT%H:%M:%S}Z'}


@pytest.fixture(scope='module')
def source(tmp_path_factory: pytest.TempPathFactory, generator: Path) -> list[Path]:
    """A day of log, its ingestion-hour folders in order: they arrive one per run."""
    root = tmp_path_factory.mktemp('source') / 'log'
    subprocess.run([str(generator), '--output', str(root), '--start-hour', '2026-04-29T12',
                    '--end-hour', '2026-04-30T12', '--meters', '16', '--seed', '5',
                    '--files-per-hour', '2', '--duplicate-rate', '0.05',
                    '--offline-share', '0.3', '--malformed-rate', '0.01'],
                   check=True, capture_output=True)
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX))


def arrive(folder: Path, log: Path) -> None:
    shutil.copytree(folder, log / folder.name, dirs_exist_ok=True)


def hourly(binary: Path, log: Path, out: Path, hour: datetime, rebuild: bool = False,
           tz: str = 'UTC') -> subprocess.CompletedProcess[str]:
    done = run_once(binary, log, out, rebuild=rebuild, tz=tz, env=now_in(hour))
    assert done.returncode == 0, done.stderr
    return done


def versions(out: Path) -> dict[str, int]:
    return {t: DeltaTable(str(out / t)).version() for t in TABLES}


def test_rebuild_any_number_of_times(tmp_path: Path, source: list[Path],
                                     run_once_binary: Path) -> None:
    """Rebuilds after later runs and twice in a row; the log did not change, so each leaves the
    tables that runs without rebuilds make."""
    log, out, ref = tmp_path / 'log', tmp_path / 'out', tmp_path / 'ref'
    rebuild_at = {6: 1, 12: 1, 18: 2}
    for i, folder in enumerate(source):
        arrive(folder, log)
        for _ in range(rebuild_at.get(i, 0)):
            done = hourly(run_once_binary, log, out, hour_of(folder), rebuild=True)
            assert 'rebuilt from the log' in done.stdout
        hourly(run_once_binary, log, out, hour_of(folder))
        hourly(run_once_binary, log, ref, hour_of(folder))
    same_result(out, ref, later_batches=True)
    batches_applied_once(out)
    plans = sorted((out / '_checkpoint' / 'batches').glob('*.json'))
    rebuilds = [p for p in plans if json.loads(p.read_text()).get('rebuild')]
    assert len(rebuilds) == 4, [p.name for p in plans]


def test_a_folder_from_the_future_is_held_back(tmp_path: Path, source: list[Path],
                                               run_once_binary: Path) -> None:
    """The server's clock jumps a year ahead while it writes one file: the file is held back and
    reported by every run, the watermark does not move for it, and once the operator moves it
    into the folder of the hour it arrived in, the tables are those of a log that never had the
    jump."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    ref_log, ref = tmp_path / 'ref-log', tmp_path / 'ref'
    jump, moved = 4, 10
    future = folder_of(hour_of(source[-1]) + timedelta(days=400))
    stray = sorted(source[jump].glob('*.jsonl'))[0]
    for i, folder in enumerate(source):
        arrive(folder, log)
        arrive(folder, ref_log)
        if i == jump:
            (log / future).mkdir()
            (log / folder.name / stray.name).rename(log / future / stray.name)
            (ref_log / folder.name / stray.name).unlink()
        if i == moved:
            (log / future / stray.name).rename(log / source[jump].name / stray.name)
            (log / future).rmdir()
            shutil.copy(stray, ref_log / source[jump].name / stray.name)
        done = hourly(run_once_binary, log, out, hour_of(folder))
        hourly(run_once_binary, ref_log, ref, hour_of(folder))
        if jump <= i < moved:
            assert f'held back {future} (1 files)' in done.stdout, done.stdout
        else:
            assert 'held back' not in done.stdout, done.stdout
        checkpoint = json.loads((out / '_checkpoint' / 'checkpoint.json').read_text())
        expected = json.loads((ref / '_checkpoint' / 'checkpoint.json').read_text())
        assert checkpoint['watermark_hour'] == expected['watermark_hour'], i
    # run_metrics records the held-back file in the runs that held it back, and only there.
    metrics = sorted(DeltaTable(str(out / 'run_metrics')).to_pyarrow_table().to_pylist(),
                     key=lambda m: m['batch_id'])
    assert [m['held_back_files'] for m in metrics] == \
        [1 if jump <= i < moved else 0 for i in range(len(source))]
    got, want = state(out), state(ref)
    for found in (got, want):
        found['run_metrics'] = [tuple(c for c in m if c[0] != 'held_back_files')
                                for m in found['run_metrics']]
    assert got == want


@pytest.fixture
def backed_up(tmp_path: Path, source: list[Path], run_once_binary: Path
              ) -> tuple[Path, Path, Path, Path]:
    """(log, tables after 6 hourly runs with 6 more hours of log waiting, a copy of them taken
    after 3 runs, tables of the same log made by 3 hourly runs and then one run over the rest,
    never restored)."""
    log, out, backup = tmp_path / 'log', tmp_path / 'out', tmp_path / 'backup'
    ref_log, ref = tmp_path / 'ref-log', tmp_path / 'ref'
    for i, folder in enumerate(source[:6]):
        arrive(folder, log)
        hourly(run_once_binary, log, out, hour_of(folder))
        if i < 3:
            arrive(folder, ref_log)
            hourly(run_once_binary, ref_log, ref, hour_of(folder))
        if i == 2:
            shutil.copytree(out, backup)
    for folder in source[3:12]:
        arrive(folder, log)
        arrive(folder, ref_log)
    finish(run_once_binary, ref_log, ref)
    return log, out, backup, ref


def refused(binary: Path, log: Path, out: Path, *expected: str) -> None:
    """A run refuses, saying each of `expected`, and changes nothing."""
    before = versions(out)
    checkpoint = (out / '_checkpoint' / 'checkpoint.json').read_bytes()
    done = run_once(binary, log, out)
    assert done.returncode == 1, done.stdout
    for text in expected:
        assert text in done.stderr, done.stderr
    assert versions(out) == before
    assert (out / '_checkpoint' / 'checkpoint.json').read_bytes() == checkpoint


def test_a_checkpoint_older_than_the_tables_is_refused(
        backed_up: tuple[Path, Path, Path, Path], run_once_binary: Path) -> None:
    log, out, backup, ref = backed_up
    shutil.rmtree(out / '_checkpoint')
    shutil.copytree(backup / '_checkpoint', out / '_checkpoint')
    refused(run_once_binary, log, out, 'the checkpoint', 'disagree',
            "the checkpoint's last batch is 2", '`hourly_usage` holds batch 5, after',
            'Restoring a backup')
    # The way out: the checkpoint and the tables from the same backup.
    shutil.rmtree(out)
    shutil.copytree(backup, out)
    finish(run_once_binary, log, out)
    assert state(out) == state(ref)


def test_tables_older_than_the_checkpoint_or_missing_are_refused(
        backed_up: tuple[Path, Path, Path, Path], run_once_binary: Path) -> None:
    log, out, backup, _ = backed_up
    # The checkpoint lost, the tables kept: a new checkpoint must not start from batch 0 again.
    (out / '_checkpoint').rename(out.parent / 'kept')
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 1, done.stdout
    assert "last batch is none (a new checkpoint), and `hourly_usage` holds batch 5" \
        in done.stderr, done.stderr
    shutil.rmtree(out / '_checkpoint')
    (out.parent / 'kept').rename(out / '_checkpoint')
    # One table restored from the older copy.
    shutil.rmtree(out / 'cumulative_usage')
    shutil.copytree(backup / 'cumulative_usage', out / 'cumulative_usage')
    refused(run_once_binary, log, out, '`cumulative_usage` holds batch 2, before')
    # One table gone (moved, or a mistyped folder): it must not be created empty.
    shutil.rmtree(out / 'cumulative_usage')
    checkpoint = (out / '_checkpoint' / 'checkpoint.json').read_bytes()
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 1 and '`cumulative_usage` is missing' in done.stderr, done.stderr
    assert not (out / 'cumulative_usage').exists()
    assert (out / '_checkpoint' / 'checkpoint.json').read_bytes() == checkpoint


def test_a_changed_billing_timezone_is_refused_and_a_new_output_root_takes_it(
        tmp_path: Path, source: list[Path], run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    for folder in source[:6]:
        arrive(folder, log)
    finish(run_once_binary, log, out)
    for t in (*TABLES, '_checkpoint/dedup_readings'):
        configuration = DeltaTable(str(out / t)).metadata().configuration
        assert configuration.get('aquabill.billing_timezone') == 'UTC', (t, configuration)
    arrive(source[6], log)
    zone = 'America/New_York'
    before = versions(out)
    for rebuild in (False, True):
        done = run_once(run_once_binary, log, out, tz=zone, rebuild=rebuild)
        assert done.returncode == 1, done.stdout
        for text in ('built with billing_timezone = UTC', f'billing_timezone = {zone}',
                     'new output_root', 'nothing was changed'):
            assert text in done.stderr, (rebuild, done.stderr)
        assert versions(out) == before
        assert not (out / '_rebuild').exists()
    # The way out the message names: a new output root computes everything in the new zone.
    fresh = tmp_path / 'fresh'
    finish(run_once_binary, log, fresh, tz=zone)
    configuration = DeltaTable(str(fresh / 'cumulative_usage')).metadata().configuration
    assert configuration.get('aquabill.billing_timezone') == zone
    finish(run_once_binary, log, out)  # The old tables go on in their own zone.


def test_a_resumed_batch_accepts_what_its_plan_accepted(tmp_path: Path,
                                                        run_once_binary: Path) -> None:
    """The clock-skew tolerance is recorded in the batch's plan: a batch planned with 5 minutes
    and resumed after a crash by a run with 0 accepts the reading 3 minutes past its hour."""
    log = tmp_path / 'log'
    add(log, '2026-04-02T10', 'a.jsonl',
        reading('M1', 'C1', '2026-04-02T10:30:00Z', '2'),
        reading('M1', 'C1', '2026-04-02T11:03:00Z', '5'))
    out, ref = tmp_path / 'out', tmp_path / 'ref'
    step = crashed(run_once(run_once_binary, log, out, crash_at=1))
    assert step == 'plan written'
    strict = {'clock_skew_minutes': '0'}
    done = run_once(run_once_binary, log, out, params=strict)
    assert done.returncode == 0, done.stderr
    finish(run_once_binary, log, ref)
    assert state(out) == state(ref)
    assert [r[2] for r in rows(out / 'hourly_usage')] == [('usage_ml', 2000), ('usage_ml', 5000)]
    # A new batch decides with the run's own value.
    add(log, '2026-04-02T11', 'b.jsonl', reading('M1', 'C1', '2026-04-02T12:03:00Z', '7'))
    done = run_once(run_once_binary, log, out, params=strict)
    assert done.returncode == 0, done.stderr
    assert any('future' in str(r) for r in rows(out / 'quarantine')), rows(out / 'quarantine')


def active_roles(table: Path) -> dict[str, str | None]:
    """The table's active data files (relative paths) and the `aquabill.role` tag each was
    committed with (None: untagged)."""
    tags: dict[str, str | None] = {}
    for commit in sorted((table / '_delta_log').glob('*.json')):
        for line in commit.read_text().splitlines():
            add = json.loads(line).get('add')
            if add is not None:
                tags[add['path']] = (add.get('tags') or {}).get('aquabill.role')
    paths = [Path(uri.removeprefix('file://')).relative_to(table).as_posix()
             for uri in DeltaTable(str(table)).file_uris()]
    return {path: tags[path] for path in paths}


def test_an_hour_compacted_by_another_engine_is_rewritten_whole(
        tmp_path: Path, run_once_binary: Path) -> None:
    """C2's meter goes quiet, then replays: the replay's rows of C2 go to side files of hours
    01 and 02 of `hourly_usage`, beside main files with C1. Another engine's OPTIMIZE merges hour
    01 into one untagged file holding both customers; then late readings of C2 for hour 01
    arrive, twice. The tables equal those of runs over the same log that were never compacted,
    with one row per customer and hour."""
    readings = {
        '00': [('M1', 'C1', '00:10', '1'), ('M1', 'C1', '00:40', '1'), ('M2', 'C2', '00:10', '2')],
        '01': [('M1', 'C1', '01:10', '1'), ('M1', 'C1', '01:40', '1')],
        '02': [('M1', 'C1', '02:10', '1')],
        '03': [('M1', 'C1', '03:10', '1'), ('M2', 'C2', '00:40', '2'), ('M2', 'C2', '01:10', '2'),
               ('M2', 'C2', '02:10', '2')],
        '04': [('M1', 'C1', '04:10', '1'), ('M2', 'C2', '01:50', '3')],
        '05': [('M1', 'C1', '05:10', '1'), ('M2', 'C2', '01:55', '4')],
    }
    log, out, ref = tmp_path / 'log', tmp_path / 'out', tmp_path / 'ref'
    day = '2026-03-10'
    for folder, lines in readings.items():
        add(log, f'{day}T{folder}', 'a.jsonl',
            *(reading(m, c, f'{day}T{t}:00Z', liters) for m, c, t, liters in lines))
        for target in (out, ref):
            done = run_once(run_once_binary, log, target)
            assert done.returncode == 0, done.stderr
        if folder != '03':
            continue
        table = out / 'hourly_usage'
        hour = f'usage_hour={day}T01/'
        roles = sorted((r or '') for p, r in active_roles(table).items() if p.startswith(hour))
        assert roles == ['main', 'side'], roles
        DeltaTable(str(table)).optimize.compact(
            partition_filters=[('usage_hour', '=', f'{day}T01')])
        merged = [p for p in active_roles(table) if p.startswith(hour)]
        assert [active_roles(table)[p] for p in merged] == [None], merged
        assert sorted(pq.read_table(table / merged[0]).column('customer_id').to_pylist()) \
            == ['C1', 'C2'], 'the untagged file holds the customer kept apart'
    for t in ('hourly_usage', 'cumulative_usage'):
        found = rows(out / t)
        keys = [(dict(r)['customer_id'], dict(r)['usage_hour']) for r in found]
        assert len(keys) == len(set(keys)), f'{t}: a customer has two rows in one hour'
        assert found == rows(ref / t), t
    assert hourly_usage_of(out)[('C2', f'{day}T01')] == 9000


def hourly_usage_of(out: Path) -> dict[tuple[str, str], int]:
    return {(r['customer_id'], r['usage_hour']): r['usage_ml']
            for r in DeltaTable(str(out / 'hourly_usage')).to_pyarrow_table().to_pylist()}


def test_a_protocol_upgraded_by_another_engine_is_refused(tmp_path: Path, source: list[Path],
                                                         run_once_binary: Path) -> None:
    """Another engine enables deletion vectors on `cumulative_usage`: runs refuse, naming the
    table and the upgrade, before anything is written."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    for folder in source[:3]:
        arrive(folder, log)
    finish(run_once_binary, log, out)
    DeltaTable(str(out / 'cumulative_usage')).alter.add_feature(
        TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    arrive(source[3], log)
    refused(run_once_binary, log, out, '`cumulative_usage`', 'deletionVectors',
            'another engine upgraded its Delta protocol')


def test_a_rebuild_planned_afresh_undoes_a_folder_taken_from_the_future(
        tmp_path: Path, source: list[Path], run_once_binary: Path) -> None:
    """Tables whose runs took a folder from the future (as earlier versions did: here, runs
    whose clock was ahead too) quarantine the real folders after it as late. With the file moved
    back, a rebuild that plans afresh from the log makes the tables of a run from scratch over
    the corrected log, and a later rebuild replays that."""
    log, out, ref = tmp_path / 'log', tmp_path / 'out', tmp_path / 'ref'
    jump = 4
    future = folder_of(hour_of(source[-1]) + timedelta(days=400))
    stray = sorted(source[jump].glob('*.jsonl'))[0].name
    ahead = now_in(hour_of(future) + timedelta(hours=1))
    for i, folder in enumerate(source[:10]):
        arrive(folder, log)
        if i == jump:
            (log / future).mkdir()
            (log / folder.name / stray).rename(log / future / stray)
        done = run_once(run_once_binary, log, out, env=ahead)
        assert done.returncode == 0, done.stderr
    assert any(dict(r)['reason'] in ('late', 'file_behind_watermark')
               for r in rows(out / 'quarantine')), \
        'the future folder moved the watermark past the real folders'
    (log / future / stray).rename(log / source[jump].name / stray)
    (log / future).rmdir()
    now = now_in(hour_of(source[9]))
    fresh = run_once(run_once_binary, log, out, rebuild=True, env=now,
                     params={'rebuild_from_log': 'true'})
    assert fresh.returncode == 0, fresh.stderr
    finish(run_once_binary, log, ref, env=now)
    same_result(out, ref)
    batches_applied_once(out)
    again = run_once(run_once_binary, log, out, rebuild=True, env=now)
    assert again.returncode == 0, again.stderr
    same_result(out, ref)


@pytest.fixture(scope='module')
def two_weeks(tmp_path_factory: pytest.TempPathFactory, generator: Path) -> Path:
    """Two weeks of log, one file an hour (tests copy it before they change it)."""
    log = tmp_path_factory.mktemp('two-weeks') / 'log'
    subprocess.run([str(generator), '--output', str(log), '--start-hour', '2026-04-01T00',
                    '--end-hour', '2026-04-15T00', '--meters', '6', '--seed', '8',
                    '--files-per-hour', '1', '--duplicate-rate', '0.05', '--offline-share',
                    '0.3'], check=True, capture_output=True)
    return log


def test_the_checkpoint_keeps_recent_folders_and_archives_the_rest(
        tmp_path: Path, two_weeks: Path, run_once_binary: Path, verify_binary: Path) -> None:
    """Two weeks of log taken twelve hours a run: `checkpoint.json` keeps the files of the
    folders a run may still list, the older ones move to its archive, and nothing is lost. A run
    that lists the whole log takes no archived file again, rebuilds carry the archive over, a
    file put into an archived folder is quarantined as too late and counted once, an archived
    file that changed is refused, and so is a checkpoint whose archive is missing."""
    log, out, ref = tmp_path / 'log', tmp_path / 'out', tmp_path / 'ref'
    shutil.copytree(two_weeks, log)
    on_disk = {f'{p.parent.name}/{p.name}': p.stat().st_size for p in log.glob('*/*.jsonl')}
    finish(run_once_binary, log, out, cap=12)
    finish(run_once_binary, log, ref)
    assert comparable(out) == comparable(ref)
    checkpoint = json.loads((out / '_checkpoint' / 'checkpoint.json').read_text())
    assert checkpoint['archive'] is not None
    assert committed_files(out) == on_disk, 'every file committed once, with its size'
    # What every run reads and writes: the folders from two days before the watermark's on.
    watermark = checkpoint['watermark_hour']
    assert all(hour_of_path(f) >= watermark - 48 for f in checkpoint['files'])
    assert len(checkpoint['files']) < len(on_disk) * 0.7, len(checkpoint['files'])
    assert len(list((out / '_checkpoint' / 'committed').iterdir())) == 1, 'replaced ones removed'

    # A run with nothing new lists the whole log: no archived file is taken again.
    before = state(out)
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 0 and 'no new files' in done.stdout, done.stdout + done.stderr
    assert state(out) == before

    # Rebuilds, replayed or planned afresh from the log, carry the archive over.
    kept = comparable(out)
    for params in ({}, {'rebuild_from_log': 'true'}):
        done = run_once(run_once_binary, log, out, rebuild=True, params=params)
        assert done.returncode == 0, done.stderr
        assert comparable(out) == kept, params
        assert len(list((out / '_checkpoint' / 'committed').iterdir())) == 1
    bills_tables = ('hourly_usage', 'cumulative_usage', 'monthly_bills')
    before = {table: rows(out / table) for table in bills_tables}

    # A file put into an archived folder is found and quarantined as too late, once.
    oldest = min(on_disk)
    folder = oldest.split('/')[0]
    add(log, folder.removeprefix(PREFIX), 'late.jsonl',
        reading('M000001', 'C000001', f'{folder.removeprefix(PREFIX)}:10:00Z', '3'))
    finish(run_once_binary, log, out)
    late = [dict(r) for r in rows(out / 'quarantine')
            if dict(r)['source_file'].endswith('late.jsonl')]
    assert [r['reason'] for r in late] == ['file_behind_watermark'], late
    for table in bills_tables:
        assert rows(out / table) == before[table], table
    assert committed_files(out) == on_disk | {f'{folder}/late.jsonl': (log / folder / 'late.jsonl')
                                              .stat().st_size}

    # An archived file that changed is refused, naming it.
    changed = log / oldest
    kept = changed.read_bytes()
    changed.write_bytes(kept + b'\n')
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 1 and f'{oldest} changed after it was committed' in done.stderr, \
        done.stderr
    changed.write_bytes(kept)

    # A checkpoint whose archive is missing is refused, naming it, before any write.
    archive = json.loads((out / '_checkpoint' / 'checkpoint.json').read_text())['archive']
    (out / '_checkpoint' / 'committed' / archive['name']).unlink()
    tables = versions(out)
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 1, done.stdout
    assert archive['name'] in done.stderr and 'missing' in done.stderr, done.stderr
    assert versions(out) == tables
    # ... and so is a batch whose checkpoint would extend it, before any table is written.
    later = datetime(1970, 1, 1) + timedelta(hours=max(map(hour_of_path, on_disk)) + 30)
    add(log, f'{later:%Y-%m-%dT%H}', 'new.jsonl',
        reading('M000001', 'C000001', f'{later:%Y-%m-%dT%H}:10:00Z', '3'))
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 1, done.stdout
    assert archive['name'] in done.stderr and 'missing' in done.stderr, done.stderr
    assert versions(out) == tables
    found = verified(verify_binary, out)
    assert found.returncode == 1 and archive['name'] in found.stdout, found.stdout + found.stderr


def test_a_crash_at_every_step_of_a_batch_that_archives(
        tmp_path: Path, two_weeks: Path, run_once_binary: Path) -> None:
    """Runs of 12 files up to the batch that would first archive; that batch (the rest of the
    log) crashed after each of its durable steps and rerun: the archive written before the
    checkpoint, the checkpoint, the removal after it. Every rerun ends where the uncrashed
    batch does."""
    base, before = tmp_path / 'base', tmp_path / 'before'
    while True:
        shutil.rmtree(before, ignore_errors=True)
        if base.exists():
            shutil.copytree(base, before)
        done = run_once(run_once_binary, two_weeks, base, cap=12)
        assert done.returncode == 0 and 'no new files' not in done.stdout, done.stderr
        if json.loads((base / '_checkpoint' / 'checkpoint.json').read_text()).get('archive'):
            break
    assert before.exists(), 'the first batch archived already'
    shutil.rmtree(base)
    shutil.copytree(before, base)
    finish(run_once_binary, two_weeks, base)
    reference = state(base)
    assert reference['checkpoint'] and (base / '_checkpoint' / 'committed').exists()

    def attempt(k: int, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        out = tmp_path / f'crash-{k}'
        if not out.exists():
            shutil.copytree(before, out)
        return run_once(run_once_binary, two_weeks, out, crash_at=crash_at)

    def state_of(k: int) -> dict[str, object]:
        return state_and_remove(tmp_path / f'crash-{k}')

    covered = crash_at_every_step(attempt, state_of, reference)
    for step in ('plan written', 'checkpoint archive written', 'checkpoint written'):
        assert step in covered, (step, covered)


@pytest.fixture(scope='session')
def verify_binary(build_env: dict[str, str]) -> Path:
    """The `verify` example: the read-only check of a set of tables."""
    return built('aquabill', 'verify')


def verified(binary: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), '-p', 'input_root', str(out.parent / 'log'),
                           '-p', 'output_root', str(out)],
                          capture_output=True, text=True, timeout=300)


def test_verify_names_what_disagrees(tmp_path: Path, generator: Path, run_once_binary: Path,
                                     verify_binary: Path) -> None:
    """Twelve days of log over a month's end (March closes): the check agrees; then each kind of
    damage to the tables is named, and the check writes nothing."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    subprocess.run([str(generator), '--output', str(log), '--start-hour', '2026-03-28T00',
                    '--end-hour', '2026-04-09T00', '--meters', '6', '--seed', '4',
                    '--files-per-hour', '1', '--duplicate-rate', '0.05', '--malformed-rate',
                    '0.02', '--offline-share', '0.3'], check=True, capture_output=True)
    finish(run_once_binary, log, out)
    before = versions(out)
    good = verified(verify_binary, out)
    assert good.returncode == 0, good.stdout + good.stderr
    for check in ('checkpoint and tables: agrees', 'accounting: agrees',
                  'running totals: agrees', 'bills: agrees'):
        assert check in good.stdout, good.stdout
    bills = rows(out / 'monthly_bills')
    assert bills and all(dict(b)['billing_month'] == '2026-03' for b in bills)
    assert versions(out) == before, 'the check wrote nothing'

    customer = dict(bills[0])['customer_id']
    cumulative = DeltaTable(str(out / 'cumulative_usage'))
    cumulative.update(updates={'cumulative_ml': 'cumulative_ml + 1'},
                      predicate=f"customer_id = '{customer}' AND usage_hour = '2026-03-30T05'")
    found = verified(verify_binary, out)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f'customer {customer}, hour 2026-03-30T05: running total' in found.stdout, found.stdout

    DeltaTable(str(out / 'monthly_bills')).update(
        updates={'total_ml': 'total_ml + 7'}, predicate=f"customer_id = '{customer}'")
    found = verified(verify_binary, out)
    assert f"customer {customer}'s bill for 2026-03 is" in found.stdout, found.stdout

    hour = next(r['usage_hour'] for r in map(dict, rows(out / 'hourly_usage'))
                if r['customer_id'] == customer and r['usage_ml'] > 0
                and r['usage_hour'] > '2026-04-02')
    DeltaTable(str(out / 'hourly_usage')).delete(
        predicate=f"customer_id = '{customer}' AND usage_hour = '{hour}'")
    found = verified(verify_binary, out)
    assert f'customer {customer}, hour {hour}: usage' in found.stdout, found.stdout

    first = dict(rows(out / 'quarantine')[0])['line_number']
    DeltaTable(str(out / 'quarantine')).delete(
        predicate=f'batch_id = 0 AND line_number = {first}')
    found = verified(verify_binary, out)
    assert 'batch 0 quarantined' in found.stdout, found.stdout

    shutil.rmtree(out / '_checkpoint' / 'dedup_keys')
    found = verified(verify_binary, out)
    assert '`dedup_keys` is missing' in found.stdout, found.stdout


def test_the_notebook_verifies_its_tables(tmp_path: Path, run_notebook: RunNotebook,
                                          kernel: nbexec.Kernel) -> None:
    """`pipeline.verify()` after the notebook's run agrees; after damage it stops the
    notebook, naming the disagreement."""
    out = tmp_path / 'out'
    run_notebook(input_root=str(ROOT / 'data' / 'sample'), output_root=str(out))
    agreed = kernel.execute('pipeline.verify()')
    assert 'running totals: agrees' in agreed.text and 'bills: agrees' in agreed.text, \
        agreed.text
    hour = rows(out / 'cumulative_usage')[-1]
    customer, usage_hour = dict(hour)['customer_id'], dict(hour)['usage_hour']
    DeltaTable(str(out / 'cumulative_usage')).update(
        updates={'cumulative_ml': 'cumulative_ml + 1'},
        predicate=f"customer_id = '{customer}' AND usage_hour = '{usage_hour}'")
    with pytest.raises(nbexec.CellError, match=f'customer {customer}, hour {usage_hour}'):
        kernel.execute('pipeline.verify()')
