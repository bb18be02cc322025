"""Exploring the tables from the notebook: `pipeline.sql` and `pipeline.tables` through the kernel,
checked against the plain-Python recomputation; a failing query leaves the kernel usable; the
row limit says when it cut rows; a filter on `usage_hour` reads only the hours it admits."""

from __future__ import annotations

import html
import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from aquabill_tools import nbexec
from conftest import Generate, RunNotebook
from expected import Expected, alerts, recompute
from helpers import hour_of_path

Table = list[list[str]]


def html_rows(result: nbexec.CellResult) -> Table:
    """The cells of the HTML table a query showed (header row excluded)."""
    shown = ''.join(o['data'].get('text/html', '') for o in result.outputs if 'data' in o)
    body = shown.split('<tbody>', 1)[1] if '<tbody>' in shown else ''
    return [[html.unescape(c) for c in re.findall(r'<td[^>]*>(.*?)</td>', row)]
            for row in re.findall(r'<tr>(.*?)</tr>', body)]


def hour_text(hour: int) -> str:
    """`YYYY-MM-DDTHH` of an hour index (hours since 1970-01-01T00 UTC)."""
    return datetime.fromtimestamp(hour * 3600, timezone.utc).strftime('%Y-%m-%dT%H')


def hour_of(text: str) -> int:
    """The hour index of `YYYY-MM-DDTHH`."""
    stamp = datetime.strptime(text, '%Y-%m-%dT%H').replace(tzinfo=timezone.utc)
    return int(stamp.timestamp()) // 3600


def sql(kernel: nbexec.Kernel, query: str) -> nbexec.CellResult:
    escaped = query.replace('\\', '\\\\').replace('"', '\\"')
    return kernel.execute(f'pipeline.sql("{escaped}")')


@pytest.fixture
def explored(tmp_path: Path, generate: Generate, run_notebook: RunNotebook
             ) -> tuple[Path, Expected, list[nbexec.CellResult]]:
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-03-01T00', '2026-03-03T00', '--meters', '12', '--seed', '8',
             '--malformed-rate', '0.02', '--files-per-hour', '1', '--leak-share', '0.5',
             '--offline-share', '0.9', '--max-outage-hours', '60')
    results = run_notebook(input_root=str(log), output_root=str(out))
    return out, recompute(log), results


def test_sql_answers_as_the_recomputation(explored: tuple[Path, Expected, list],
                                          kernel: nbexec.Kernel) -> None:
    out, exp, results = explored
    # The notebook's own examples ran: the largest running totals at the latest hour.
    latest = max(h for _, h in exp.cumulative)
    top = sorted(((-v[2], c) for (c, h), v in exp.cumulative.items() if h == latest))[:5]
    shown = html_rows(next(r for r in results if 'explore_largest' in r.tags))
    assert [(r[0], int(r[2])) for r in shown] == [(c, -v) for v, c in top]

    # A query over six hours, summed per customer.
    got = html_rows(sql(kernel, "SELECT customer_id, SUM(usage_ml) AS ml, SUM(reading_count) AS n "
                                "FROM hourly_usage WHERE usage_hour >= '2026-03-01T06' "
                                "AND usage_hour < '2026-03-01T12' GROUP BY customer_id "
                                "ORDER BY customer_id"))
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (customer, hour), (ml, n, _) in exp.hourly.items():
        if '2026-03-01T06' <= hour < '2026-03-01T12':
            want[customer][0] += ml
            want[customer][1] += n
    assert [(r[0], int(r[1]), int(r[2])) for r in got] == \
        [(c, ml, n) for c, (ml, n) in sorted(want.items())]

    # The quarantine by reason, as the recomputation counts malformed lines.
    got = html_rows(sql(kernel, 'SELECT COUNT(*) FROM quarantine'))
    assert int(got[0][0]) == exp.quarantined


