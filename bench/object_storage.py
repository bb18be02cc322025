"""The hourly run with its tables and checkpoint on S3, at no latency and at S3's latency, in one
invocation.

Generates a few ingestion hours at utility scale with the project's generator (default 100,000
meters, 4 files an hour, as `bench/hourly_at_scale.py`), then processes them hour by hour through
`examples/run_once`, once per latency, each time into new tables on the tests' S3 server
(`tests/s3server.py`: moto in this process, each request on a thread of its own, every request
delayed by the latency outside moto's lock, so requests overlap as on S3). The log stays on local
disk (`--log-on-s3` puts it on the server too). The first hour creates the tables; every later
hour is one hourly run on tables that exist; the last run of each latency finds no new files.

Prints, per run: wall seconds, requests by method, and the requests in flight when each request
started (median and most: over every request, and over the requests of data files, the
`.parquet` objects); then each hour's wall time at each latency against the first latency.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/object_storage.py [--meters 100000] [--hours 4]
        [--latency 0 30] [--start 2026-06-01T00] [--work DIR] [--log-on-s3] [--trace]
        [--run-once BINARY]

`--run-once` runs another build of `examples/run_once` (an earlier version, say) instead of this
clone's, for a comparison at the same latencies.

About 170 MB of log per hour at the default scale; a few minutes to generate it once (kept in
--work and reused). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from hourly_at_scale import HOUR, copy_binaries, generate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
from s3server import S3Server  # noqa: E402  (the tests' S3 server)


def timed_run(binary: Path, log: str, out: str, env: dict[str, str],
              trace: bool) -> tuple[float, str]:
    """One run: wall seconds and the first line of its report; fails loudly."""
    began = time.monotonic()
    done = subprocess.run([str(binary), '-p', 'input_root', log, '-p', 'output_root', out],
                          capture_output=True, text=True, env=env)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'run into {out} failed:\n{done.stderr}')
    if trace:
        print(''.join(f'    {line}\n' for line in done.stderr.splitlines()
                      if line.startswith('trace:')), end='')
    return wall, (done.stdout.splitlines() or [''])[0]


def served(server: S3Server, since: int) -> str:
    """The requests from the `since`-th on: by method, and how many were in flight."""
    asked = server.requests[since:]
    flying = server.in_flight(since)
    kinds = ', '.join(f'{n} {m}' for m, n in sorted(Counter(m for m, _, _ in asked).items()))
    data = [f for (_, path, _), f in zip(asked, flying) if path.endswith('.parquet')]

    def spread(values: list[int]) -> str:
        return f'median {statistics.median(values):g}, most {max(values)}' if values else '-'

    return (f'{len(asked)} requests ({kinds or "none"}); in flight: all {spread(flying)}; '
            f'data files {spread(data)}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--hours', type=int, default=4, help='ingestion hours to process')
    parser.add_argument('--latency', type=float, nargs='+', default=[0, 30],
                        help='milliseconds added to every request, one set of runs each')
    parser.add_argument('--start', default='2026-06-01T00', help='the first ingestion hour')
    parser.add_argument('--work', type=Path, help='keep and reuse the log here')
    parser.add_argument('--log-on-s3', action='store_true', help='the log on S3 too')
    parser.add_argument('--trace', action='store_true', help="print each run's step times")
    parser.add_argument('--run-once', type=Path, help='another build of examples/run_once')
    args = parser.parse_args()

    first = datetime.strptime(args.start, HOUR)
    hours = [first + timedelta(hours=h) for h in range(args.hours)]
    walls: dict[float, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix='aquabill-s3-bench-') as tmp:
        work = args.work or Path(tmp)
        bins = copy_binaries(work / 'bin')
        if args.run_once is not None:
            bins['run_once'] = args.run_once.resolve()
        log = generate(bins['gen'], work / 'log', first, hours[-1] + timedelta(hours=1),
                       args.meters)
        for latency in args.latency:
            server = S3Server(latency_ms=latency)
            try:
                env = dict(os.environ) | server.env
                if args.trace:
                    env['AQUABILL_TRACE'] = '1'
                bucket = server.new_bucket()
                out = f's3://{bucket}/tables'
                inputs: str | Path = Path(tmp) / f'log-{latency:g}'
                walls[latency] = []
                for hour in hours + [None]:
                    if hour is not None:
                        folder = f'ingest_hour={hour.strftime(HOUR)}'
                        if args.log_on_s3:
                            inputs = server.upload(log / folder, bucket, f'usage-log/{folder}')
                        else:
                            assert isinstance(inputs, Path)
                            inputs.mkdir(exist_ok=True)
                            (inputs / folder).symlink_to(log / folder, target_is_directory=True)
                    since = len(server.requests)
                    wall, report = timed_run(bins['run_once'], str(inputs), out, env,
                                             args.trace)
                    walls[latency].append(wall)
                    what = hour.strftime(HOUR) if hour is not None else 'no new files'
                    print(f'{latency:g} ms: {what} {wall:.2f} s, {served(server, since)} '
                          f'({report})', flush=True)
            finally:
                server.stop()

    base = args.latency[0]
    print(f'\n{args.meters:,} meters, tables and checkpoint on S3'
          f'{", log too" if args.log_on_s3 else ", log on local disk"}; wall seconds of each '
          'hourly run (the first creates the tables)\n')
    others = args.latency[1:]
    columns = [f'{ms:g} ms' for ms in args.latency] + [f'{ms:g} ms / {base:g} ms'
                                                        for ms in others]
    print('| run | ' + ' | '.join(columns) + ' |')
    print('|---' * (1 + len(columns)) + '|')
    names = [h.strftime(HOUR) for h in hours] + ['no new files']
    for i, name in enumerate(names):
        cells = [f'{walls[ms][i]:.2f}' for ms in args.latency]
        cells += [f'{walls[ms][i] / walls[base][i]:.2f}x' for ms in others]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
