"""Builds of `examples/run_once` compared run by run on the hourly benchmark's history.

For each round, each build in turn (the order alternating between rounds) gets a fresh
hard-linked copy of the history that `bench/hourly_at_scale.py --work DIR` made, and runs the
hour after it (the last hour of the month) and the next (the first of the next month). Printed
for each build and hour: median wall time, CPU time (user + system) and peak memory, and the
median of the round-by-round ratios to the first build (and the ratio of the medians): pairing
keeps the ratio meaningful while the machine's speed drifts, which single runs on a shared
2-core machine do by 10-30%.
With `--phase LABEL` (repeatable), the runs are traced (`AQUABILL_TRACE`) and each build's line
also gives the median share of the run's wall time that those phases took, measured inside each
run (a step's own cost, free of the drift between runs).

Usage (after `bench/hourly_at_scale.py --work DIR` made the history):
    .venv/bin/python bench/paired_hours.py --work DIR [--rounds 10] [--phase LABEL ...] \
        BASELINE BUILD [BUILD ...]

Each build is a copy of a `run_once` binary (builds change the shared target folder's copy).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

FILES_PER_HOUR = 4
HOURS = ('last hour of the month', 'first hour of the next')


Run = tuple[float, float, int, float | None]
TRACED = re.compile(r'trace: (.+) (\d+) ms, rss')


def one_run(binary: Path, log: Path, out: Path, phases: list[str]) -> Run:
    """One hourly run: wall seconds, CPU seconds, peak resident MB, and the share of the wall
    time the traced `phases` took (None without phases, or when the build has none of them)."""
    env = {**os.environ, 'AQUABILL_TRACE': '1'} if phases else None
    began = time.monotonic()
    done = subprocess.run(['/usr/bin/time', '-f', '%M %U %S', str(binary), '-p', 'input_root',
                           str(log), '-p', 'output_root', str(out), '-p', 'batch_cap',
                           str(FILES_PER_HOUR)], capture_output=True, text=True, env=env)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f'{binary} failed:\n{done.stderr[-4000:]}')
    peak_kb, user, system = done.stderr.strip().splitlines()[-1].split()
    traced = [int(m.group(2)) for m in map(TRACED.match, (done.stdout + done.stderr).splitlines())
              if m and m.group(1) in phases]
    share = sum(traced) / 1000 / wall if traced else None
    return wall, float(user) + float(system), int(peak_kb) // 1024, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work', type=Path, required=True,
                        help='the work folder of bench/hourly_at_scale.py')
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--phase', action='append', default=[], dest='phases',
                        help='a trace label whose share of each run to report, for example '
                        'finish/alerts (repeat for several: their sum)')
    parser.add_argument('builds', type=Path, nargs='+', help='run_once binaries, baseline first')
    args = parser.parse_args()
    history, log, copy = args.work / 'history', args.work / 'log', args.work / 'paired'
    if not history.is_dir():
        raise SystemExit(f'no history in {args.work}: run bench/hourly_at_scale.py --work first')
    runs: dict[Path, list[list[Run]]] = {
        b: [[] for _ in HOURS] for b in args.builds}
    for r in range(args.rounds):
        for build in args.builds if r % 2 == 0 else args.builds[::-1]:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(history, copy, copy_function=os.link)
            for hour in range(len(HOURS)):
                runs[build][hour].append(one_run(build, log, copy, args.phases))
    shutil.rmtree(copy, ignore_errors=True)
    base = args.builds[0]
    for build in args.builds:
        for hour, name in enumerate(HOURS):
            mine, theirs = runs[build][hour], runs[base][hour]
            wall = statistics.median(m[0] / b[0] for m, b in zip(mine, theirs))
            medians = (statistics.median(m[0] for m in mine)
                       / statistics.median(b[0] for b in theirs))
            cpu = statistics.median(m[1] / b[1] for m, b in zip(mine, theirs))
            shares = [m[3] for m in mine if m[3] is not None]
            share = (f'; {"+".join(args.phases)} {100 * statistics.median(shares):.1f}% of the '
                     f'run ({100 * min(shares):.1f}-{100 * max(shares):.1f}%)' if shares else '')
            print(f'{build.name}, {name}: wall {statistics.median(m[0] for m in mine):.2f} s, '
                  f'cpu {statistics.median(m[1] for m in mine):.2f} s, '
                  f'peak {statistics.median(m[2] for m in mine):.0f} MB; '
                  f'against {base.name}: wall x{wall:.3f} (medians x{medians:.3f}), cpu x{cpu:.3f} '
                  f'({len(mine)} rounds){share}')


if __name__ == '__main__':
    main()
