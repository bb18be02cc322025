"""The notebook's views on a full month of the customer tables at utility scale: the chart and
the explore queries on the month's last day, with the day tables and with the hour files alone,
on local disk, on a local folder served as an S3 bucket at a latency per request (`--remote`:
requests overlap as on S3, and nothing else costs), and (with `--latency`) on the tests' S3
server at that latency per request (moto answers one request at a time, about 1.8 ms each, so a
view of a thousand requests there measures the server as much as the view).

The month is a fixture (`aquabill::fixture`, through `examples/month_views --build`): a row per
customer and hour in `hourly_usage` and `cumulative_usage` for every hour of the billing month,
laid out as runs lay them out, and the day tables as the run of the month's last hour leaves
them (the days before the watermark's). A month of log at 100,000 meters would be about 125 GB;
the views only read the tables. Built once into `--work` and reused.

Each view runs in a process of its own, as in a scheduled notebook (its tables opened by the
view itself); the figure is the view's own seconds (the process's start and the notebook cell's
own cost, 0.2-0.4 s a cell, are not in it) and the process's peak resident memory. The queries
are the notebook's own cells (`explore_customer`, `explore_largest`), read from it. Runs with
the hour files alone move the day tables aside for the time of the runs.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/month_views.py [--customers 50000]
        [--hour 2026-06-15T00] [--rounds 5] [--remote 0 30] [--latency 30] [--work DIR]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aquabill_tools.env import built

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'hourly_billing.ipynb'
sys.path.insert(0, str(ROOT / 'tests'))
from s3server import S3Server  # noqa: E402  (the tests' S3 server)

# The day tables, under the checkpoint folder (`<output_root>/_checkpoint`).
DAY_TABLES = ('hourly_usage_days', 'cumulative_usage_days')


def notebook_query(tag: str) -> str:
    """The query of the notebook's `pipeline.sql("...")` cell tagged `tag`, as Rust reads it."""
    cells = json.loads(NOTEBOOK.read_text())['cells']
    [source] = [''.join(c['source']) for c in cells if tag in c.get('metadata', {}).get('tags', [])]
    literal = source[source.index('("') + 2:source.rindex('")')]
    # A backslash at a line's end skips the line break and the next line's indent.
    return re.sub(r'\\\n\s*', '', literal).replace('\\"', '"')


# `--chart 0.113 s 720 rows, peak 64 MB[, requests 960 (956 GET, 4 LIST, 0 other), in flight
# median 72 most 128]`
VIEW_LINE = re.compile(r'^\S+ (?P<seconds>[\d.]+) s .*, peak (?P<peak>\d+) MB'
                       r'(?:, requests (?P<requests>\d+) .* median (?P<median>\d+) most \d+)?$')


def run_view(binary: Path, args: list[str], env: dict[str, str]) -> re.Match[str]:
    """One view in a process of its own: its seconds and the process's peak memory in MB, and
    on a `--remote` store its requests and their median in flight."""
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f'month_views {args[-2:]} failed:\n{done.stderr}')
    line = done.stdout.strip().splitlines()[-1]
    match = VIEW_LINE.match(line)
    if match is None:
        raise SystemExit(f'month_views printed an unexpected line: {line}')
    return match


def measure(binary: Path, place: list[str], views: dict[str, list[str]], rounds: int,
            env: dict[str, str]) -> dict[str, str]:
    """Each view `rounds` times: its median seconds, the most memory, and on a `--remote` store
    the requests of the last round and their median in flight."""
    times: dict[str, list[float]] = {name: [] for name in views}
    peaks: dict[str, int] = {name: 0 for name in views}
    requests: dict[str, str] = {name: '' for name in views}
    for _ in range(rounds):
        for name, args in views.items():
            match = run_view(binary, place + args, env)
            times[name].append(float(match['seconds']))
            peaks[name] = max(peaks[name], int(match['peak']))
            if match['requests']:
                requests[name] = (f', {int(match["requests"]):,} requests, '
                                  f'median {match["median"]} in flight')
    return {name: f'{statistics.median(t):.3f} s, {peaks[name]} MB{requests[name]}'
            for name, t in times.items()}


