//! `cumulative_usage` rows, as Polars and plain planning: which hours of which billing months a
//! run recomputes ([`plan_months`], [`final_rewrites`]), and one hour of a month's dense running
//! total from the hour before ([`next_cumulative_hour`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;
use polars::prelude::DataFrame;

use super::merge::{overflow, sum_by_customer};
use crate::error::{Error, Result};
use crate::hours::{billing_month, month_end_hour, month_start_hour};
use crate::table::{CUMULATIVE_USAGE, Values, col};

/// What a run recomputes in one billing month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPlan {
    /// The month's first hour (UTC hour index).
    pub start: i64,
    /// The first hour after the month.
    pub end: i64,
    /// The first hour recomputed: the earliest hour that got new usage, or the first hour new
    /// to the month, whichever comes first.
    pub from: i64,
    /// The last hour with hourly data.
    pub last: i64,
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// The stored hour whose running totals the recomputation continues from (`from - 1`), or
    /// none when it starts at the month's first hour.
    pub totals_from: Option<i64>,
    /// When the recomputation starts at the month's first hour: the latest stored hour of the
    /// month, whose rows name every customer the month already has (the table is dense).
    pub customers_from: Option<i64>,
}

/// The months whose running totals change in a run, and from which hour.
///
/// `changed` holds the hours that got new usage, `hourly` the hour partitions of
/// `hourly_usage` after the run, `stored` those of `cumulative_usage` before it.
pub fn plan_months(
    changed: &BTreeSet<i64>,
    hourly: &BTreeSet<i64>,
    stored: &BTreeSet<i64>,
    tz: Tz,
) -> Result<Vec<MonthPlan>> {
    // Earliest changed hour per month, keyed by the month's first hour.
    let mut first_changed: BTreeMap<i64, i64> = BTreeMap::new();
    for &hour in changed {
        let e = first_changed
            .entry(month_start_hour(hour, tz)?)
            .or_insert(hour);
        *e = (*e).min(hour);
    }
    let mut months = Vec::new();
    for (start, first) in first_changed {
        let end = month_end_hour(start, tz)?;
        let Some(&last) = hourly.range(start..end).next_back() else {
            continue;
        };
        let latest_stored = stored.range(start..end).next_back().copied();
        // Hours the month had no rows for yet are new too.
        let next_new = latest_stored.map_or(start, |h| h + 1);
        let from = first.min(next_new).max(start);
        if from > last {
            continue;
        }
        months.push(MonthPlan {
            start,
            end,
            from,
            last,
            month: billing_month(start, tz)?,
            totals_from: (from > start).then_some(from - 1),
            customers_from: if from == start { latest_stored } else { None },
        });
    }
    Ok(months)
}

/// Stored hours that the watermark passed in this run and no month recomputes: they are
/// rewritten with the same totals, now final.
pub fn final_rewrites(
    stored: &BTreeSet<i64>,
    watermark_before: Option<i64>,
    watermark_after: Option<i64>,
    months: &[MonthPlan],
) -> BTreeSet<i64> {
    let (Some(before), Some(after)) = (watermark_before, watermark_after) else {
        return BTreeSet::new();
    };
    stored
        .range(before..after)
        .copied()
        .filter(|h| !months.iter().any(|m| (m.from..=m.last).contains(h)))
        .collect()
}

