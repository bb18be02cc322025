"""The log and the tables on object storage (`s3://`, on the local S3 server of `tests/s3.py`):
the same tables as on local disk, read back from S3 by the readers users have, through a crash
at every durable step, concurrent runs, and storage faults. Runs go through `run_once` (one run
per process) and, once, through the notebook."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

from aquabill_tools import nbexec
from s3server import REGION, Fault, S3Server
from conftest import NOTEBOOK, KernelFactory
from readers import duckdb_on_s3, duckdb_with_delta
from helpers import (TABLES, TIMING, assert_every_kind_of_step, batches_applied_once,
                     crash_at_every_step, crashed, finish, generate_log, rows, run_once, state)


@pytest.fixture(scope='module')
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def log(tmp_path_factory: pytest.TempPathFactory, generator: Path) -> Path:
    return generate_log(generator, tmp_path_factory.mktemp('log') / 'log')


@pytest.fixture(scope='module')
def reference(tmp_path_factory: pytest.TempPathFactory, run_once_binary: Path,
              log: Path) -> Path:
    """The tables of runs of 20 files on local disk."""
    out = tmp_path_factory.mktemp('reference') / 'out'
    finish(run_once_binary, log, out, cap=20)
    return out


@pytest.fixture(scope='module')
def s3_log(s3: S3Server, log: Path) -> str:
    """The log, uploaded to a bucket of its own."""
    return s3.upload(log, s3.new_bucket(), 'usage-log')


_targets = itertools.count()


@pytest.fixture
def tables(s3: S3Server) -> str:
    """An empty `s3://` folder for a test's tables, in a bucket of its own."""
    return f's3://{s3.new_bucket()}/billing/tables-{next(_targets)}'


def bucket_and_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix('s3://').partition('/')
    return bucket, prefix


def copied(s3: S3Server, url: str, local: Path) -> dict[str, object]:
    """The state of the tables at `url` (copied to `local`), each batch applied once."""
    bucket, prefix = bucket_and_prefix(url)
    s3.download(bucket, prefix, local)
    batches_applied_once(local)
    return state(local)


def test_runs_on_s3_make_the_tables_local_runs_make(
        s3: S3Server, s3_log: str, tables: str, reference: Path, run_once_binary: Path,
        tmp_path: Path) -> None:
    finish(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert copied(s3, tables, tmp_path / 'copy') == state(reference)

    # Every reader reads the tables where they are, with the S3 settings as options.
    options = s3.storage_options
    duck = duckdb_on_s3(s3.endpoint, REGION, s3.env['AWS_SECRET_ACCESS_KEY'])
    local_duck = duckdb_with_delta()
    for table in TABLES:
        expected = comparable(DeltaTable(str(reference / table)).to_pyarrow_table().to_pylist())
        url = f'{tables}/{table}'
        on_s3 = DeltaTable(url, storage_options=options).to_pyarrow_table().to_pylist()
        assert comparable(on_s3) == expected, table
        assert comparable(pl.read_delta(url, storage_options=options).to_dicts()) == \
            comparable(pl.read_delta(str(reference / table)).to_dicts()), table
        assert comparable(duckdb_rows(duck, url)) == \
            comparable(duckdb_rows(local_duck, str(reference / table))), table


def comparable(dicts: list[dict]) -> list[tuple]:
    """Rows as sorted tuples, without the run times that differ between two runs."""
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in TIMING)) for r in dicts)


def duckdb_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[dict]:
    rel = con.execute(f"select * from delta_scan('{table}')")
    columns = [d[0] for d in rel.description]
    return [dict(zip(columns, row)) for row in rel.fetchall()]


@pytest.fixture
def slow_s3() -> Iterator[S3Server]:
    """A server of its own whose every request takes 20 ms, as on S3."""
    server = S3Server(latency_ms=20)
    yield server
    server.stop()


