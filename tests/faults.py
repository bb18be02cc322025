"""Helpers of the reliability tests: one pipeline run in its own process (`run_once`), and the
full state of a set of tables (contents, checkpoint, Delta transactions) to compare runs by."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable

TABLES = ('hourly_usage', 'cumulative_usage', 'monthly_bills', 'quarantine', 'run_metrics')
# run_metrics columns that differ between two runs of the same batch (times; table versions and
# file counts, which vacuum and compaction commits move).
TIMING = ('started_at', 'duration_ms', 'plan_ms', 'parse_ms', 'dedup_ms', 'hourly_usage_ms',
          'cumulative_usage_ms', 'finish_ms', 'hourly_usage_version', 'hourly_usage_files',
          'cumulative_usage_version', 'cumulative_usage_files')


def run_once(binary: Path, log: Path, out: Path, cap: int = 0, crash_at: int | None = None,
             tz: str = 'UTC', rebuild: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop('AQUABILL_CRASH_AT', None)
    if crash_at is not None:
        env['AQUABILL_CRASH_AT'] = str(crash_at)
    args = [str(binary), '-p', 'input_root', str(log), '-p', 'output_root', str(out),
            '-p', 'billing_timezone', tz, '-p', 'batch_cap', str(cap)]
    return subprocess.run(args + (['-p', 'rebuild', 'true'] if rebuild else []),
                          capture_output=True, text=True, env=env, timeout=300)


def finish(binary: Path, log: Path, out: Path, cap: int = 0, attempts: int = 200,
           tz: str = 'UTC') -> None:
    """Runs until no new files are left."""
    for _ in range(attempts):
        done = run_once(binary, log, out, cap, tz=tz)
        assert done.returncode == 0, done.stderr
        if 'no new files' in done.stdout:
            return
    raise AssertionError('runs never ran out of files')


def crashed(proc: subprocess.CompletedProcess[str]) -> str | None:
    """The durable step a run crashed after, or None if it did not crash."""
    for line in proc.stderr.splitlines():
        if 'crash injected after durable step' in line:
            return line.split(': ', 2)[-1]
    return None


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[tuple]:
    """A table's rows as sorted tuples (without the columns in `drop`)."""
    table = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in table)


def state(out: Path) -> dict[str, object]:
    """Everything a run leaves behind that must not depend on crashes and reruns."""
    found: dict[str, object] = {t: rows(out / t, TIMING) for t in TABLES}
    found['dedup_readings'] = rows(out / '_checkpoint' / 'dedup_readings')
    found['dedup_keys'] = rows(out / '_checkpoint' / 'dedup_keys')
    found['dedup_meters'] = rows(out / '_checkpoint' / 'dedup_meters')
    checkpoint = json.loads((out / '_checkpoint' / 'checkpoint.json').read_text())
    found['checkpoint'] = checkpoint
    return found


def batches_applied_once(out: Path) -> None:
    """Asserts that no table has two commits for one batch (app transaction version)."""
    for table in (*TABLES, '_checkpoint/dedup_keys', '_checkpoint/dedup_meters',
                  '_checkpoint/dedup_readings'):
        versions: Counter[int] = Counter()
        for commit in sorted((out / table / '_delta_log').glob('*.json')):
            for line in commit.read_text().splitlines():
                action = json.loads(line)
                if 'txn' in action and action['txn']['appId'] == 'aquabill':
                    versions[action['txn']['version']] += 1
        twice = {v: n for v, n in versions.items() if n > 1}
        assert not twice, f'{table}: batches committed more than once: {twice}'
