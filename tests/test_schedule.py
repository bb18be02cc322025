"""The hourly schedule's wrapper: dated executed notebooks and logs, never two runs at once."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

from deltalake import DeltaTable

from conftest import ROOT, Generate

SCRIPT = ROOT / 'scripts' / 'scheduled-run.sh'


def scheduled_run(runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, AQUABILL_RUNS=str(runs)))


def test_scheduled_runs_keep_dated_outputs_and_never_overlap(
        tmp_path: Path, generate: Generate) -> None:
    log, out, runs = tmp_path / 'log', tmp_path / 'out', tmp_path / 'runs'
    generate(log, '2026-05-01T00', '2026-05-01T03', '--meters', '6', '--seed', '4')
    params = ('-p', 'input_root', str(log), '-p', 'output_root', str(out))

    done = scheduled_run(runs, *params)
    assert done.returncode == 0, done.stdout + done.stderr
    notebooks = sorted(runs.glob('*/*/*/*.ipynb'))
    logs = sorted(runs.glob('*/*/*/*.log'))
    assert len(notebooks) == 1 and len(logs) == 1
    assert notebooks[0].with_suffix('.log') == logs[0]
    text = logs[0].read_text()
    assert 'check: read' in text, 'the log holds the cells\' text output'
    assert 'ended with status 0' in text
    assert len(DeltaTable(str(out / 'run_metrics')).to_pyarrow_table()) == 1

    # A run still holding the lock: the next tick is skipped, nothing is written.
    with open(runs / '.schedule.lock', 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        skipped = scheduled_run(runs, *params)
    assert skipped.returncode == 75
    assert 'still going' in skipped.stderr
    assert len(list(runs.glob('*/*/*/*.ipynb'))) == 1

    # A failing run: non-zero status, and its notebook and log say why.
    failed = scheduled_run(runs, '-p', 'input_root', str(tmp_path / 'missing'),
                           '-p', 'output_root', str(out))
    assert failed.returncode not in (0, 75)
    failed_logs = sorted(set(runs.glob('*/*/*/*.log')) - set(logs))
    assert len(failed_logs) == 1
    assert 'input_root' in failed_logs[0].read_text()