def test_at_s3_latency_runs_keep_many_requests_in_flight(
        slow_s3: S3Server, log: Path, reference: Path, run_once_binary: Path,
        tmp_path: Path) -> None:
    tables = f's3://{slow_s3.new_bucket()}/tables'
    finish(run_once_binary, log, tables, cap=20, env=slow_s3.env)
    data_files = [flying for (method, path, _), flying
                  in zip(slow_s3.requests, slow_s3.in_flight())
                  if method == 'PUT' and path.endswith('.parquet')]
    # Data files upload many at a time (a writer thread each would keep 2 in flight).
    assert len(data_files) > 100 and max(data_files) >= 8, max(data_files, default=0)
    slow_s3.latency_ms = 0  # (the copy below is the test's, one object at a time)
    assert copied(slow_s3, tables, tmp_path / 'copy') == state(reference)


def test_a_run_lists_the_log_from_the_watermark_on_and_whole_when_idle(
        s3: S3Server, s3_log: str, tables: str, run_once_binary: Path) -> None:
    finish(run_once_binary, s3_log, tables, env=s3.env)
    s3.forget_requests()
    idle = run_once(run_once_binary, s3_log, tables, env=s3.env)
    assert idle.returncode == 0 and 'no new files' in idle.stdout, idle.stderr
    log_bucket, log_prefix = bucket_and_prefix(s3_log)
    listings = [q for method, path, q in s3.requests
                if method == 'GET' and path.strip('/') == log_bucket and 'list-type=2' in q]
    # The last ingestion hour is 2026-04-01T11 (the generator's end hour is not included), so
    # the watermark is 2026-03-25T11: the listing starts at its folder; finding nothing new
    # there, the run lists the log whole once (a file put into an older folder is found).
    starts = ['start-after=usage-log%2Fingest_hour%3D2026-03-25T11' in q for q in listings]
    assert starts and starts[0] and not starts[-1], listings
    assert starts == sorted(starts, reverse=True), 'from the watermark first, then whole'


def test_the_notebook_runs_on_s3(s3: S3Server, s3_log: str, tables: str, log: Path,
                                 run_once_binary: Path, kernel_factory: KernelFactory,
                                 tmp_path: Path) -> None:
    ref = tmp_path / 'ref'
    finish(run_once_binary, log, ref)
    params = {'input_root': s3_log, 'output_root': tables}
    with kernel_factory(s3.env) as kernel:
        nb = nbexec.with_parameters(nbexec.load_notebook(NOTEBOOK), params)
        results = nbexec.run_notebook(nb, kernel, tmp_path / 'executed.ipynb')
    shown = '\n'.join(r.text for r in results)
    assert tables in shown and s3.env['AWS_SECRET_ACCESS_KEY'] not in shown, shown
    assert copied(s3, tables, tmp_path / 'copy') == state(ref)


