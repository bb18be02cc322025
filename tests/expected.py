"""Independent recomputation of the pipeline's tables from the raw log, in plain Python.

It follows SPEC.md directly, shares no code with the pipeline, and is deliberately simple: one
pass over every line in ingestion order (folder, then file name, then line), a dict of the first
copy of each reading, then sums. Tests compare the Delta tables with what it returns.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
FIELDS = ('meter_id', 'customer_id', 'recorded_at', 'usage_liters', 'ingested_at')


@dataclass
class Expected:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    future: int = 0
    malformed: int = 0
    # (customer_id, usage_hour) -> (usage_ml, reading_count, meter_count)
    hourly: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    # (customer_id, usage_hour) -> (billing_month, usage_ml, cumulative_ml)
    cumulative: dict[tuple[str, str], tuple[str, int, int]] = field(default_factory=dict)
    # (meter_id, recording hour) -> usage_ml of the accepted readings
    meter_hours: dict[tuple[str, datetime], int] = field(default_factory=dict)
    # meter_id -> the ingestion hours of the folders holding a valid record of it
    heard: dict[str, set[datetime]] = field(default_factory=dict)
    # meter_id -> the customer of its last valid record in ingestion order
    meter_customer: dict[str, str] = field(default_factory=dict)
    # every ingestion-hour folder with a file, ascending
    folders: list[datetime] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        return self.conflicts + self.late + self.future + self.malformed


def hour_name(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime('%Y-%m-%dT%H')


def log_files(root: Path) -> list[tuple[datetime, Path]]:
    """The log's files in ingestion order, with their folder's hour."""
    out = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not folder.name.startswith('ingest_hour='):
            continue
        hour = datetime.strptime(folder.name.removeprefix('ingest_hour='), '%Y-%m-%dT%H')
        hour = hour.replace(tzinfo=timezone.utc)
        for f in sorted(folder.iterdir()):
            if f.name.endswith('.jsonl') and not f.name.startswith('.'):
                out.append((hour, f))
    return out


def parse(raw: bytes) -> tuple[str, str, datetime, int] | None:
    """(meter_id, customer_id, recorded_at, usage_ml), or None for a malformed line."""
    try:
        obj = json.loads(raw.decode('utf-8'), parse_float=Decimal, parse_int=Decimal)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or any(f not in obj for f in FIELDS):
        return None
    meter, customer, recorded, usage = (obj[f] for f in FIELDS[:4])
    if not all(isinstance(v, str) for v in (meter, customer, recorded, obj['ingested_at'])):
        return None
    if not isinstance(usage, Decimal) or not meter.strip() or not customer.strip():
        return None
    try:
        t = datetime.fromisoformat(recorded)
        ml = usage * 1000
    except (ValueError, InvalidOperation):
        return None
    if t.tzinfo is None or 'T' not in recorded or ml < 0 or ml != ml.to_integral_value():
        return None
    return meter, customer, t, int(ml)


def recompute(root: Path, skew_minutes: int = 5, tz: str = 'UTC') -> Expected:
    exp = Expected()
    first: dict[tuple[str, datetime], tuple[str, int]] = {}
    readings: list[tuple[str, str, datetime, int]] = []
    for ingest_hour, path in log_files(root):
        if not exp.folders or exp.folders[-1] != ingest_hour:
            exp.folders.append(ingest_hour)
        data = path.read_bytes()
        lines = data.split(b'\n')
        if lines and lines[-1] == b'':
            lines.pop()
        for raw in lines:
            exp.lines += 1
            rec = parse(raw)
            if rec is None:
                exp.malformed += 1
                continue
            meter, customer, t, ml = rec
            exp.heard.setdefault(meter, set()).add(ingest_hour)
            exp.meter_customer[meter] = customer
            if t < ingest_hour - timedelta(days=7):
                exp.late += 1
                continue
            if t > ingest_hour + HOUR + timedelta(minutes=skew_minutes):
                exp.future += 1
                continue
            key = (meter, t)
            if key in first:
                if first[key] == (customer, ml):
                    exp.duplicates += 1
                else:
                    exp.conflicts += 1
                continue
            first[key] = (customer, ml)
            readings.append(rec)
            exp.accepted += 1
            hour = t.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
            exp.meter_hours[(meter, hour)] = exp.meter_hours.get((meter, hour), 0) + ml

    sums: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, set()])
    for meter, customer, t, ml in readings:
        s = sums[(customer, hour_name(t))]
        s[0] += ml
        s[1] += 1
        s[2].add(meter)
    exp.hourly = {k: (v[0], v[1], len(v[2])) for k, v in sums.items()}

    zone = ZoneInfo(tz)
    months: dict[str, dict] = defaultdict(lambda: {'customers': set(), 'last': None, 'first': None})
    for (customer, hour), (ml, _, _) in exp.hourly.items():
        t = datetime.strptime(hour, '%Y-%m-%dT%H').replace(tzinfo=timezone.utc)
        local = t.astimezone(zone)
        month = f'{local.year:04d}-{local.month:02d}'
        m = months[month]
        m['customers'].add(customer)
        m['last'] = max(m['last'] or t, t)
        m['first'] = local.replace(day=1, hour=0, minute=0, second=0).astimezone(timezone.utc)
    for month, m in months.items():
        for customer in m['customers']:
            total = 0
            t = m['first']
            while t <= m['last']:
                hour = hour_name(t)
                usage = exp.hourly.get((customer, hour), (0, 0, 0))[0]
                total += usage
                exp.cumulative[(customer, hour)] = (month, usage, total)
                t += HOUR
    return exp


@dataclass(frozen=True)
class Bill:
    """A `monthly_bills` row, without the batch that wrote it."""
    total_ml: int
    last_hour: str
    hours_with_readings: int
    hours_since_first_reading: int
    meters_reported: int


def watermark(root: Path) -> datetime:
    """The first hour not final after every file of the log is committed: the latest ingestion
    hour minus 7 days."""
    return max(hour for hour, _ in log_files(root)) - timedelta(days=7)


def closed_bills(exp: Expected, root: Path, tz: str = 'UTC') -> dict[tuple[str, str], Bill]:
    """(customer_id, billing month) -> bill, for the months whose end the watermark passed."""
    zone = ZoneInfo(tz)
    wm = watermark(root)
    by_month: dict[tuple[str, str], list[tuple[datetime, int, int]]] = defaultdict(list)
    ends: dict[str, datetime] = {}
    for (customer, hour), (ml, _, meters) in exp.hourly.items():
        t = datetime.strptime(hour, '%Y-%m-%dT%H').replace(tzinfo=timezone.utc)
        local = t.astimezone(zone)
        month = f'{local.year:04d}-{local.month:02d}'
        by_month[(customer, month)].append((t, ml, meters))
        next_first = (local.replace(day=28) + timedelta(days=4)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0)
        # Local midnight of the next month's first day, whatever the offset then.
        ends[month] = datetime(next_first.year, next_first.month, 1, tzinfo=zone).astimezone(
            timezone.utc)
    bills = {}
    for (customer, month), hours in by_month.items():
        end = ends[month]
        if end > wm:
            continue
        first = min(t for t, _, _ in hours)
        bills[(customer, month)] = Bill(
            total_ml=sum(ml for _, ml, _ in hours),
            last_hour=hour_name(end - HOUR),
            hours_with_readings=len(hours),
            hours_since_first_reading=int((end - first) / HOUR),
            meters_reported=max(m for _, _, m in hours),
        )
    return bills


def alerts(exp: Expected, flow_hours: int = 24, silent_hours: int = 24, close_hours: int = 48,
           tz: str = 'UTC') -> list[tuple]:
    """The `meter_alerts` rows (without the batches that opened and closed them) as sorted
    tuples of (column, value), from the whole log at once.

    Continuous flow: a meter's hours with readings in time order; a stretch of flow hours (usage
    above 0) ends at an hour whose readings sum to 0; hours without readings are skipped. A
    stretch with at least `flow_hours` flow hours is an episode, open if no dry hour follows.
    Silence: the log's folders in order from a meter's first; a folder without a record of the
    meter is quiet once a later folder exists; `silent_hours` quiet folders in a row are an
    episode, closed by the next folder with a record of it.
    Bills at risk: once the watermark (the latest folder minus 7 days) is within `close_hours`
    of a billing month's end, a meter's hours from its first reading of the month to the end
    without readings; open until the watermark passes the end."""
    out: list[dict[str, object]] = []

    def row(meter: str, kind: str, first: datetime, last: datetime, is_open: bool, hours: int,
            usage_ml: int, threshold: int) -> None:
        out.append({'meter_id': meter, 'customer_id': exp.meter_customer[meter], 'kind': kind,
                    'first_hour': hour_name(first), 'last_hour': hour_name(last),
                    'is_open': is_open, 'hours': hours, 'usage_ml': usage_ml,
                    'threshold_hours': threshold})

    by_meter: dict[str, dict[datetime, int]] = defaultdict(dict)
    for (meter, hour), ml in exp.meter_hours.items():
        by_meter[meter][hour] = ml
    for meter, hours in by_meter.items():
        stretch: list | None = None  # [first, last, flow hours, usage]
        for hour in sorted(hours):
            if hours[hour] == 0:
                if stretch and stretch[2] >= flow_hours:
                    row(meter, 'continuous_flow', stretch[0], stretch[1], False, stretch[2],
                        stretch[3], flow_hours)
                stretch = None
                continue
            stretch = stretch or [hour, hour, 0, 0]
            stretch[1] = hour
            stretch[2] += 1
            stretch[3] += hours[hour]
        if stretch and stretch[2] >= flow_hours:
            row(meter, 'continuous_flow', stretch[0], stretch[1], True, stretch[2], stretch[3],
                flow_hours)

    for meter, heard in exp.heard.items():
        quiet: list[datetime] = []
        for i, folder in enumerate(exp.folders):
            if folder < min(heard):
                continue
            if folder in heard:
                if len(quiet) >= silent_hours:
                    row(meter, 'silent', quiet[0], quiet[-1], False, len(quiet), 0,
                        silent_hours)
                quiet = []
            elif i + 1 < len(exp.folders):
                quiet.append(folder)
        if len(quiet) >= silent_hours:
            row(meter, 'silent', quiet[0], quiet[-1], True, len(quiet), 0, silent_hours)

    zone = ZoneInfo(tz)
    wm = exp.folders[-1] - timedelta(days=7) if exp.folders else None
    months: dict[tuple[str, datetime], list[datetime]] = defaultdict(list)
    usage: dict[tuple[str, datetime], int] = defaultdict(int)
    for (meter, hour), ml in exp.meter_hours.items():
        local = hour.astimezone(zone)
        next_first = (local.replace(day=28) + timedelta(days=4)).replace(day=1)
        end = datetime(next_first.year, next_first.month, 1, tzinfo=zone).astimezone(timezone.utc)
        months[(meter, end)].append(hour)
        usage[(meter, end)] += ml
    for (meter, end), hours_with_readings in months.items():
        if wm is None or wm < end - timedelta(hours=close_hours):
            continue
        first = min(hours_with_readings)
        missing = int((end - first) / HOUR) - len(hours_with_readings)
        if missing > 0:
            row(meter, 'bill_at_risk', first, end - HOUR, wm < end, missing, usage[(meter, end)],
                close_hours)
    return sorted(tuple(r.items()) for r in out)
