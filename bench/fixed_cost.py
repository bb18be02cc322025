"""A scheduled run's fixed cost: the notebook through `aquabill-papermill` with no new files.

Processes the sample log once (so the tables exist and every file is committed), then runs the
notebook again `--runs` times with nothing new, as the schedule does in a quiet hour, and prints:

- the whole command's wall time (median and range), split into papermill's own start (Python,
  imports, reading the notebook), the kernel's start (launcher, evcxr's first compilation) and
  the cells (papermill's per-cell durations), and what is left (writing the executed notebook,
  shutting the kernel down);
- each code cell's median duration, by its tag.

Usage (from the repository root, after `bash scripts/setup.sh`):
    . scripts/env.sh && .venv/bin/python bench/fixed_cost.py [--runs 5] [--work DIR]

Not part of the test suite; the figures go in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'hourly_billing.ipynb'
SAMPLE = ROOT / 'data' / 'sample'
PAPERMILL = Path(sys.executable).parent / 'aquabill-papermill'


def run(out: Path, executed: Path) -> float:
    """One scheduled run; its wall time in seconds."""
    began = time.monotonic()
    subprocess.run([str(PAPERMILL), str(NOTEBOOK), str(executed), '-p', 'input_root', str(SAMPLE),
                    '-p', 'output_root', str(out)], check=True, capture_output=True)
    return time.monotonic() - began


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace('Z', '+00:00')).timestamp()


def parts(executed: Path, wall: float) -> dict[str, float]:
    """The run's wall time split by papermill's timestamps, and each code cell's duration."""
    nb = json.loads(executed.read_text())
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code']
    timed = [c['metadata']['papermill'] for c in cells]
    began = stamp(nb['metadata']['papermill']['start_time'])
    first = stamp(timed[0]['start_time'])
    last = stamp(timed[-1]['end_time'])
    out = {
        'kernel start': first - began,
        'cells': last - first,
    }
    out['papermill start and end'] = wall - out['kernel start'] - out['cells']
    for cell, t in zip(cells, timed):
        tags = cell.get('metadata', {}).get('tags', [])
        name = tags[0] if tags else ''.join(cell['source']).strip().splitlines()[0][:30]
        out[f'  {name}'] = t['duration']
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--work', type=Path, help='keep the tables and executed notebooks here')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='aquabill-fixed-') as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        out = work / 'tables'
        first = run(out, work / 'first.ipynb')
        print(f'first run (the whole sample, {len(list(SAMPLE.rglob("*.jsonl")))} files): '
              f'{first:.1f} s')
        walls: list[float] = []
        split: dict[str, list[float]] = {}
        for n in range(args.runs):
            executed = work / f'quiet-{n}.ipynb'
            wall = run(out, executed)
            walls.append(wall)
            for name, seconds in parts(executed, wall).items():
                split.setdefault(name, []).append(seconds)
        print(f'scheduled run with no new files, {args.runs} runs: median '
              f'{statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})')
        for name, seconds in split.items():
            print(f'{name:<32} {statistics.median(seconds):6.2f} s')


if __name__ == '__main__':
    main()
