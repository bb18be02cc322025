"""The hourly run with the tables (and the log) on the local S3 server, against local disk.

Generates a few ingestion hours at utility scale with the project's generator (default 100,000
meters, 4 files an hour, as `bench/hourly_at_scale.py`), then processes them hour by hour through
`examples/run_once` three times, each into new tables: the log and the tables on local disk; the
log on local disk and the tables on S3; both on S3. The S3 server is the test suite's (moto,
single-threaded, in this process: `tests/s3server.py`), so its figures are an upper bound of
what the store adds on loopback, not S3's latency. Each run's hour is uploaded (or linked) just
before it, as new files arrive; the first hour creates the tables and is not compared. Prints
every run's wall time and its requests to the S3 server, a run with no new files per set-up,
and each hour's wall time against local disk.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/object_storage.py [--meters 100000] [--hours 4]
        [--start 2026-06-01T00] [--work DIR]

About 170 MB of log per hour at the default scale; a few minutes to generate it once (kept in
--work and reused), then about a minute per set-up and hour. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from hourly_at_scale import HOUR, copy_binaries, generate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
from s3server import S3Server  # noqa: E402  (the tests' S3 server)


def timed_run(binary: Path, log: str, out: str, env: dict[str, str]) -> tuple[float, str]:
    """One run: wall seconds and its report; fails loudly."""
    began = time.monotonic()
    done = subprocess.run([str(binary), '-p', 'input_root', log, '-p', 'output_root', out],
                          capture_output=True, text=True, env=env)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'run into {out} failed:\n{done.stderr}')
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--hours', type=int, default=4, help='ingestion hours to process')
    parser.add_argument('--start', default='2026-06-01T00', help='the first ingestion hour')
    parser.add_argument('--work', type=Path, help='keep and reuse the log here')
    args = parser.parse_args()

    first = datetime.strptime(args.start, HOUR)
    hours = [first + timedelta(hours=h) for h in range(args.hours)]
    with tempfile.TemporaryDirectory(prefix='aquabill-s3-bench-') as tmp:
        work = args.work or Path(tmp)
        bins = copy_binaries(work / 'bin')
        log = generate(bins['gen'], work / 'log', first, hours[-1] + timedelta(hours=1),
                       args.meters)
        server = S3Server()
        try:
            env = dict(os.environ) | server.env
            bucket = server.new_bucket()
            setups = {
                'local disk': (Path(tmp) / 'log-local', Path(tmp) / 'tables'),
                'tables on S3': (Path(tmp) / 'log-s3-tables', f's3://{bucket}/tables-only'),
                'log and tables on S3': (f's3://{bucket}/usage-log', f's3://{bucket}/tables'),
            }
            walls: dict[str, list[float]] = {name: [] for name in setups}
            idle: dict[str, float] = {}
            for name, (inputs, out) in setups.items():
                for hour in hours:
                    folder = f'ingest_hour={hour.strftime(HOUR)}'
                    if isinstance(inputs, Path):
                        inputs.mkdir(exist_ok=True)
                        (inputs / folder).symlink_to(log / folder, target_is_directory=True)
                    else:
                        server.upload(log / folder, bucket, f'usage-log/{folder}')
                    served = len(server.requests)
                    wall, report = timed_run(bins['run_once'], str(inputs), str(out), env)
                    walls[name].append(wall)
                    asked = server.requests[served:]
                    kinds = ', '.join(f'{n} {m}' for m, n in sorted(
                        Counter(method for method, _, _ in asked).items()))
                    print(f'{name}: hour {hour.strftime(HOUR)} {wall:.2f} s, '
                          f'{len(asked)} S3 requests ({kinds or "none"}) '
                          f'({report.splitlines()[0] if report else ""})', flush=True)
                idle[name], _ = timed_run(bins['run_once'], str(inputs), str(out), env)
        finally:
            server.stop()

    print(f'\n{args.meters:,} meters, hour by hour; wall seconds (the first hour creates the '
          'tables and is not compared)\n')
    names = list(setups)
    print('| hour | ' + ' | '.join(names) + ' | ' +
          ' | '.join(f'{n} / local' for n in names[1:]) + ' |')
    print('|---' * (1 + 2 * len(names) - 1) + '|')
    for i, hour in enumerate(hours[1:], start=1):
        base = walls[names[0]][i]
        print(f'| {hour.strftime(HOUR)} | ' +
              ' | '.join(f'{walls[n][i]:.2f}' for n in names) + ' | ' +
              ' | '.join(f'{walls[n][i] / base:.2f}x' for n in names[1:]) + ' |')
    print('| no new files | ' + ' | '.join(f'{idle[n]:.2f}' for n in names) + ' | ' +
          ' | '.join(f'{idle[n] / idle[names[0]]:.2f}x' for n in names[1:]) + ' |')


if __name__ == '__main__':
    main()