def test_the_alerts_section_shows_the_recomputed_alerts(explored: tuple[Path, Expected, list]
                                                       ) -> None:
    _, exp, results = explored
    want = [dict(r) for r in alerts(exp)]
    open_by_kind: dict[str, list[int]] = defaultdict(list)
    for a in want:
        if a['is_open']:
            open_by_kind[str(a['kind'])].append(int(a['hours']))  # type: ignore[call-overload]
    assert {'continuous_flow', 'silent'} <= open_by_kind.keys(), 'the log has leaks and outages'
    shown = html_rows(next(r for r in results if 'alerts_open' in r.tags))
    assert [(r[0], int(r[1]), int(r[2])) for r in shown] == \
        [(k, len(v), max(v)) for k, v in sorted(open_by_kind.items())]
    leaks = sorted((a for a in want if a['kind'] == 'continuous_flow' and a['is_open']),
                   key=lambda a: (-int(a['hours']), str(a['meter_id'])))[:10]  # type: ignore
    shown = html_rows(next(r for r in results if 'alerts_leaks' in r.tags))
    assert shown == [[str(a[k]) for k in ('meter_id', 'customer_id', 'first_hour', 'last_hour',
                                          'hours', 'usage_ml')] for a in leaks]


def test_a_failing_query_leaves_the_kernel_usable(explored: tuple[Path, Expected, list],
                                                  kernel: nbexec.Kernel) -> None:
    out, exp, _ = explored
    failed = sql(kernel, 'SELECT no_such_column FROM hourly_usage')
    assert 'the query failed' in failed.text and 'no_such_column' in failed.text, failed.text
    failed = sql(kernel, 'SELEKT 1')
    assert 'the query failed' in failed.text, failed.text
    # The session goes on: another query, and the bills view.
    got = html_rows(sql(kernel, 'SELECT COUNT(*) FROM hourly_usage'))
    assert int(got[0][0]) == len(exp.hourly)
    assert 'to date' in kernel.execute('pipeline.bills()').text


def test_the_row_limit_says_when_it_cut(explored: tuple[Path, Expected, list],
                                        kernel: nbexec.Kernel) -> None:
    _, exp, _ = explored
    assert len(exp.cumulative) > 100
    cut = sql(kernel, 'SELECT * FROM cumulative_usage')
    assert len(html_rows(cut)) == 100
    assert 'the first 100 rows; the query returned more' in cut.text
    whole = sql(kernel,
                "SELECT customer_id FROM cumulative_usage WHERE usage_hour = '2026-03-01T05'")
    n = sum(1 for _, h in exp.cumulative if h == '2026-03-01T05')
    assert len(html_rows(whole)) == n and f'{n} rows' in whole.text


def test_tables_and_pruned_reads(explored: tuple[Path, Expected, list],
                                 kernel: nbexec.Kernel) -> None:
    out, exp, results = explored
    listed = nbexec.text_of(results, 'tables')
    assert re.search(rf'hourly_usage: version \d+, \d+ files, {len(exp.hourly)} rows', listed)
    assert re.search(rf'cumulative_usage: version \d+, \d+ files, {len(exp.cumulative)} rows',
                     listed), listed
    assert 'monthly_bills: version 0, 0 files, 0 rows' in listed
    assert 'total_m3 str' in listed, listed
    # Remove the data files of an hour: a query whose filter rules the hour out never reads them,
    # one that needs them fails with an error naming the table, and the kernel goes on.
    for f in (out / 'hourly_usage' / 'usage_hour=2026-03-01T00').glob('*.parquet'):
        f.unlink()
    later = html_rows(sql(kernel, "SELECT COUNT(*) FROM hourly_usage "
                                  "WHERE usage_hour >= '2026-03-01T01'"))
    assert int(later[0][0]) == sum(1 for _, h in exp.hourly if h >= '2026-03-01T01')
    every = sql(kernel, 'SELECT COUNT(*) FROM hourly_usage')
    assert 'the query failed' in every.text and 'hourly_usage' in every.text, every.text


def test_query_plans_only_on_request(explored: tuple[Path, Expected, list],
                                     kernel: nbexec.Kernel) -> None:
    """The scheduled run's step cells point to the plans without printing them;
    `pipeline.explain()` shows how dedup ran and the aggregation's plan."""
    _, _, results = explored
    steps = nbexec.text_of(results, 'dedup') + nbexec.text_of(results, 'hourly')
    assert 'pipeline.explain()' in steps, steps
    assert 'plan (optimized)' not in steps and 'AGGREGATE' not in steps, steps
    plans = kernel.execute('pipeline.explain()').text
    assert 'Dedup (one pass over the batch)' in plans, plans
    assert 'first copy wins' in plans and 'Aggregation plan (optimized)' in plans, plans
    assert 'AGGREGATE' in plans, plans