def remote_folder(work: Path, out: Path) -> Path:
    """A folder laid out as the bucket the `--remote` runs read: `days/` the tables with their
    day tables, `hours/` the two customer tables alone (links into `out`)."""
    root = work / 'remote'
    (root / 'hours').mkdir(parents=True, exist_ok=True)
    links = {root / 'days': out} | {root / 'hours' / name: out / name
                                     for name in ('hourly_usage', 'cumulative_usage')}
    for link, target in links.items():
        if not link.is_symlink():
            link.symlink_to(target.resolve(), target_is_directory=True)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--customers', type=int, default=50_000,
                        help='customers (the generator gives two meters each: 100,000 meters)')
    parser.add_argument('--hour', default='2026-06-15T00', help='an hour of the month')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--latency', type=float, nargs='*', default=[30],
                        help="latencies (ms) to measure at on the tests' S3 server too")
    parser.add_argument('--remote', type=int, nargs='*', default=[30],
                        help='latencies (ms) to measure at on a local folder served as a bucket '
                        "at that latency a request, without the tests' server's own cost")
    parser.add_argument('--work', type=Path, help='keep and reuse the month here')
    args = parser.parse_args()

    binary = built('aquabill', 'month_views')
    with tempfile.TemporaryDirectory(prefix='aquabill-month-views-') as tmp:
        work = args.work or Path(tmp)
        log, out = work / 'log', work / 'out'
        log.mkdir(parents=True, exist_ok=True)
        local = ['-p', 'input_root', str(log), '-p', 'output_root', str(out)]
        if not (out / 'cumulative_usage').exists():
            began = time.monotonic()
            done = subprocess.run([str(binary), *local, '--build', str(args.customers),
                                   args.hour], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f'building the month failed:\n{done.stderr}')
            print(f'{done.stdout.splitlines()[0]} ({time.monotonic() - began:.0f} s)')
        views = {
            'chart': ['--chart'],
            'explore_customer': ['--sql', notebook_query('explore_customer')],
            'explore_largest': ['--sql', notebook_query('explore_largest')],
        }
        env = dict(os.environ)
        results: dict[str, dict[str, str]] = {}
        results['local, day tables'] = measure(binary, local, views, args.rounds, env)
        aside = work / 'days-aside'
        aside.mkdir(exist_ok=True)
        try:
            for name in DAY_TABLES:
                (out / '_checkpoint' / name).rename(aside / name)
            results['local, hour files'] = measure(binary, local, views, args.rounds, env)
        finally:
            for name in DAY_TABLES:
                if (aside / name).exists():
                    (aside / name).rename(out / '_checkpoint' / name)
        if args.remote:
            root = remote_folder(work, out)
            for latency in args.remote:
                for kind in ('days', 'hours'):
                    place = ['-p', 'input_root', str(log), '-p', 'output_root',
                             f's3://bench/{kind}', '--remote', 'bench', str(root), str(latency)]
                    label = f'a bucket at {latency} ms, ' + (
                        'day tables' if kind == 'days' else 'hour files')
                    results[label] = measure(binary, place, views, args.rounds, env)
        if args.latency:
            server = S3Server(latency_ms=0)
            try:
                bucket = server.new_bucket()
                for name in ('hourly_usage', 'cumulative_usage'):
                    server.upload(out / name, bucket, f'days/{name}')
                    server.upload(out / name, bucket, f'hours/{name}')
                for name in DAY_TABLES:
                    server.upload(out / '_checkpoint' / name, bucket, f'days/_checkpoint/{name}')
                s3_env = env | server.env
                for latency in args.latency:
                    server.latency_ms = latency
                    for kind in ('days', 'hours'):
                        place = ['-p', 'input_root', str(log),
                                 '-p', 'output_root', f's3://{bucket}/{kind}']
                        label = f'S3 {latency:g} ms, ' + (
                            'day tables' if kind == 'days' else 'hour files')
                        results[label] = measure(binary, place, views, args.rounds, s3_env)
            finally:
                server.stop()

    print(f'\n{args.customers:,} customers, the month of {args.hour} whole; median seconds of '
          f'{args.rounds} runs of each view (each in its own process), most memory\n')
    columns = list(results)
    print('| view | ' + ' | '.join(columns) + ' |')
    print('|---' * (1 + len(columns)) + '|')
    for name in views:
        print(f'| {name} | ' + ' | '.join(results[c][name] for c in columns) + ' |')


if __name__ == '__main__':
    main()
