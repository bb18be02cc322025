"""The hourly run at utility scale, with a week of history, against two reference points.

Generates a usage log with the project's generator (default 100,000 meters reading every 5
minutes, 1.5% duplicates, 2% of meters a week replaying outages of up to 160 hours), processes a
week of it hour by hour as the schedule would (the history: realistic tables and dedup state),
then measures:

- the last hour of a billing month and the first hour of the next (is the cost flat?), each
  through `examples/run_once` (the notebook's steps without a kernel), with records, wall time
  (the whole process: table opens, plan, commits), data time (wall minus a run with no new
  files), records per second, peak memory, time per step and per traced phase, dedup-state rows
  read and held, bytes read, Delta files and rows written; and, on the same hour's files, the
  anchor: DuckDB's stateless pass (`read_json` with the log's schema, first copy per meter and
  time, group by customer and hour, written to Parquet; best of 3 runs, each in its own
  process), and a bare single-threaded serde_json pass summing in hash maps
  (`examples/bare_pass`), as ratios of the run's wall time;
- the next hour as the schedule runs it: the notebook through `aquabill-papermill`, kernel start
  and compilation included, and the same with no new files (the notebook's fixed overhead);
- the history's hour-by-hour processing rate, extrapolated to a month's backfill.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/hourly_at_scale.py [--meters 100000]
        [--history-hours 168] [--month-end 2026-06-30T23] [--work DIR] [--run-once BINARY]
        [--no-notebook]

`--run-once` measures another build of `examples/run_once` on the same history (A/B: the
history is made, and kept, by the build the first invocation copied); `--no-notebook` skips the
two papermill runs.

About 170 MB of log per hour at the default scale (33 GB for the default week and a day) and
an hour or more on 2 cores, most of it generating and processing the history. With --work, the
log and the processed history are kept there and reused by the next invocation with the same
scale (the measured runs always start from a copy of the history); without it, everything goes to
a temporary folder removed at the end. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
from deltalake import DeltaTable

from aquabill_tools.env import built

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'hourly_billing.ipynb'
PAPERMILL = Path(sys.executable).parent / 'aquabill-papermill'
STEP = re.compile(r'(plan|parse|dedup|hourly_usage|cumulative_usage|finish) (\d+) ms')
PHASE = re.compile(r'^trace: (\S+(?: \S+)*?) (\d+) ms, rss', re.M)
FILES_PER_HOUR = 4
HOUR = '%Y-%m-%dT%H'


@dataclass
class Measured:
    """One measured run."""
    name: str
    records: int = 0
    input_mb: float = 0.0
    wall: float = 0.0
    peak_mb: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    phases: dict[str, int] = field(default_factory=dict)
    state_read: int = 0
    state_rows: int = 0
    files_written: int = 0
    rows_written: int = 0
    read_mb: float = 0.0
    duckdb: float = 0.0
    bare: float = 0.0


def copy_binaries(bin_dir: Path) -> dict[str, Path]:
    """The generator, run_once and bare_pass, copied so that later builds don't change a run."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    found = {'gen': built('aquabill-gen'), 'run_once': built('aquabill', 'run_once'),
             'bare_pass': built('aquabill', 'bare_pass')}
    copies = {}
    for name, path in found.items():
        copies[name] = bin_dir / name
        shutil.copy2(path, copies[name])
    return copies


def copy_final_days(log: Path, hist: Path) -> None:
    """Every final day of the history's customer tables copied to their day tables, as the
    runs of the next days would (a few a run): a history made before the day tables existed
    gets them, so that a measured run copies only the days its own watermark passes, as in a
    deployment running this version all along. Nothing when they are current."""
    done = subprocess.run([str(built('aquabill', 'month_views')), '-p', 'input_root', str(log),
                           '-p', 'output_root', str(hist), '--copy-days'],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'copying the final days failed:\n{done.stderr}')
    print(f'history: {done.stdout.splitlines()[0]}', flush=True)


