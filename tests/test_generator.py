"""Properties of the synthetic log generator, checked on the files it writes."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from conftest import Generate

FOLDER = re.compile(r'^ingest_hour=\d{4}-\d{2}-\d{2}T\d{2}$')


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def records(root: Path) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(root.rglob('*.jsonl')):
        for line in path.read_text().splitlines():
            out.append((path.parent.name, json.loads(line)))
    return out


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_layout_one_folder_per_ingestion_hour(tmp_path: Path, generate: Generate) -> None:
    summary = generate(tmp_path, '2026-03-01T00', '2026-03-01T05', '--meters', '30')
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [f'ingest_hour=2026-03-01T{h:02d}' for h in range(5)]
    assert all(FOLDER.match(f) for f in folders)
    files = list(tmp_path.rglob('*'))
    assert not [f for f in files if f.name.startswith('.')], 'no temporary file is left'
    rows = records(tmp_path)
    assert len(rows) == summary['records'] > 0
    for folder, r in rows:
        assert set(r) == {'meter_id', 'customer_id', 'recorded_at', 'usage_liters', 'ingested_at'}
        assert folder == 'ingest_hour=' + ts(r['ingested_at']).strftime('%Y-%m-%dT%H')
        usage = Decimal(str(r['usage_liters']))
        assert usage >= 0 and (usage * 1000) == (usage * 1000).to_integral_value()
        assert ts(r['recorded_at']).tzinfo is not None


def test_calls_only_add_files(tmp_path: Path, generate: Generate) -> None:
    generate(tmp_path, '2026-03-01T00', '2026-03-01T03', '--meters', '20')
    before = snapshot(tmp_path)
    generate(tmp_path, '2026-03-01T02', '2026-03-01T04', '--meters', '20')
    generate(tmp_path, '2026-03-01T02', '2026-03-01T04', '--meters', '20')
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before, 'existing files are untouched'
    hour2 = [k for k in after if k.startswith('ingest_hour=2026-03-01T02/')]
    assert len(hour2) == 3, 'each call adds its own file, names never collide'


def test_same_seed_same_records(tmp_path: Path, generate: Generate) -> None:
    args = ('--meters', '40', '--seed', '7', '--malformed-rate', '0.01')
    generate(tmp_path / 'a', '2026-03-01T00', '2026-03-01T06', *args)
    generate(tmp_path / 'b', '2026-03-01T00', '2026-03-01T06', *args)
    generate(tmp_path / 'c', '2026-03-01T00', '2026-03-01T06', '--meters', '40', '--seed', '8')
    contents = {d: sorted(p.read_bytes() for p in (tmp_path / d).rglob('*.jsonl')) for d in 'abc'}
    assert contents['a'] == contents['b']
    assert contents['a'] != contents['c']


def test_adjacent_windows_deliver_each_record_once(tmp_path: Path, generate: Generate) -> None:
    args = ('--meters', '40', '--seed', '3')
    generate(tmp_path / 'whole', '2026-03-01T00', '2026-03-01T06', *args)
    generate(tmp_path / 'split', '2026-03-01T00', '2026-03-01T02:30:00Z', *args)
    generate(tmp_path / 'split', '2026-03-01T02:30:00Z', '2026-03-01T06', *args)
    whole = sorted(json.dumps(r, sort_keys=True) for _, r in records(tmp_path / 'whole'))
    split = sorted(json.dumps(r, sort_keys=True) for _, r in records(tmp_path / 'split'))
    assert whole == split


def test_outages_from_starts_with_every_meter_reporting(tmp_path: Path,
                                                        generate: Generate) -> None:
    common = ('--meters', '300', '--offline-share', '0.5', '--seed', '5')
    start = datetime.fromisoformat('2026-03-08T00:00:00+00:00')

    def earliest(folder: Path, *extra: str) -> float:
        """Seconds from the window's start to the earliest reading recorded in it."""
        generate(folder, '2026-03-08T00', '2026-03-08T06', *common, *extra)
        return min((ts(r['recorded_at']) - start).total_seconds() for _, r in records(folder))

    # A fleet running long before the window: replays reach back hours before it.
    assert earliest(tmp_path / 'running') < -2 * 3600
    # No outage before the start: what was recorded before it arrives live (30 minutes at
    # most) or as a retry (59 minutes after its first copy).
    assert earliest(tmp_path / 'fresh', '--outages-from', '2026-03-08T00') >= -(30 + 59) * 60


def test_duplicates_delays_and_replays_are_as_claimed(tmp_path: Path, generate: Generate) -> None:
    generate(tmp_path, '2026-03-01T00', '2026-03-08T00', '--meters', '60',
             '--duplicate-rate', '0.05', '--offline-share', '0.3', '--seed', '11')
    rows = [r for _, r in records(tmp_path)]
    copies = Counter((r['meter_id'], r['recorded_at']) for r in rows)
    duplicates = sum(n - 1 for n in copies.values())
    # Each reading is retried with probability 0.05: the share of retries lies within five
    # standard deviations of it (a retry of a reading sent before the window may land in it,
    # one sent at its end may not: a few either way).
    rate, n = 0.05, len(copies)
    band = 5 * math.sqrt(rate * (1 - rate) / n)
    assert rate - band < duplicates / n < rate + band, (duplicates, n)
    assert max(copies.values()) == 2
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_key.setdefault((r['meter_id'], r['recorded_at']), []).append(r)
    crossing = 0
    for pair in (v for v in by_key.values() if len(v) == 2):
        a, b = sorted(pair, key=lambda r: r['ingested_at'])
        assert {k: v for k, v in a.items() if k != 'ingested_at'} == \
            {k: v for k, v in b.items() if k != 'ingested_at'}, 'a retry repeats the payload'
        gap = (ts(b['ingested_at']) - ts(a['ingested_at'])).total_seconds()
        assert 60 <= gap < 3600, 'retries arrive less than an hour apart'
        crossing += ts(a['ingested_at']).hour != ts(b['ingested_at']).hour
    assert crossing > 0, 'some retries land in the next hour folder'
    delays = [(ts(r['ingested_at']) - ts(r['recorded_at'])).total_seconds() for r in rows]
    assert min(delays) > 0
    assert max(delays) < 7 * 24 * 3600, 'replays stay within the 7-day watermark'
    live = [d for d in delays if d <= 30 * 60]
    assert len(live) > len(rows) / 2, 'most readings arrive live, within 30 minutes'
    replayed = [d for d in delays if d > 30 * 60 + 3600]
    assert replayed, 'outages are replayed hours later'
    # Out of order: some meter's readings arrive in another order than they were recorded.
    by_meter: dict[str, list[dict]] = {}
    for r in rows:
        by_meter.setdefault(r['meter_id'], []).append(r)
    inversions = 0
    for readings in by_meter.values():
        arrived = sorted(readings, key=lambda r: ts(r['ingested_at']))
        inversions += sum(ts(b['recorded_at']) < ts(a['recorded_at'])
                          for a, b in zip(arrived, arrived[1:]))
    assert inversions > 0, 'some readings arrive after later ones of their meter'
