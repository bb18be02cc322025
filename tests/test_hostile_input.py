"""Hostile input: every class of bad line, file and folder ends quarantined or reported with its
reason, the accounting identity holds, and the valid lines around the bad ones still count.
Expected values are worked out by hand from SPEC.md and the README's input rules."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable
from helpers import reading, run_once


FOLDER = 'ingest_hour=2026-05-10T12'


def line(**fields: object) -> bytes:
    """A reading of M1 (C1) at 12:05, 1.5 L, with `fields` replaced (None drops a field)."""
    base: dict[str, object] = {'meter_id': 'M1', 'customer_id': 'C1',
                               'recorded_at': '2026-05-10T12:05:00Z', 'usage_liters': 1.5,
                               'ingested_at': '2026-05-10T12:06:00Z'}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_every_bad_input_class(tmp_path: Path, run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    folder = log / FOLDER
    folder.mkdir(parents=True)
    lines = [
        (line(), 'accepted'),                                             # M1 12:05 1.5 L
        (b'{"meter_id": "M1", "customer_id": ', 'invalid_json'),
        (line(customer_id=None), 'bad_field'),                           # missing field
        (line(usage_liters='1.5'), 'bad_field'),                         # wrong type
        (line(usage_liters=-2), 'bad_usage'),                            # negative
        (line(usage_liters=2_000_000), 'bad_usage'),                     # implausibly large
        (b'{"meter_id":"M1","customer_id":"C1","recorded_at":"2026-05-10T12:07:00Z",'
         b'"usage_liters":1e30,"ingested_at":"x"}', 'bad_usage'),        # does not fit
        (line(recorded_at='2026-05-10T12:10:00'), 'bad_timestamp'),      # no offset
        (line(recorded_at='2026-05-10T14:00:00Z'), 'future'),            # after 13:05
        (line(recorded_at='2026-05-03T11:00:00Z'), 'late'),              # > 7 days before 12:00
        (b'\xff\xfe{"meter_id":"M1"}', 'not_utf8'),
        (b'', 'empty_line'),
        (line(meter_id='M2', recorded_at='2026-05-10T12:10:00Z', usage_liters=2,
              firmware='v2.1', battery=0.93), 'accepted'),              # unknown extra fields
        (line(), 'duplicate'),                                            # identical copy
        (line(usage_liters=9.9), 'conflict'),                             # another payload
        (b'{"padding":"' + b'x' * (50 * 1024 * 1024) + b'"}', 'line_too_long'),  # 50 MB
    ]
    (folder / 'a.jsonl').write_bytes(b'\n'.join(raw for raw, _ in lines) + b'\n')
    (folder / 'empty.jsonl').write_bytes(b'')
    (folder / 'README.txt').write_text('not part of the log')
    stray = log / 'ingest_hour=yesterday'
    stray.mkdir()
    (stray / 'b.jsonl').write_text(reading('M3', 'C3', '2026-05-09T10:00:00Z', '1') + '\n')

    done = run_once(run_once_binary, log, out)
    assert done.returncode == 0, done.stderr
    # Paths outside the layout are reported, not read.
    assert f'ignored {FOLDER}/README.txt: not a .jsonl file' in done.stdout
    assert 'ignored ingest_hour=yesterday: folder name is not an ingestion hour' in done.stdout

    quarantined = {'invalid_json', 'bad_field', 'bad_usage', 'bad_timestamp', 'future', 'late',
                   'not_utf8', 'empty_line', 'conflict', 'line_too_long'}
    expected = Counter(kind for _, kind in lines if kind in quarantined)
    q = DeltaTable(str(out / 'quarantine')).to_pyarrow_table().to_pylist()
    assert Counter(r['reason'] for r in q) == expected
    assert all(r['source_file'] == f'{FOLDER}/a.jsonl' for r in q)
    by_line = {r['line_number']: r for r in q}
    for number, (raw, kind) in enumerate(lines, start=1):
        if kind in quarantined:
            assert by_line[number]['reason'] == kind, (number, kind)
    huge = by_line[len(lines)]
    assert len(huge['raw_line']) < 70_000 and huge['raw_line'].endswith('bytes in all]')

    [m] = DeltaTable(str(out / 'run_metrics')).to_pyarrow_table().to_pylist()
    assert m['files'] == 2 and m['lines_read'] == len(lines)
    assert m['accepted'] == 2 and m['duplicates'] == 1 and m['conflicts'] == 1
    assert m['late'] == 1 and m['future'] == 1 and m['malformed'] == sum(expected.values()) - 3
    assert m['lines_read'] == (m['accepted'] + m['duplicates'] + m['conflicts'] + m['late']
                               + m['future'] + m['malformed'])
    # The valid lines of the same file count: 1.5 L (M1) + 2 L (M2, with extra fields).
    hourly = DeltaTable(str(out / 'hourly_usage')).to_pyarrow_table().to_pylist()
    assert [(r['customer_id'], r['usage_hour'], r['usage_ml'], r['reading_count'],
             r['meter_count']) for r in hourly] == [('C1', '2026-05-10T12', 3500, 2, 2)]


def test_file_behind_the_watermark_is_quarantined_whole(tmp_path: Path,
                                                        run_once_binary: Path) -> None:
    log, out = tmp_path / 'log', tmp_path / 'out'
    new = log / 'ingest_hour=2026-05-10T12'
    new.mkdir(parents=True)
    (new / 'a.jsonl').write_text(reading('M1', 'C1', '2026-05-10T12:05:00Z', '1') + '\n')
    assert run_once(run_once_binary, log, out).returncode == 0
    # A file lands in a folder the watermark (05-03T12) has passed: every line is late.
    old = log / 'ingest_hour=2026-05-02T09'
    old.mkdir()
    (old / 'b.jsonl').write_text(reading('M1', 'C1', '2026-05-02T09:05:00Z', '1') + '\n'
                                 + reading('M2', 'C1', '2026-05-02T09:10:00Z', '2') + '\n')
    done = run_once(run_once_binary, log, out)
    assert done.returncode == 0, done.stderr
    q = DeltaTable(str(out / 'quarantine')).to_pyarrow_table().to_pylist()
    assert sorted((r['line_number'], r['reason']) for r in q) == [
        (1, 'file_behind_watermark'), (2, 'file_behind_watermark')]
    metrics = DeltaTable(str(out / 'run_metrics')).to_pyarrow_table().to_pylist()
    assert sum(m['late'] for m in metrics) == 2