def generate(gen: Path, log: Path, first: datetime, end: datetime, meters: int,
             outages_from: datetime | None = None) -> Path:
    """The log for ingestion hours [first, end), in two halves at once (one per core): calls
    over adjacent windows deliver each record once. An existing log of the same scale that
    covers the hours is reused. Returns a folder holding exactly the hour folders of [first,
    end) (links into the log), the runs' input."""
    marker = log.parent / 'log.json'
    wanted = {'first': first.strftime(HOUR), 'end': end.strftime(HOUR), 'meters': meters,
              'outages_from': outages_from and outages_from.strftime(HOUR)}
    if marker.exists():
        have = json.loads(marker.read_text())
        if (have['meters'] == meters and have['first'] <= wanted['first']
                and have['end'] >= wanted['end']
                and have.get('outages_from') == wanted['outages_from']):
            print(f'log: reusing {log}')
            return log_view(log, first, end)
    shutil.rmtree(log, ignore_errors=True)
    log.mkdir(parents=True)
    began = time.monotonic()
    middle = first + (end - first) // 2
    middle = middle.replace(minute=0, second=0, microsecond=0)
    procs = [subprocess.Popen([str(gen), '--output', str(log), '--start-hour', a.strftime(HOUR),
                               '--end-hour', b.strftime(HOUR), '--meters', str(meters),
                               '--interval-minutes', '5', '--duplicate-rate', '0.015',
                               '--offline-share', '0.02', '--files-per-hour',
                               str(FILES_PER_HOUR), '--seed', '1',
                               *(['--outages-from', outages_from.strftime(HOUR)]
                                 if outages_from else [])], stdout=subprocess.DEVNULL)
             for a, b in ((first, middle), (middle, end))]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit('the generator failed')
    marker.write_text(json.dumps(wanted))
    size = sum(f.stat().st_size for f in log.rglob('*.jsonl')) / 1e9
    print(f'log: {(end - first) // timedelta(hours=1)} hours, {size:.1f} GB generated in '
          f'{time.monotonic() - began:.0f} s')
    return log_view(log, first, end)


def log_view(log: Path, first: datetime, end: datetime) -> Path:
    """A folder of links to the log's hour folders in [first, end)."""
    view = log.parent / f'log-{first.strftime(HOUR)}-{end.strftime(HOUR)}'
    if not view.exists():
        view.mkdir()
        hour = first
        while hour < end:
            (view / f'ingest_hour={hour.strftime(HOUR)}').symlink_to(
                log / f'ingest_hour={hour.strftime(HOUR)}', target_is_directory=True)
            hour += timedelta(hours=1)
    return view


def run_once(binary: Path, log: Path, out: Path, traced: bool = False) -> tuple[float, int, str]:
    """One hourly run (one ingestion hour's files): wall seconds, peak RSS MB, its report (with
    the `AQUABILL_TRACE` phases after it when `traced`)."""
    env = dict(os.environ, AQUABILL_TRACE='1') if traced else None
    began = time.monotonic()
    done = subprocess.run(['/usr/bin/time', '-f', '%M', str(binary), '-p', 'input_root', str(log),
                           '-p', 'output_root', str(out), '-p', 'batch_cap', str(FILES_PER_HOUR)],
                          capture_output=True, text=True, env=env)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'run_once failed:\n{done.stdout}\n{done.stderr}')
    trace = done.stderr if traced else ''
    return wall, int(done.stderr.strip().splitlines()[-1]) // 1024, done.stdout + trace


def history(binary: Path, log: Path, out: Path, hours: int, key: dict[str, object]) -> float:
    """Processes the first `hours` ingestion hours one run each; returns seconds per hour."""
    marker = out.parent / 'history.json'
    if marker.exists() and json.loads(marker.read_text()).get('key') == key:
        per_hour = json.loads(marker.read_text())['seconds_per_hour']
        print(f'history: reusing {out} ({per_hour:.1f} s per hourly run when made)')
        return per_hour
    shutil.rmtree(out, ignore_errors=True)
    began = time.monotonic()
    slowest, peak = 0.0, 0
    for i in range(hours):
        wall, mb, _ = run_once(binary, log, out)
        slowest, peak = max(slowest, wall), max(peak, mb)
        if (i + 1) % 24 == 0 or i + 1 == hours:
            spent = time.monotonic() - began
            print(f'history: {i + 1}/{hours} hourly runs, {spent / (i + 1):.1f} s per run, '
                  f'slowest {slowest:.1f} s, peak {peak} MB', flush=True)
    per_hour = (time.monotonic() - began) / hours
    marker.write_text(json.dumps({'key': key, 'seconds_per_hour': per_hour}))
    return per_hour


def parquet_files(out: Path) -> set[Path]:
    return set(out.rglob('*.parquet'))


def log_version(table: Path) -> int:
    """The latest version in a table's Delta log."""
    return max(int(p.stem) for p in (table / '_delta_log').glob('*.json'))


def rows_added(table: Path, after: int) -> int:
    """Rows in the data files the commits after version `after` added: what a run (re)wrote."""
    rows = 0
    for commit in (table / '_delta_log').glob('*.json'):
        if int(commit.stem) <= after:
            continue
        for line in commit.read_text().splitlines():
            add = json.loads(line).get('add')
            if add and add.get('stats'):
                rows += json.loads(add['stats'])['numRecords']
    return rows


OUTPUT_TABLES = ('hourly_usage', 'cumulative_usage')