/// One hour of a billing month's dense running total.
///
/// `totals` holds each customer's total through the hour before (`customer_id`,
/// `cumulative_ml`; empty before the month's first hour), `usage` the hour's usage
/// (`customer_id`, `usage_ml`). Every customer in either gets a row: `usage_ml` (0 when none)
/// and `cumulative_ml = total(h-1) + usage(h)`, sorted by customer. The output's `customer_id`
/// and `cumulative_ml` are the next hour's `totals`.
pub fn next_cumulative_hour(
    totals: &DataFrame,
    usage: &DataFrame,
    hour: i64,
    billing_month: &str,
    is_final: bool,
) -> Result<DataFrame> {
    let err = Error::polars("cumulative");
    let (customers, [before, usage_ml]) = sum_by_customer([
        (totals, &[col::CUMULATIVE_ML, ""]),
        (usage, &["", col::USAGE_ML]),
    ])
    .map_err(err)?;
    let cumulative_ml = before
        .iter()
        .zip(&usage_ml)
        .map(|(b, u)| b.checked_add(*u).ok_or_else(overflow))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(err)?;
    let n = customers.len();
    CUMULATIVE_USAGE.frame(vec![
        Values::Built(customers),
        Values::Long(vec![hour; n]),
        Values::Str(vec![billing_month.into(); n]),
        Values::Long(usage_ml),
        Values::Long(cumulative_ml),
        Values::Bool(vec![is_final; n]),
    ])
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::*;
    use crate::hours::parse_hour;

    fn h(text: &str) -> i64 {
        parse_hour(text).unwrap_or_else(|| panic!("{text} is an hour"))
    }

    fn hours(texts: &[&str]) -> BTreeSet<i64> {
        texts.iter().map(|t| h(t)).collect()
    }

    #[test]
    fn an_hour_continues_every_total() -> Result<(), Box<dyn std::error::Error>> {
        let totals = df!("customer_id" => ["A", "B"], "cumulative_ml" => [100i64, 50])?;
        // Unsorted, and one customer in two rows (as two files of one partition would be).
        let usage = df!("customer_id" => ["C", "B", "B"], "usage_ml" => [3i64, 7, 1])?;
        let rows = next_cumulative_hour(&totals, &usage, 10, "2026-06", true)?;
        let expected = df!(
            "customer_id" => ["A", "B", "C"],
            "usage_hour" => [10i64, 10, 10],
            "billing_month" => ["2026-06", "2026-06", "2026-06"],
            "usage_ml" => [0i64, 8, 3],
            "cumulative_ml" => [100i64, 58, 3],
            "is_final" => [true, true, true],
        )?;
        assert!(rows.equals(&expected), "{rows}");
        let empty =
            next_cumulative_hour(&totals.head(Some(0)), &usage.head(Some(0)), 10, "", false)?;
        assert_eq!(empty.height(), 0);
        Ok(())
    }

    #[test]
    fn months_recompute_from_their_earliest_change() -> Result<()> {
        // March has rows through 05; this run adds usage at 03 and a new hour 06, and a late
        // reading in February's last hour (rows through 23 there).
        let stored = hours(&[
            "2026-02-28T22",
            "2026-02-28T23",
            "2026-03-01T04",
            "2026-03-01T05",
        ]);
        let hourly = hours(&["2026-02-28T23", "2026-03-01T03", "2026-03-01T06"]);
        let changed = hours(&["2026-02-28T23", "2026-03-01T03", "2026-03-01T06"]);
        let months = plan_months(&changed, &hourly, &stored, Tz::UTC)?;
        assert_eq!(
            months,
            [
                MonthPlan {
                    start: h("2026-02-01T00"),
                    end: h("2026-03-01T00"),
                    from: h("2026-02-28T23"),
                    last: h("2026-02-28T23"),
                    month: "2026-02".into(),
                    totals_from: Some(h("2026-02-28T22")),
                    customers_from: None,
                },
                MonthPlan {
                    start: h("2026-03-01T00"),
                    end: h("2026-04-01T00"),
                    from: h("2026-03-01T03"),
                    last: h("2026-03-01T06"),
                    month: "2026-03".into(),
                    totals_from: Some(h("2026-03-01T02")),
                    customers_from: None,
                },
            ]
        );
        // A month that starts now: from its first hour, no stored totals.
        let fresh = plan_months(
            &hours(&["2026-04-01T02"]),
            &hours(&["2026-04-01T02"]),
            &BTreeSet::new(),
            Tz::UTC,
        )?;
        assert_eq!(fresh[0].from, h("2026-04-01T00"));
        assert_eq!(
            (fresh[0].totals_from, fresh[0].customers_from),
            (None, None)
        );
        // New usage in the month's first hour of a month with rows: every stored customer.
        let first = plan_months(&hours(&["2026-03-01T00"]), &hourly, &stored, Tz::UTC)?;
        assert_eq!(first[0].customers_from, Some(h("2026-03-01T05")));
        Ok(())
    }

    #[test]
    fn months_follow_the_billing_zone() -> Result<()> {
        // 03:00 UTC on April 1st is still March in New York (EDT, UTC-4).
        let ny = chrono_tz::America::New_York;
        let months = plan_months(
            &hours(&["2026-04-01T03"]),
            &hours(&["2026-04-01T03"]),
            &BTreeSet::new(),
            ny,
        )?;
        assert_eq!(months.len(), 1);
        assert_eq!(months[0].month, "2026-03");
        assert_eq!(months[0].start, h("2026-03-01T05"));
        assert_eq!(months[0].end, h("2026-04-01T04"));
        Ok(())
    }

    #[test]
    fn hours_the_watermark_passed_are_rewritten_final() {
        let stored = hours(&[
            "2026-03-01T00",
            "2026-03-01T01",
            "2026-03-01T02",
            "2026-03-01T03",
        ]);
        let month = MonthPlan {
            start: h("2026-03-01T00"),
            end: h("2026-04-01T00"),
            from: h("2026-03-01T02"),
            last: h("2026-03-01T03"),
            month: "2026-03".into(),
            totals_from: Some(h("2026-03-01T01")),
            customers_from: None,
        };
        let rewritten = final_rewrites(
            &stored,
            Some(h("2026-03-01T00")),
            Some(h("2026-03-01T03")),
            &[month],
        );
        // 02 is recomputed anyway; 03 is not passed yet.
        assert_eq!(rewritten, hours(&["2026-03-01T00", "2026-03-01T01"]));
        assert!(final_rewrites(&stored, None, Some(h("2026-03-01T03")), &[]).is_empty());
    }
}
