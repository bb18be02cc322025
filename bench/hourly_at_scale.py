"""The hourly run at utility scale, without a kernel: generates a log with the project's generator
(default 100,000 meters, 5-minute readings, 1.5% duplicates, 2% of meters replaying outages),
processes it hour by hour as the schedule would, and prints per run: records, wall time,
records per second, peak memory and time per step; then the same hour's files through DuckDB
(`read_json` + dedup + group by, stateless) as a reference.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/hourly_at_scale.py [--meters 100000] [--hours 3]

Not part of the test suite. Work files go to a temporary folder (about 170 MB per hour at the
default scale), removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from aquabill_tools.env import built

STEP = re.compile(r'(plan|parse|dedup|hourly_usage|cumulative_usage|finish) (\d+) ms')


def binaries() -> tuple[Path, Path]:
    return built('aquabill-gen'), built('aquabill', 'run_once')


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in MB (of this child), stdout."""
    began = time.monotonic()
    out = subprocess.run(['/usr/bin/time', '-f', '%M', *cmd], check=True, capture_output=True,
                         text=True)
    peak_kb = int(out.stderr.strip().splitlines()[-1])
    return time.monotonic() - began, peak_kb // 1024, out.stdout


def duckdb_reference(folder: Path) -> float:
    began = time.monotonic()
    duckdb.connect().execute(f"""
        with r as (select * from read_json('{folder}/*.jsonl', format='newline_delimited',
            columns={{'meter_id': 'VARCHAR', 'customer_id': 'VARCHAR',
                      'recorded_at': 'TIMESTAMPTZ', 'usage_liters': 'DECIMAL(18,3)',
                      'ingested_at': 'VARCHAR'}}, ignore_errors=true)),
        d as (select distinct on (meter_id, recorded_at) * from r)
        select customer_id, date_trunc('hour', recorded_at) as h, sum(usage_liters)
        from d group by all""").fetchall()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--hours', type=int, default=3, help='hourly runs')
    parser.add_argument('--start', default='2026-06-10T00', help='first ingestion hour')
    parser.add_argument('--keep', action='store_true')
    args = parser.parse_args()
    gen, run_once = binaries()
    work = Path(tempfile.mkdtemp(prefix='aquabill-scale-'))
    log, out = work / 'log', work / 'out'
    start = datetime.strptime(args.start, '%Y-%m-%dT%H')
    print(f'{args.meters} meters, {args.hours} hourly runs from {args.start}, in {work}')
    print(f"{'hour':<14} {'records':>9} {'gen s':>6} {'run s':>6} {'rec/s':>9} {'peak MB':>7} "
          f"{'duckdb s':>8} {'ratio':>6}  steps (ms)")
    highest = 0
    try:
        for i in range(args.hours):
            hour = start + timedelta(hours=i)
            name = hour.strftime('%Y-%m-%dT%H')
            began = time.monotonic()
            subprocess.run([str(gen), '--output', str(log), '--start-hour', name, '--end-hour',
                            (hour + timedelta(hours=1)).strftime('%Y-%m-%dT%H'), '--meters',
                            str(args.meters), '--interval-minutes', '5', '--duplicate-rate',
                            '0.015', '--offline-share', '0.02', '--files-per-hour', '4',
                            '--seed', '1'], check=True, capture_output=True)
            gen_s = time.monotonic() - began
            seconds, peak, text = timed([str(run_once), str(log), str(out)])
            highest = max(highest, peak)
            records = int(re.search(r'(\d+) lines', text).group(1)) if 'lines' in text else 0
            steps = ', '.join(f'{s} {ms}' for s, ms in STEP.findall(text))
            duck = duckdb_reference(log / f'ingest_hour={name}')
            print(f'{name:<14} {records:>9} {gen_s:>6.1f} {seconds:>6.2f} '
                  f'{records / seconds:>9.0f} {peak:>7} {duck:>8.2f} {seconds / duck:>6.1f}  '
                  f'{steps}', flush=True)
        idle, peak, _ = timed([str(run_once), str(log), str(out)])
        print(f'a run with no new files: {idle:.2f} s, peak {peak} MB')
        print(f'highest peak of a run: {highest} MB')
    finally:
        if not args.keep:
            shutil.rmtree(work)


if __name__ == '__main__':
    main()
