"""A month of hourly runs, as the schedule would make them, without a kernel: prints how the
tables grow (live data files, Delta log files and checkpoints, time to open) and how long runs
take, every 24 runs. (Files on disk also include replaced files younger than the 7-day vacuum
retention; a replay that takes minutes keeps them all, so they are not shown.)

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/month_of_hourly_runs.py [--meters 200] [--hours 720]

Each hour the generator adds one ingestion hour of log (with duplicates and week-long outage
replays), then `examples/run_once` processes it. `day ms` is the mean run time of the 24 runs
up to that row (the first row: the first run alone). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from deltalake import DeltaTable

from aquabill_tools.env import built



def binaries() -> tuple[Path, Path]:
    return built('aquabill-gen'), built('aquabill', 'run_once')


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
    args = parser.parse_args()
    gen, run_once = binaries()
    work = Path(tempfile.mkdtemp(prefix='aquabill-month-'))
    log, out = work / 'log', work / 'out'
    start = datetime(2026, 6, 1)
    print(f'{args.meters} meters, {args.hours} hourly runs, in {work}')
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
                        '--duplicate-rate', '0.015'], check=True, capture_output=True)
        began = time.monotonic()
        subprocess.run([str(run_once), '-p', 'input_root', str(log), '-p', 'output_root', str(out)],
                       check=True, capture_output=True)
        ms = (time.monotonic() - began) * 1000
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
    if len(days) >= 2:
        print(f'mean run of the last day / of the first day: {days[-1]:.0f} / {days[0]:.0f} ms '
              f'= {days[-1] / days[0]:.2f}')


if __name__ == '__main__':
    main()
