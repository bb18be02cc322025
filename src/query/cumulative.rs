//! `cumulative_usage` planning: which hours of which billing months a run rewrites
//! ([`plan_months`]), and which stored hours it makes final ([`final_rewrites`]). The rows of
//! those hours come from `month` ([`super::month::MonthWalk`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;

use crate::error::Result;
use crate::hours::{billing_month, month_end_hour, month_start_hour};
/// What a run rewrites in one billing month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPlan {
    /// The month's first hour (UTC hour index).
    pub start: i64,
    /// The first hour after the month.
    pub end: i64,
    /// The first hour rewritten: the earliest hour that got new usage, or the first hour new
    /// to the month, whichever comes first.
    pub from: i64,
    /// The last hour with hourly data.
    pub last: i64,
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// The latest hour of the month stored before the run (its rows name every customer the
    /// month has: the table is dense).
    pub last_stored: Option<i64>,
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
        let last_stored = stored.range(start..end).next_back().copied();
        // Hours the month had no rows for yet are new too.
        let next_new = last_stored.map_or(start, |h| h + 1);
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
            last_stored,
        });
    }
    Ok(months)
}

/// Stored hours that the watermark passed in this run and no month rewrites: they are
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::parse_hour;

    fn h(text: &str) -> i64 {
        parse_hour(text).unwrap_or_else(|| panic!("{text} is an hour"))
    }

    fn hours(texts: &[&str]) -> BTreeSet<i64> {
        texts.iter().map(|t| h(t)).collect()
    }

    #[test]
    fn months_rewrite_from_their_earliest_change() -> Result<()> {
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
                    last_stored: Some(h("2026-02-28T23")),
                },
                MonthPlan {
                    start: h("2026-03-01T00"),
                    end: h("2026-04-01T00"),
                    from: h("2026-03-01T03"),
                    last: h("2026-03-01T06"),
                    month: "2026-03".into(),
                    last_stored: Some(h("2026-03-01T05")),
                },
            ]
        );
        // A month that starts now: from its first hour, nothing stored.
        let fresh = plan_months(
            &hours(&["2026-04-01T02"]),
            &hours(&["2026-04-01T02"]),
            &BTreeSet::new(),
            Tz::UTC,
        )?;
        assert_eq!(fresh[0].from, h("2026-04-01T00"));
        assert_eq!(fresh[0].last_stored, None);
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
            last_stored: Some(h("2026-03-01T03")),
        };
        let rewritten = final_rewrites(
            &stored,
            Some(h("2026-03-01T00")),
            Some(h("2026-03-01T03")),
            &[month],
        );
        // 02 is rewritten anyway; 03 is not passed yet.
        assert_eq!(rewritten, hours(&["2026-03-01T00", "2026-03-01T01"]));
        assert!(final_rewrites(&stored, None, Some(h("2026-03-01T03")), &[]).is_empty());
    }
}