def test_a_customers_month_reads_the_final_days_from_the_day_tables(
        tmp_path: Path, generate: Generate, run_notebook: RunNotebook,
        kernel: nbexec.Kernel) -> None:
    """Twelve days of log (and the late February records replays bring): the latest four days
    the watermark passed (what one run copies) are in the day tables, which hold exactly the
    recomputed rows of those days; a customer's hours read through them as the recomputation
    says, and once another engine rewrites an hour of a copied day, from the hour files again."""
    log, out = tmp_path / 'log', tmp_path / 'out'
    generate(log, '2026-03-01T00', '2026-03-13T00', '--meters', '6', '--seed', '3',
             '--files-per-hour', '1')
    run_notebook(input_root=str(log), output_root=str(out))
    exp = recompute(log)
    latest = max(hour_of_path(str(f.relative_to(log))) for f in log.rglob('*.jsonl'))
    watermark = latest - 7 * 24
    # Days whose hours are all before the watermark's day are final; a run copies the latest
    # four of them.
    copied_before = hour_text(watermark - watermark % 24)
    assert copied_before >= '2026-03-04T00', copied_before
    final_days = sorted({h[:10] for _, h in exp.cumulative if h < copied_before})
    assert len(final_days) > 4, final_days
    copied = set(final_days[-4:])

    def day_rows(name: str, columns: tuple[str, ...]) -> list[tuple]:
        rows = DeltaTable(str(out / '_checkpoint' / name)).to_pyarrow_table().to_pylist()
        return sorted(tuple(r[c] for c in columns) for r in rows)

    assert day_rows('cumulative_usage_days',
                    ('customer_id', 'usage_hour', 'billing_month', 'usage_ml', 'cumulative_ml',
                     'is_final')) == \
        sorted((c, h, *v, True) for (c, h), v in exp.cumulative.items() if h[:10] in copied)
    assert day_rows('hourly_usage_days',
                    ('customer_id', 'usage_hour', 'usage_ml', 'reading_count', 'meter_count')) == \
        sorted((c, h, *v) for (c, h), v in exp.hourly.items() if h[:10] in copied)

    # One customer's hours on both sides of the copied days, both tables joined (the notebook's
    # explore query over a window shorter than the row limit).
    customer = sorted({c for c, _ in exp.cumulative})[0]
    window = (hour_text(hour_of(copied_before) - 40), hour_text(hour_of(copied_before) + 20))
    query = ('SELECT h.usage_hour, h.usage_ml, h.reading_count, c.cumulative_ml '
             'FROM hourly_usage h JOIN cumulative_usage c '
             'ON h.customer_id = c.customer_id AND h.usage_hour = c.usage_hour '
             f"WHERE h.customer_id = '{customer}' AND h.usage_hour >= '{window[0]}' "
             f"AND h.usage_hour < '{window[1]}' AND c.customer_id = '{customer}' "
             f"AND c.usage_hour >= '{window[0]}' AND c.usage_hour < '{window[1]}' "
             'ORDER BY h.usage_hour')

    def want() -> Table:
        return [[h, str(ml), str(n), str(exp.cumulative[(c, h)][2])]
                for (c, h), (ml, n, _) in sorted(exp.hourly.items())
                if c == customer and window[0] <= h < window[1]]

    shown = html_rows(sql(kernel, query))
    assert shown == want() and len(shown) > 40, shown

    # Another engine rewrites an hour of a copied day: that day is read by hour again.
    rewritten = hour_text(hour_of(copied_before) - 30)
    hour_rows = DeltaTable(str(out / 'cumulative_usage')).to_pyarrow_table(
        filters=[('usage_hour', '=', rewritten)])
    rows = hour_rows.to_pylist()
    for r in rows:
        r['cumulative_ml'] += 1_000_000
        key = (r['customer_id'], r['usage_hour'])
        month, usage, total = exp.cumulative[key]
        exp.cumulative[key] = (month, usage, total + 1_000_000)
    write_deltalake(str(out / 'cumulative_usage'),
                    pa.Table.from_pylist(rows, schema=hour_rows.schema),
                    mode='overwrite', predicate=f"usage_hour = '{rewritten}'",
                    partition_by=['usage_hour'])
    shown = html_rows(sql(kernel, query))
    assert shown == want(), shown
    assert any(r[0] == rewritten for r in shown)