def test_crash_at_every_durable_step_on_s3(s3: S3Server, s3_log: str, log: Path,
                                           run_once_binary: Path, tmp_path: Path) -> None:
    # The log in one batch (each crash and rerun goes through the S3 server, about 5 s a run;
    # `test_faults.py` crashes later batches too, on local disk).
    reference = tmp_path / 'reference'
    finish(run_once_binary, log, reference)
    bucket = s3.new_bucket()

    def attempt(k: int, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        return run_once(run_once_binary, s3_log, f's3://{bucket}/crash-{k}',
                        crash_at=crash_at, env=s3.env)

    def state_of(k: int) -> dict[str, object]:
        return copied(s3, f's3://{bucket}/crash-{k}', tmp_path / f'crash-{k}')

    # A crashed run leaves its lock object behind; the next run on this host takes it over
    # at once (its holder's process is gone), so every rerun below starts without waiting.
    covered = crash_at_every_step(attempt, state_of, state(reference))
    assert_every_kind_of_step(covered)


def lock_object(holder_host: str, expires_in_s: int) -> bytes:
    return json.dumps({'holder': f'pid 1 on {holder_host} since 2026-12-01T00:00:00Z',
                       'host': holder_host, 'pid': 1,
                       'expires_unix': int(time.time()) + expires_in_s}).encode()


def test_one_run_at_a_time_on_s3(s3: S3Server, s3_log: str, tables: str, log: Path,
                                 run_once_binary: Path, tmp_path: Path) -> None:
    ref = tmp_path / 'ref'
    finish(run_once_binary, log, ref)
    args = [str(run_once_binary), '-p', 'input_root', s3_log, '-p', 'output_root', tables]
    env = dict(os.environ) | s3.env
    # The first run stalls for 3 s right after writing its plan, holding the lock; the second
    # starts in that window and must be refused, changing nothing.
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env | {'AQUABILL_STALL_AT': '1:3000'})
    assert first.stderr is not None
    stalled = first.stderr.readline()
    assert 'stalling 3000 ms after durable step 1: plan written' in stalled, stalled
    second = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 3, second.stderr
    assert 'another run is working on these tables' in second.stderr and 'pid' in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()

    # A lock held by a run on another machine is respected until its lease expires, then
    # taken over.
    bucket, prefix = bucket_and_prefix(tables)
    lock = f'{prefix}/_checkpoint/run.lock'
    s3.client.put_object(Bucket=bucket, Key=lock, Body=lock_object('elsewhere', 600))
    held = run_once(run_once_binary, s3_log, tables, env=s3.env)
    assert held.returncode == 3 and 'pid 1 on elsewhere' in held.stderr, held.stderr
    s3.client.put_object(Bucket=bucket, Key=lock, Body=lock_object('elsewhere', -1))
    finish(run_once_binary, s3_log, tables, env=s3.env)
    assert lock_holder(s3, tables)['released'] is True, 'a finished run releases its lock'
    assert copied(s3, tables, tmp_path / 'copy') == state(ref)

    # Two started together never both commit a batch.
    together = f'{tables}-together'
    both = [subprocess.Popen([*args[:-1], together], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in both)
    assert codes in ([0, 0], [0, 3]), codes
    finish(run_once_binary, s3_log, together, env=s3.env)
    assert copied(s3, together, tmp_path / 'together') == state(ref)


def lock_holder(s3: S3Server, tables: str) -> dict:
    bucket, prefix = bucket_and_prefix(tables)
    got = s3.client.get_object(Bucket=bucket, Key=f'{prefix}/_checkpoint/run.lock')
    return json.loads(got['Body'].read())


def finishes_exactly(s3: S3Server, s3_log: str, tables: str, log: Path, binary: Path,
                     tmp_path: Path) -> None:
    """Runs until no new files are left; the tables then equal those of unbroken local runs."""
    finish(binary, s3_log, tables, env=s3.env)
    ref = tmp_path / 'ref'
    finish(binary, log, ref)
    assert copied(s3, tables, tmp_path / 'copy') == state(ref)


def stalled_run(args: list[str], env: dict[str, str], ms: int) -> subprocess.Popen[str]:
    """A run that stalls `ms` milliseconds right after writing its plan (holding the lock)."""
    run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env | {'AQUABILL_STALL_AT': f'1:{ms}'})
    assert run.stderr is not None
    stalled = run.stderr.readline()
    assert f'stalling {ms} ms after durable step 1: plan written' in stalled, stalled
    return run


def test_a_working_run_renews_its_lease(s3: S3Server, s3_log: str, tables: str,
                                       run_once_binary: Path) -> None:
    args = [str(run_once_binary), '-p', 'input_root', s3_log, '-p', 'output_root', tables]
    env = dict(os.environ) | s3.env | {'AQUABILL_LOCK_LEASE_SECONDS': '2'}
    first = stalled_run(args, env, 7000)
    time.sleep(4.5)  # more than two leases
    second = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 3, second.stderr
    assert 'another run is working on these tables' in second.stderr
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    assert lock_holder(s3, tables)['released'] is True