def state_rows(out: Path) -> int:
    table = DeltaTable(str(out / '_checkpoint' / 'dedup_readings'))
    return int(sum(table.get_add_actions(flatten=True).column('num_records').to_pylist()))


ANCHOR = """
COPY (
  SELECT customer_id, date_trunc('hour', recorded_at) AS usage_hour,
         sum(CAST(round(usage_liters * 1000) AS BIGINT)) AS usage_ml,
         count(*) AS reading_count, count(DISTINCT meter_id) AS meter_count
  FROM (SELECT DISTINCT ON (meter_id, recorded_at) *
        FROM read_json('{folder}/*.jsonl', format='newline_delimited',
             columns={{'meter_id':'VARCHAR','customer_id':'VARCHAR','recorded_at':'TIMESTAMPTZ',
                       'usage_liters':'DECIMAL(12,3)','ingested_at':'TIMESTAMPTZ'}}))
  GROUP BY ALL
) TO '{out}' (FORMAT parquet)
"""


def duckdb_once(folder: Path) -> float:
    """One anchor run in this process: seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        con = duckdb.connect()
        con.execute(ANCHOR.format(folder=folder, out=Path(tmp) / 'out.parquet'))
        con.close()
        return time.monotonic() - began


def duckdb_pass(folder: Path, runs: int = 3) -> float:
    """The anchor: DuckDB's stateless pass over the hour's files, best of `runs`, each in a
    fresh process (no warm engine state carried over)."""
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, '--duckdb-once', str(folder)],
                             capture_output=True, text=True, check=True).stdout
        times.append(float(out.strip()))
    return min(times)


def bare_pass(binary: Path, folder: Path) -> float:
    began = time.monotonic()
    subprocess.run([str(binary), *map(str, sorted(folder.glob('*.jsonl')))], check=True,
                   capture_output=True)
    return time.monotonic() - began


def measure(name: str, bins: dict[str, Path], log: Path, out: Path, hour: datetime) -> Measured:
    folder = log / f'ingest_hour={hour.strftime(HOUR)}'
    before = parquet_files(out)
    versions = {t: log_version(out / t) for t in OUTPUT_TABLES}
    m = Measured(name)
    m.wall, m.peak_mb, text = run_once(bins['run_once'], log, out, traced=True)
    m.files_written = len(parquet_files(out) - before)
    m.rows_written = sum(rows_added(out / t, v) for t, v in versions.items())
    m.records = int(re.search(r'(\d+) lines', text).group(1))
    m.input_mb = sum(f.stat().st_size for f in folder.glob('*.jsonl')) / 1e6
    m.steps = {s: int(ms) for s, ms in STEP.findall(text)}
    m.phases = {name: int(ms) for name, ms in PHASE.findall(text)}
    m.state_read = int(re.search(r'dedup state rows read (\d+)', text).group(1))
    m.read_mb = int(re.search(r'io: read (\d+) bytes', text).group(1)) / 1e6
    m.state_rows = state_rows(out)
    m.duckdb = duckdb_pass(folder)
    m.bare = bare_pass(bins['bare_pass'], folder)
    return m


def papermill(log: Path, out: Path, executed: Path) -> float:
    began = time.monotonic()
    subprocess.run([str(PAPERMILL), str(NOTEBOOK), str(executed), '-p', 'input_root', str(log),
                    '-p', 'output_root', str(out), '-p', 'batch_cap', str(FILES_PER_HOUR)],
                   check=True, capture_output=True)
    return time.monotonic() - began


def cell_times(executed: Path) -> str:
    """Seconds per code cell of an executed notebook (papermill's own timing), by first line."""
    cells = json.loads(executed.read_text())['cells']
    parts = []
    for cell in cells:
        duration = cell.get('metadata', {}).get('papermill', {}).get('duration')
        if cell['cell_type'] == 'code' and duration is not None:
            first = ''.join(cell['source']).strip().splitlines()[0][:32]
            parts.append(f'{first!r} {duration:.1f}')
    return ', '.join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--history-hours', type=int, default=168,
                        help='hourly runs before the measured ones (default a week)')
    parser.add_argument('--month-end', default='2026-06-30T23',
                        help='last hour of a billing month (UTC): the first measured run')
    parser.add_argument('--work', type=Path, help='keep and reuse the log and history here')
    parser.add_argument('--run-once', type=Path,
                        help='measure this build of examples/run_once on the same history')
    parser.add_argument('--no-notebook', action='store_true',
                        help='skip the scheduled runs through papermill')
    parser.add_argument('--fleet-starts-with-history', action='store_true',
                        help='no outage under way at the history\'s first hour (every meter that '
                             'replays is known to the tables: the steady state of a short history)')
    parser.add_argument('--duckdb-once', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.duckdb_once:
        print(f'{duckdb_once(args.duckdb_once):.3f}')
        return
    work = args.work or Path(tempfile.mkdtemp(prefix='aquabill-scale-'))
    work.mkdir(parents=True, exist_ok=True)
    month_end = datetime.strptime(args.month_end, HOUR)
    first = month_end - timedelta(hours=args.history_hours)
    log, hist, out = work / 'log', work / 'history', work / 'run'
    print(f'{args.meters} meters; history {first.strftime(HOUR)} + {args.history_hours} hours; '
          f'measured from {args.month_end}; work folder {work}', flush=True)
    try:
        bins = copy_binaries(work / 'bin')
        log = generate(bins['gen'], log, first, month_end + timedelta(hours=3), args.meters,
                       first if args.fleet_starts_with_history else None)
        key = {'meters': args.meters, 'first': first.strftime(HOUR),
               'hours': args.history_hours, 'fleet_starts': args.fleet_starts_with_history}
        per_hour = history(bins['run_once'], log, hist, args.history_hours, key)
        copy_final_days(log, hist)
        shutil.rmtree(out, ignore_errors=True)
        # Hard links: Delta data and log files are never changed in place, only added and
        # deleted, so the measured runs leave the history as it was (and no disk is copied).
        shutil.copytree(hist, out, copy_function=os.link)
        if args.run_once:
            bins['run_once'] = args.run_once
            print(f'measuring {args.run_once}', flush=True)
        runs = [measure('last hour of the month', bins, log, out, month_end),
                measure('first hour of the next', bins, log, out,
                        month_end + timedelta(hours=1))]
        executed = work / 'executed'
        scheduled = overhead = None
        if args.no_notebook:
            run_once(bins['run_once'], log, out)  # the next hour, so the run below has none
        else:
            scheduled = papermill(log, out, executed / 'next-hour.ipynb')
            overhead = papermill(log, out, executed / 'no-new-files.ipynb')
        idle, _, _ = run_once(bins['run_once'], log, out)
        report(runs, idle, scheduled, overhead, per_hour, args.history_hours)
        if not args.no_notebook:
            print(f'cells of the scheduled run (s): {cell_times(executed / "next-hour.ipynb")}')
            print(f'cells with no new files (s): {cell_times(executed / "no-new-files.ipynb")}')
    finally:
        if args.work is None:
            shutil.rmtree(work)


def report(runs: list[Measured], idle: float, scheduled: float | None,
           overhead: float | None, per_hour: float, history_hours: int) -> None:
    print()
    head = (f"{'run':<24} {'records':>9} {'in MB':>6} {'wall s':>6} {'data s':>6} "
            f"{'rec/s':>8} {'peak MB':>7} {'state read':>10} {'state rows':>10} "
            f"{'files':>5} {'rows written':>12} {'read MB':>7} {'anchor s':>8} {'bare s':>6} "
            f"{'x anchor':>8} {'x bare':>6}")
    print(head)
    for m in runs:
        data = m.wall - idle
        print(f'{m.name:<24} {m.records:>9} {m.input_mb:>6.0f} {m.wall:>6.2f} {data:>6.2f} '
              f'{m.records / data:>8.0f} {m.peak_mb:>7} {m.state_read:>10} {m.state_rows:>10} '
              f'{m.files_written:>5} {m.rows_written:>12} {m.read_mb:>7.0f} {m.duckdb:>8.2f} '
              f'{m.bare:>6.2f} {m.wall / m.duckdb:>8.1f} {m.wall / m.bare:>6.1f}')
    print('(x anchor, x bare: the run\'s whole wall time over that pass on the same files)')
    for m in runs:
        print(f'  {m.name}: ' + ', '.join(f'{s} {ms} ms' for s, ms in m.steps.items()))
        print('    ' + ', '.join(f'{name} {ms}' for name, ms in m.phases.items()
                               if not name.startswith('table/')))
    first, last = runs[1], runs[0]
    print(f'a run with no new files (run_once): {idle:.2f} s')
    if scheduled is not None and overhead is not None:
        print(f'scheduled run of the next hour (papermill, kernel start and compilation '
              f'included): {scheduled:.1f} s')
        print(f'scheduled run with no new files (the notebook\'s fixed overhead): '
              f'{overhead:.1f} s')
    print(f'first hour of a month / last hour of the previous: '
          f'{(first.wall - idle) / (last.wall - idle):.2f}')
    print(f'history: {per_hour:.1f} s per hourly run over {history_hours} runs; a month of '
          f'hourly runs as a backfill: {per_hour * 720 / 60:.0f} min')
    print(f'highest peak of a measured run: {max(m.peak_mb for m in runs)} MB')


if __name__ == '__main__':
    main()
