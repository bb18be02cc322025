"""The scheduled run's memory: the notebook through `aquabill-papermill` on a backlog, with the
whole process tree's resident memory (what a container limit sees) sampled while it runs, and
the cell that made the peak.

Generates a backlog of ingestion hours at utility scale with the project's generator (default
100,000 meters, 6 hours from 2026-05-10T00, about 7 M records), then runs the notebook on it once
with default parameters into new tables, sampling every process under papermill (papermill
itself, the kernel, the compilers it starts for cells) every `--interval` seconds. Prints each
code cell's duration and the tree's peak while it ran, with the processes that made up the
overall peak; then `examples/run_once` on the same backlog into other new tables, with its own
peak, for comparison.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/scheduled_memory.py [--meters 100000] [--hours 6]
        [--start 2026-05-10T00] [--work DIR] [--interval 0.05] [--interactive] [--no-run-once]

`--interactive` runs the notebook a second time, into new tables, with the kernel JupyterLab
starts (`AQUABILL_LEAN_KERNEL=0`: evcxr analyses the standard library's sources, for completions
and inferred types), for its cost over the lean kernel of unattended runs.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from hourly_at_scale import HOUR, NOTEBOOK, PAPERMILL, copy_binaries, generate

PAGE = os.sysconf('SC_PAGE_SIZE')


def tree(root: int) -> dict[int, tuple[str, int]]:
    """Every live process under `root` (itself included): pid -> (name, resident bytes)."""
    parents: dict[int, int] = {}
    for entry in os.scandir('/proc'):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, 'stat').read_text()
            except OSError:
                continue
            # The name is in parentheses and may hold spaces; the parent pid follows the state.
            parents[int(entry.name)] = int(stat[stat.rindex(')') + 2:].split()[1])
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in members:
                members.add(child)
                frontier.append(child)
    sizes = {}
    for pid in members:
        try:
            name = Path(f'/proc/{pid}/comm').read_text().strip()
            resident = int(Path(f'/proc/{pid}/statm').read_text().split()[1]) * PAGE
        except OSError:
            continue
        sizes[pid] = (name, resident)
    return sizes


def sampled_run(cmd: list[str], interval: float,
                env: dict[str, str]) -> list[tuple[float, dict[int, tuple[str, int]]]]:
    """Runs `cmd` in `env`, sampling its process tree until it exits: (wall clock, tree)
    samples."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples = []
    while process.poll() is None:
        samples.append((time.time(), tree(process.pid)))
        time.sleep(interval)
    if process.returncode != 0:
        stderr = process.stderr.read().decode() if process.stderr else ''
        raise SystemExit(f'{cmd[0]} failed:\n{stderr[-3000:]}')
    return samples


def total(sample: dict[int, tuple[str, int]]) -> int:
    return sum(resident for _, resident in sample.values())


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


def notebook_run(kernel: str, log: Path, out: Path, args: argparse.Namespace) -> None:
    """The notebook through `aquabill-papermill` on `log` into new tables under `out`, with the
    `lean` kernel unattended runs use or the `interactive` one JupyterLab starts (evcxr's
    analysis of the standard library on): its wall time, each cell's, and the tree's peaks."""
    out.mkdir(parents=True)
    executed = out / 'executed.ipynb'
    env = os.environ | {'AQUABILL_LEAN_KERNEL': '1' if kernel == 'lean' else '0'}
    began = time.monotonic()
    samples = sampled_run([str(PAPERMILL), str(NOTEBOOK), str(executed), '-p', 'input_root',
                           str(log), '-p', 'output_root', str(out / 'tables')],
                          args.interval, env)
    wall = time.monotonic() - began
    cells = [c for c in json.loads(executed.read_text())['cells'] if c['cell_type'] == 'code']
    peak_at, peak = max(samples, key=lambda s: total(s[1]))
    print(f'{args.meters:,} meters, {args.hours} ingestion hours from {args.start}; the '
          f'notebook through aquabill-papermill, {kernel} kernel: {wall:.1f} s, process tree '
          f'peak {total(peak) / 2**20:,.0f} MB ({len(samples)} samples)\n')
    print('| cell | seconds | tree peak MB |')
    print('|---|---|---|')
    for cell in cells:
        timing = cell.get('metadata', {}).get('papermill', {})
        if not timing.get('start_time') or not timing.get('end_time'):
            continue
        start, stop = stamp(timing['start_time']), stamp(timing['end_time'])
        during = [total(s) for at, s in samples if start <= at <= stop]
        first_line = ''.join(cell['source']).strip().splitlines()[0][:40]
        print(f'| `{first_line}` | {stop - start:.2f} | {max(during, default=0) / 2**20:,.0f} |')
    by_name: Counter[str] = Counter()
    for name, resident in peak.values():
        by_name[name] += resident
    made_of = ', '.join(f'{name} {size / 2**20:,.0f} MB' for name, size in by_name.most_common())
    print(f'\nThe peak ({time.strftime("%H:%M:%S", time.gmtime(peak_at))} UTC): {made_of}\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--meters', type=int, default=100_000)
    parser.add_argument('--hours', type=int, default=6, help='ingestion hours in the backlog')
    parser.add_argument('--start', default='2026-05-10T00', help='the first ingestion hour')
    parser.add_argument('--work', type=Path, help='keep and reuse the log here')
    parser.add_argument('--interval', type=float, default=0.05, help='seconds between samples')
    parser.add_argument('--interactive', action='store_true',
                        help='the notebook a second time with the interactive kernel')
    parser.add_argument('--no-run-once', action='store_true',
                        help='the notebook only (a long backlog takes minutes more)')
    args = parser.parse_args()

    first = datetime.strptime(args.start, HOUR)
    end = first + timedelta(hours=args.hours)
    with tempfile.TemporaryDirectory(prefix='aquabill-memory-') as tmp:
        work = args.work or Path(tmp)
        bins = copy_binaries(work / 'bin')
        log = generate(bins['gen'], work / 'log', first, end, args.meters)
        kernels = ['lean', 'interactive'] if args.interactive else ['lean']
        for kernel in kernels:
            notebook_run(kernel, log, Path(tmp) / kernel, args)
        if args.no_run_once:
            return

        began = time.monotonic()
        done = subprocess.run(['/usr/bin/time', '-f', '%M', str(bins['run_once']), '-p',
                               'input_root', str(log), '-p', 'output_root',
                               str(Path(tmp) / 'run_once')], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f'run_once failed:\n{done.stderr[-3000:]}')
        peak_kb = int(done.stderr.strip().splitlines()[-1])
        print(f'examples/run_once on the same backlog: {time.monotonic() - began:.1f} s, peak '
              f'{peak_kb / 1024:,.0f} MB')


if __name__ == '__main__':
    main()