def test_a_run_whose_lock_was_taken_over_stops_before_its_checkpoint(
        s3: S3Server, s3_log: str, tables: str, log: Path, run_once_binary: Path,
        tmp_path: Path) -> None:
    args = [str(run_once_binary), '-p', 'input_root', s3_log, '-p', 'output_root', tables]
    env = dict(os.environ) | s3.env | {'AQUABILL_LOCK_LEASE_SECONDS': '2'}
    first = stalled_run(args, env, 4000)
    # Another run takes the lock over meanwhile (as once a lease lapsed).
    bucket, prefix = bucket_and_prefix(tables)
    lock = f'{prefix}/_checkpoint/run.lock'
    s3.client.put_object(Bucket=bucket, Key=lock, Body=lock_object('elsewhere', 600))
    _, err = first.communicate(timeout=300)
    assert first.returncode == 1, err
    assert 'another run changed the run lock' in err, err
    assert f'{prefix}/_checkpoint/checkpoint.json' not in s3.keys(bucket, prefix)
    # The successor's lock is left as it is: neither deleted nor marked released.
    assert lock_holder(s3, tables)['holder'] == 'pid 1 on elsewhere since 2026-12-01T00:00:00Z'
    assert not lock_holder(s3, tables).get('released')
    # Once the successor is gone, the next run finishes the batch exactly.
    s3.client.put_object(Bucket=bucket, Key=lock, Body=lock_object('elsewhere', -1))
    finishes_exactly(s3, s3_log, tables, log, run_once_binary, tmp_path)


def test_a_run_whose_renewals_fail_for_a_lease_stops_before_its_checkpoint(
        s3: S3Server, s3_log: str, tables: str, log: Path, run_once_binary: Path,
        tmp_path: Path) -> None:
    """The store refuses every write of the lock for longer than a lease (as if it were
    unreachable): another run may hold the lock by then, so the run stops before its
    checkpoint; once the store answers again, the next run finishes the batch."""
    args = [str(run_once_binary), '-p', 'input_root', s3_log, '-p', 'output_root', tables]
    env = dict(os.environ) | s3.env | {'AQUABILL_LOCK_LEASE_SECONDS': '2'}
    fault = Fault(lambda r: r[0] == 'PUT' and r[1].endswith('/run.lock'), 403, 'AccessDenied')
    first = stalled_run(args, env, 4000)
    with s3.failing(fault):
        _, err = first.communicate(timeout=300)
    assert fault.hits >= 2, fault.hits
    assert first.returncode == 1, err
    assert 'another run changed the run lock' in err and 'lapsed' in err, err
    bucket, prefix = bucket_and_prefix(tables)
    assert f'{prefix}/_checkpoint/checkpoint.json' not in s3.keys(bucket, prefix)
    time.sleep(2.5)  # the lease the refused renewals could not extend
    finishes_exactly(s3, s3_log, tables, log, run_once_binary, tmp_path)


def test_the_checkpoint_is_replaced_only_if_unchanged(
        s3: S3Server, s3_log: str, tables: str, log: Path, run_once_binary: Path,
        tmp_path: Path) -> None:
    args = [str(run_once_binary), '-p', 'input_root', s3_log, '-p', 'output_root', tables]
    env = dict(os.environ) | s3.env
    first = stalled_run(args, env, 3000)
    # Another writer creates the checkpoint while the run works (two runs overlapping).
    bucket, prefix = bucket_and_prefix(tables)
    other = {'format': 2, 'next_batch': 0, 'watermark_hour': None, 'latest_ingest_hour': None,
             'files': {}}
    s3.client.put_object(Bucket=bucket, Key=f'{prefix}/_checkpoint/checkpoint.json',
                         Body=json.dumps(other).encode())
    _, err = first.communicate(timeout=300)
    assert first.returncode == 1, err
    assert 'another run changed the checkpoint' in err, err
    got = s3.client.get_object(Bucket=bucket, Key=f'{prefix}/_checkpoint/checkpoint.json')
    assert json.loads(got['Body'].read()) == other, 'the other writer was not overwritten'
    finishes_exactly(s3, s3_log, tables, log, run_once_binary, tmp_path)


