"""A backlog caught up with default parameters: the first deployment over an existing log, or a
schedule that was down. One `run_once` (the notebook's steps without a kernel: the first batch,
then the rest of the backlog batch after batch) over a day and over a week of unprocessed
ingestion hours at utility scale, with wall time, records per second, peak memory and batches.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/backlog.py [--meters 100000] [--days 1 7]
        [--start 2026-06-01T00] [--work DIR] [-p chunk_mb 1024 ...] [--run-once BINARY]

`-p NAME VALUE` passes a notebook parameter to the runs (default parameters otherwise);
`--run-once` runs another build of `examples/run_once` (A/B on the same log).

The log (about 170 MB per ingestion hour at the default scale: 29 GB for a week) is generated
with the project's generator and kept in DIR/log with --work, shared with
`bench/hourly_at_scale.py` when both use the same folder and scale. Not part of the test suite.
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

from hourly_at_scale import HOUR, copy_binaries, generate, log_view


def catch_up(binary: Path, log: Path, out: Path,
             params: list[list[str]]) -> tuple[float, int, str]:
    """One run over the whole backlog with `params` (name, value) beside the folders: wall
    seconds, peak RSS MB, report."""
    shutil.rmtree(out, ignore_errors=True)
    extra = [arg for name, value in params for arg in ('-p', name, value)]
    began = time.monotonic()
    done = subprocess.run(['/usr/bin/time', '-f', '%M', str(binary), '-p', 'input_root',
                           str(log), '-p', 'output_root', str(out), *extra],
                          capture_output=True, text=True)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'run_once failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}')
    return wall, int(done.stderr.strip().splitlines()[-1]) // 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--days', type=int, nargs='+', default=[1, 7],
                        help='backlog lengths to measure, in days of ingestion hours')
    parser.add_argument('--start', default='2026-06-01T00', help='first ingestion hour (UTC)')
    parser.add_argument('--work', type=Path, help='keep and reuse the log here')
    parser.add_argument('-p', dest='params', nargs=2, action='append', default=[],
                        metavar=('NAME', 'VALUE'), help='a notebook parameter for the runs')
    parser.add_argument('--run-once', type=Path, help='this build of examples/run_once')
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix='aquabill-backlog-'))
    work.mkdir(parents=True, exist_ok=True)
    start = datetime.strptime(args.start, HOUR)
    try:
        bins = copy_binaries(work / 'bin')
        if args.run_once:
            bins['run_once'] = args.run_once
        print(f"{'backlog':<8} {'records':>11} {'GB':>5} {'wall s':>7} {'rec/s':>9} "
              f"{'peak MB':>7} {'batches':>7}")
        # The longest backlog's log once; the shorter ones are its first days.
        generate(bins['gen'], work / 'log', start, start + timedelta(days=max(args.days)),
                 args.meters)
        for days in sorted(args.days):
            log = log_view(work / 'log', start, start + timedelta(days=days))
            # The view's hour folders are links, which rglob does not follow.
            size = sum(f.stat().st_size for hour in log.iterdir()
                       for f in hour.glob('*.jsonl')) / 1e9
            wall, peak, text = catch_up(bins['run_once'], log, work / 'backlog-run',
                                        args.params)
            first = re.search(r'batch \d+: \d+ files, (\d+) lines', text)
            later = re.search(r'(\d+) more batches, (\d+) lines', text)
            lines = int(first.group(1)) if first else 0
            batches = 1
            if later:
                batches += int(later.group(1))
                lines += int(later.group(2))
            print(f'{days:>3} days {lines:>11} {size:>5.1f} {wall:>7.1f} {lines / wall:>9.0f} '
                  f'{peak:>7} {batches:>7}', flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work)


if __name__ == '__main__':
    main()
