"""A month of hourly runs, as the schedule would make them, without a kernel: prints how the
tables grow (live data files, Delta log files and checkpoints, time to open) and how long runs
take, every 24 runs. (Files on disk also include replaced files younger than the 7-day vacuum
retention, so they are not shown.)

A month replayed in minutes keeps everything Delta expires by the clock (log commits after
`delta.logRetentionDuration`, tombstones of replaced files, vacuumed files): with
`--simulated-clock`, each run sees the time of its hour (libfaketime, Debian's `faketime`
package) and the files it wrote are dated then, as on a deployment running a month.

With `--views`, the month's last hour is run by the notebook through `aquabill-papermill`
instead (the scheduled run at a month's end), then the notebook once more with no new files, and
each code cell's seconds are printed: the views (bills, chart, explore) on a full month of tables.
`--interval-minutes 60` keeps the log of a month at 100,000 meters to about 10 GB: the tables have
the same rows (one per customer and hour) as with readings every 5 minutes, the hourly runs read
a twelfth of the records.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/month_of_hourly_runs.py [--meters 200] \
        [--hours 720] [--simulated-clock] [--interval-minutes 5] [--views] [--work DIR]

Each hour the generator adds one ingestion hour of log (with duplicates and week-long outage
replays), then `examples/run_once` processes it. `day ms` is the mean run time of the 24 runs
up to that row (the first row: the first run alone). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from deltalake import DeltaTable

from aquabill_tools.env import built
from hourly_at_scale import cell_times, papermill


def binaries() -> tuple[Path, Path]:
    return built('aquabill-gen'), built('aquabill', 'run_once')


FAKETIME = Path('/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1')


def clock_at(when: datetime) -> dict[str, str]:
    """The environment of a process that sees the wall clock start at `when` (UTC)."""
    if not FAKETIME.is_file():
        raise SystemExit(f'--simulated-clock needs {FAKETIME} (apt-get install faketime)')
    return dict(os.environ) | {'LD_PRELOAD': str(FAKETIME), 'TZ': 'UTC',
                               'FAKETIME': when.strftime('@%Y-%m-%d %H:%M:%S'),
                               'FAKETIME_DONT_FAKE_MONOTONIC': '1'}


def date_files(root: Path, since: float, when: datetime) -> None:
    """Dates the files under `root` written since `since` (epoch seconds) at `when` (UTC)."""
    stamp = when.replace(tzinfo=timezone.utc).timestamp()
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.stat(path).st_mtime >= since:
                os.utime(path, (stamp, stamp))


def count(table: Path) -> tuple[int, int, int, float]:
    """Live data files, JSON commits, checkpoints, ms to open the table."""
    began = time.monotonic()
    live = len(DeltaTable(str(table)).file_uris())
    opened = (time.monotonic() - began) * 1000
    log = table / '_delta_log'
    return live, len(list(log.glob('*.json'))), len(list(log.glob('*.checkpoint.parquet'))), \
        opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=200)
    parser.add_argument('--hours', type=int, default=720)
    parser.add_argument('--simulated-clock', action='store_true',
                        help='each run sees the time of its hour (needs libfaketime)')
    parser.add_argument('--interval-minutes', type=int, default=5,
                        help='minutes between a meter\'s readings')
    parser.add_argument('--views', action='store_true',
                        help='the last hour and the views through the notebook')
    parser.add_argument('--work', type=Path, help='the folder for the log and tables')
    args = parser.parse_args()
    gen, run_once = binaries()
    work = args.work or Path(tempfile.mkdtemp(prefix='aquabill-month-'))
    if args.work:
        work.mkdir(parents=True)
    log, out = work / 'log', work / 'out'
    start = datetime(2026, 6, 1)
    clock = 'simulated clock (each run at its hour)' if args.simulated_clock else 'real clock'
    print(f'{args.meters} meters, {args.hours} hourly runs, {clock}, in {work}')
    print(f"{'run':>4} {'day ms':>6} {'hourly files':>12} {'cumul. files':>12} "
          f"{'log json':>8} {'checkpoints':>11} {'open ms':>7} {'state files':>11}")
    slowest = 0.0
    day: list[float] = []  # this day's run times, ms
    days: list[float] = []  # the mean run time of each whole day, ms
    for i in range(args.hours):
        hour = start + timedelta(hours=i)
        subprocess.run([str(gen), '--output', str(log), '--start-hour',
                        hour.strftime('%Y-%m-%dT%H'), '--end-hour',
                        (hour + timedelta(hours=1)).strftime('%Y-%m-%dT%H'), '--meters',
                        str(args.meters), '--seed', '1', '--offline-share', '0.05',
                        '--duplicate-rate', '0.015', '--interval-minutes',
                        str(args.interval_minutes)], check=True, capture_output=True)
        if args.views and i + 1 == args.hours:
            break
        # The run starts 5 minutes after its ingestion hour closed.
        now = hour + timedelta(hours=1, minutes=5)
        env = clock_at(now) if args.simulated_clock else None
        written_since = time.time() - 1
        began = time.monotonic()
        subprocess.run([str(run_once), '-p', 'input_root', str(log), '-p', 'output_root', str(out)],
                       check=True, capture_output=True, env=env)
        ms = (time.monotonic() - began) * 1000
        if args.simulated_clock:
            date_files(out, written_since, now)
        slowest = max(slowest, ms)
        day.append(ms)
        if (i + 1) % 24 == 0:
            days.append(sum(day) / len(day))
            day = []
        if (i + 1) % 24 == 0 or i == 0:
            h, c, s = count(out / 'hourly_usage'), count(out / 'cumulative_usage'), \
                count(out / '_checkpoint' / 'dedup_readings')
            shown = days[-1] if (i + 1) % 24 == 0 else ms
            print(f'{i + 1:>4} {shown:>6.0f} {h[0]:>12} {c[0]:>12} {c[1]:>8} {c[2]:>11} '
                  f'{c[3]:>7.0f} {s[0]:>11}', flush=True)
    print(f'slowest run {slowest:.0f} ms')
    if args.views:
        executed = work / 'executed'
        last = papermill(log, out, executed / 'last-hour.ipynb')
        idle = papermill(log, out, executed / 'no-new-files.ipynb')
        print(f'the last hour through the notebook: {last:.1f} s; cells (s): '
              f'{cell_times(executed / "last-hour.ipynb")}')
        print(f'the notebook with no new files: {idle:.1f} s; cells (s): '
              f'{cell_times(executed / "no-new-files.ipynb")}')
    if len(days) >= 2:
        print(f'mean run of the last day / of the first day: {days[-1]:.0f} / {days[0]:.0f} ms '
              f'= {days[-1] / days[0]:.2f}')


if __name__ == '__main__':
    main()