def test_a_lock_of_another_machine_with_this_host_name_is_respected(
        s3: S3Server, s3_log: str, tables: str, run_once_binary: Path) -> None:
    """Containers can share a host name and reuse process ids: a lock whose holder's process
    id does not exist here, written on another machine under this host's name, is respected
    until its lease expires."""
    host = Path('/etc/hostname').read_text().strip() if Path('/etc/hostname').exists() else ''
    bucket, prefix = bucket_and_prefix(tables)
    body = {'holder': f'pid 4194300 on {host} since 2026-12-01T00:00:00Z', 'host': host,
            'pid': 4194300, 'expires_unix': int(time.time()) + 600, 'token': 'theirs',
            'machine': 'another-boot-id pid:[4026531836]'}
    assert not Path('/proc/4194300').exists()
    s3.client.put_object(Bucket=bucket, Key=f'{prefix}/_checkpoint/run.lock',
                         Body=json.dumps(body).encode())
    held = run_once(run_once_binary, s3_log, tables, env=s3.env)
    assert held.returncode == 3 and 'pid 4194300' in held.stderr, held.stderr


def test_transient_store_errors_are_retried(s3: S3Server, s3_log: str, tables: str,
                                            reference: Path, run_once_binary: Path,
                                            tmp_path: Path) -> None:
    # Every fourth request is refused as S3 does under load (503 SlowDown).
    count = itertools.count(1)
    fault = Fault(lambda _: next(count) % 4 == 0, 503, 'SlowDown')
    with s3.failing(fault):
        finish(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert fault.hits > 50, fault.hits
    assert copied(s3, tables, tmp_path / 'copy') == state(reference)


def test_a_write_that_fails_half_way_commits_nothing(s3: S3Server, s3_log: str, tables: str,
                                                     reference: Path, run_once_binary: Path,
                                                     tmp_path: Path) -> None:
    # The store refuses the data files of cumulative_usage (after hourly_usage committed).
    fault = Fault(lambda r: r[0] == 'PUT' and '/cumulative_usage/' in r[1]
                  and r[1].endswith('.parquet'), 403, 'AccessDenied')
    with s3.failing(fault):
        failed = run_once(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert failed.returncode != 0 and fault.hits >= 1
    assert 'cumulative_usage' in failed.stderr and 'AccessDenied' in failed.stderr, failed.stderr
    bucket, prefix = bucket_and_prefix(tables)
    commits = [k for k in s3.keys(bucket, f'{prefix}/cumulative_usage/_delta_log/')
               if k.endswith('.json')]
    assert commits == [f'{prefix}/cumulative_usage/_delta_log/00000000000000000000.json'], \
        'only the table was created; no data was committed'
    finish(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert copied(s3, tables, tmp_path / 'copy') == state(reference)


@pytest.mark.parametrize('damaged', ['checkpoint.json', 'batches/000000001.json'])
def test_a_damaged_state_file_is_refused_by_name(s3: S3Server, s3_log: str, tables: str,
                                                 reference: Path, run_once_binary: Path,
                                                 tmp_path: Path, damaged: str) -> None:
    # One batch committed, the next planned (a crash right after writing its plan).
    assert run_once(run_once_binary, s3_log, tables, cap=20, env=s3.env).returncode == 0
    planned = run_once(run_once_binary, s3_log, tables, cap=20, crash_at=1, env=s3.env)
    assert crashed(planned) == 'plan written'
    bucket, prefix = bucket_and_prefix(tables)
    key = f'{prefix}/_checkpoint/{damaged}'
    intact = s3.client.get_object(Bucket=bucket, Key=key)['Body'].read()
    s3.client.put_object(Bucket=bucket, Key=key, Body=intact[:len(intact) // 2])
    refused = run_once(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert refused.returncode != 0
    assert f'{tables}/_checkpoint/{damaged}' in refused.stderr, refused.stderr
    assert 'restore the file' in refused.stderr, refused.stderr
    # Nothing was changed: with the file restored the runs finish exactly.
    s3.client.put_object(Bucket=bucket, Key=key, Body=intact)
    finish(run_once_binary, s3_log, tables, cap=20, env=s3.env)
    assert copied(s3, tables, tmp_path / 'copy') == state(reference)


def test_local_and_s3_tables_hold_the_same_rows(s3: S3Server, s3_log: str, tables: str,
                                                reference: Path, run_once_binary: Path) -> None:
    # The log on S3, the tables on local disk: the two mix.
    local = reference.parent / 'from-s3-log'
    finish(run_once_binary, s3_log, local, cap=20, env=s3.env)
    for table in TABLES:
        assert rows(local / table, TIMING) == rows(reference / table, TIMING), table


FULL_DISK = r'''
set -eu
mount -t tmpfs -o size=64m aquabill-full-disk "$MNT"
run() { "$BIN" -p input_root "$LOG" -p output_root "$MNT/out" -p batch_cap 20 "$@"; }
run > "$OUT/first.out" 2> "$OUT/first.err"
cp -a "$MNT/out" "$OUT/before"
# The run stalls after writing its plan; the disk fills up in that window, so the next write,
# a data file, finds no space.
AQUABILL_STALL_AT=1:3000 run > "$OUT/full.out" 2> "$OUT/full.err" &
for _ in $(seq 600); do grep -q stalling "$OUT/full.err" && break; sleep 0.1; done
cat /dev/zero > "$MNT/filler" 2> /dev/null || true
rc=0; wait $! || rc=$?; echo "$rc" > "$OUT/full.rc"
cp -a "$MNT/out" "$OUT/after-full"
rm "$MNT/filler"
for _ in $(seq 100); do
  run > "$OUT/next.out" 2> "$OUT/next.err"
  grep -q 'no new files' "$OUT/next.out" && break
done
cp -a "$MNT/out" "$OUT/final"
'''


def delta_logs(out: Path) -> dict[str, list[str]]:
    return {str(log.parent.relative_to(out)): sorted(p.name for p in log.iterdir())
            for log in out.rglob('_delta_log')}


def test_a_full_disk_during_a_data_file_write_commits_nothing(
        log: Path, reference: Path, run_once_binary: Path, tmp_path: Path) -> None:
    # The tables on a 64 MB file system of their own: a tmpfs mounted in a private mount
    # namespace (`unshare`, from util-linux; root, or user namespaces, needed), so nothing
    # outside the test sees it.
    mnt, out = tmp_path / 'mnt', tmp_path / 'out'
    mnt.mkdir()
    out.mkdir()
    env = dict(os.environ) | {'MNT': str(mnt), 'OUT': str(out), 'LOG': str(log),
                              'BIN': str(run_once_binary)}
    env.pop('AQUABILL_CRASH_AT', None)
    done = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'bash', '-c',
                           FULL_DISK], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    full_err = (out / 'full.err').read_text()
    assert (out / 'full.rc').read_text().strip() != '0', full_err
    assert 'stalling 3000 ms after durable step 1: plan written' in full_err, full_err
    assert 'No space left on device' in full_err, full_err
    assert f'writing a data file of table `hourly_usage` under {mnt}/out/hourly_usage' in \
        full_err, full_err
    assert 'Nothing was committed' in full_err and 'free disk space' in full_err, full_err
    assert 'panicked' not in full_err, 'a full disk is an error, not a crash'
    # Nothing was committed: every table's log and the checkpoint are as before the run.
    assert delta_logs(out / 'after-full') == delta_logs(out / 'before')
    assert (out / 'after-full' / '_checkpoint' / 'checkpoint.json').read_bytes() == \
        (out / 'before' / '_checkpoint' / 'checkpoint.json').read_bytes()
    # With space freed, the runs finish exactly.
    batches_applied_once(out / 'final')
    assert state(out / 'final') == state(reference)
