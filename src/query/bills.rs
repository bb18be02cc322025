//! `monthly_bills`, without I/O: which billing months a run closes ([`closing_months`]), how
//! complete each customer's readings of a month are ([`Completeness`], folded over the month's
//! `hourly_usage` rows a few hours at a time), and the bill rows ([`bill_rows`]).
//!
//! A month closes in the run whose watermark passes its end: from then on every record of the
//! month is late, so its running totals at its last hour are final, and they are the bills.

use std::collections::{BTreeMap, BTreeSet};

use chrono_tz::Tz;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::hours::{
    MONTH_SPAN_HOURS, billing_month, format_hour, month_end_hour, month_start_hour,
};
use crate::table::{MONTHLY_BILLS, Values, col};

/// A billing month a run closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosingMonth {
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// The month's first hour (UTC hour index).
    pub start: i64,
    /// The first hour after the month.
    pub end: i64,
    /// The month's last hour with `cumulative_usage` rows: its totals are the bills.
    pub last_stored: i64,
}

/// The months whose end the watermark passes in this run (from `before` to `after`, the first
/// hours not final before and after it) and that have rows in `cumulative_usage` (its hour
/// partitions `stored`), oldest first.
pub fn closing_months(
    stored: &BTreeSet<i64>,
    before: Option<i64>,
    after: Option<i64>,
    tz: Tz,
) -> Result<Vec<ClosingMonth>> {
    let Some(after) = after else {
        return Ok(Vec::new());
    };
    // A month ending after `before` has no hour earlier than a month before `before`.
    let from = before.map_or(i64::MIN, |b| b - MONTH_SPAN_HOURS);
    let mut last_of_month: BTreeMap<i64, i64> = BTreeMap::new();
    for &hour in stored.range(from..after) {
        last_of_month.insert(month_start_hour(hour, tz)?, hour);
    }
    let mut months = Vec::new();
    for (start, last_stored) in last_of_month {
        let end = month_end_hour(start, tz)?;
        if end <= after && before.is_none_or(|b| end > b) {
            months.push(ClosingMonth {
                month: billing_month(start, tz)?,
                start,
                end,
                last_stored,
            });
        }
    }
    Ok(months)
}

/// Per customer, what a month's `hourly_usage` rows say about its readings: the hours with
/// readings, the first of them, the most meters in one hour. Rows are added a few hours at a
/// time, so a month at any size is read in bounded memory.
#[derive(Default)]
pub struct Completeness {
    /// One partial aggregate per [`Completeness::add`].
    parts: Vec<LazyFrame>,
}

/// Columns of the partial aggregates.
const HOURS: &str = "hours";
const FIRST_HOUR: &str = "first_hour";
const METERS: &str = "meters";

impl Completeness {
    /// Folds in `hourly_usage` rows of the month.
    pub fn add(&mut self, hourly: DataFrame) -> Result<()> {
        let part = hourly
            .lazy()
            .filter(col(col::READING_COUNT).gt(lit(0i64)))
            .group_by([col(col::CUSTOMER_ID)])
            .agg([
                len().cast(DataType::Int64).alias(HOURS),
                col(col::USAGE_HOUR).min().alias(FIRST_HOUR),
                col(col::METER_COUNT).max().alias(METERS),
            ])
            .collect()
            .map_err(Error::polars("monthly_bills completeness"))?;
        self.parts.push(part.lazy());
        Ok(())
    }

    /// One row per customer with readings in the month: `customer_id`, hours with readings,
    /// first hour with readings, most meters in one hour.
    fn finish(self) -> Result<Option<LazyFrame>> {
        if self.parts.is_empty() {
            return Ok(None);
        }
        let all = concat(self.parts, UnionArgs::default())
            .map_err(Error::polars("monthly_bills completeness"))?;
        Ok(Some(all.group_by([col(col::CUSTOMER_ID)]).agg([
            col(HOURS).sum(),
            col(FIRST_HOUR).min(),
            col(METERS).max(),
        ])))
    }
}

/// What closes a month's bills: the batch, and the provenance every bill records (see
/// [`crate::provenance`]).
#[derive(Debug, Clone)]
pub struct BillSource {
    /// The batch whose watermark passed the month's end.
    pub batch: i64,
    /// The library computing the bills.
    pub computed_by: String,
    /// The parameters deciding their values, as JSON.
    pub parameters: String,
}

/// The `monthly_bills` rows of `month`, closed by `source`'s batch, sorted by customer: each
/// customer's total is its running total at the month's last stored hour (`totals`:
/// `customer_id`, `cumulative_ml`), with the completeness of its readings. Every customer of
/// the month must be in both, or the tables disagree: an error, never a bill with a default.
pub fn bill_rows(
    totals: DataFrame,
    completeness: Completeness,
    month: &ClosingMonth,
    source: &BillSource,
) -> Result<DataFrame> {
    let err = Error::polars("monthly_bills rows");
    let disagree = |with_readings: usize, both: usize| {
        Error::table_data(
            MONTHLY_BILLS.name,
            col::CUSTOMER_ID,
            format!(
                "{}: cumulative_usage has running totals of {} customers, hourly_usage readings \
                 of {with_readings}, {both} are in both: the tables disagree",
                month.month,
                totals.height()
            ),
        )
    };
    let Some(completeness) = completeness.finish()? else {
        return Err(disagree(0, 0));
    };
    let completeness = completeness.collect().map_err(err)?;
    let rows = totals
        .clone()
        .lazy()
        .select([col(col::CUSTOMER_ID), col(col::CUMULATIVE_ML)])
        .join(
            completeness.clone().lazy(),
            [col(col::CUSTOMER_ID)],
            [col(col::CUSTOMER_ID)],
            JoinArgs::new(JoinType::Inner),
        )
        .sort([col::CUSTOMER_ID], SortMultipleOptions::default())
        .select([
            col(col::CUSTOMER_ID),
            lit(month.month.as_str()).alias(col::BILLING_MONTH),
            col(col::CUMULATIVE_ML).alias(col::TOTAL_ML),
            col(col::CUMULATIVE_ML).alias(col::TOTAL_M3),
            lit(month.end - 1)
                .cast(DataType::Int64)
                .alias(col::LAST_HOUR),
            lit(source.batch)
                .cast(DataType::Int64)
                .alias(col::CLOSED_BY_BATCH),
            col(HOURS).alias(col::HOURS_WITH_READINGS),
            (lit(month.end) - col(FIRST_HOUR)).alias(col::HOURS_SINCE_FIRST_READING),
            col(METERS).alias(col::METERS_REPORTED),
            lit(source.computed_by.as_str()).alias(col::COMPUTED_BY),
            lit(source.parameters.as_str()).alias(col::PARAMETERS),
        ])
        .collect()
        .map_err(err)?;
    if rows.height() != totals.height() || completeness.height() != totals.height() {
        return Err(disagree(completeness.height(), rows.height()));
    }
    MONTHLY_BILLS.frame(rows.columns().iter().cloned().map(Values::Built).collect())
}

/// How many of `monthly_bills` rows have an hour without readings since the customer's first
/// reading of the month (fewer hours with readings than hours since the first).
pub fn bills_with_gaps(rows: &DataFrame) -> Result<usize> {
    let long = |name: &str| {
        rows.column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("monthly_bills gaps"))
    };
    let (with, since) = (
        long(col::HOURS_WITH_READINGS)?,
        long(col::HOURS_SINCE_FIRST_READING)?,
    );
    Ok(with.iter().zip(since.iter()).filter(|(w, s)| w < s).count())
}

/// A closed bill a rebuild changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangedBill {
    /// The customer.
    pub customer_id: String,
    /// `YYYY-MM`.
    pub billing_month: String,
    /// The bill before, ml (`None`: there was none).
    pub total_ml_before: Option<i64>,
    /// The bill after, ml (`None`: there is none now).
    pub total_ml_after: Option<i64>,
    /// The month's last hour (UTC) before.
    pub last_hour_before: Option<String>,
    /// The month's last hour (UTC) after.
    pub last_hour_after: Option<String>,
}

/// The bills that differ between `before` and `after` (`monthly_bills` rows): by customer and
/// month, a total or last hour that changed, or a bill only one of them has; sorted by month,
/// then customer.
pub fn changed_bills(before: &DataFrame, after: &DataFrame) -> Result<Vec<ChangedBill>> {
    let err = Error::polars("changed bills");
    let side = |rows: &DataFrame, suffix: &str| {
        rows.clone().lazy().select([
            col(col::CUSTOMER_ID),
            col(col::BILLING_MONTH),
            col(col::TOTAL_ML).alias(format!("total{suffix}")),
            col(col::LAST_HOUR).alias(format!("last{suffix}")),
        ])
    };
    let keys = [col(col::CUSTOMER_ID), col(col::BILLING_MONTH)];
    let changed = side(before, "_before")
        .join(
            side(after, "_after"),
            keys.clone(),
            keys,
            JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .filter(
            col("total_before")
                .neq_missing(col("total_after"))
                .or(col("last_before").neq_missing(col("last_after"))),
        )
        .sort(
            [col::BILLING_MONTH, col::CUSTOMER_ID],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(err)?;
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        Ok(changed
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(err)?
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect())
    };
    let long = |name: &str| -> Result<Vec<Option<i64>>> {
        Ok(changed
            .column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?
            .iter()
            .collect())
    };
    let hour = |name: &str| -> Result<Vec<Option<String>>> {
        Ok(long(name)?
            .into_iter()
            .map(|h| h.map(format_hour))
            .collect())
    };
    let (customers, months) = (text(col::CUSTOMER_ID)?, text(col::BILLING_MONTH)?);
    let (totals_before, totals_after) = (long("total_before")?, long("total_after")?);
    let (last_before, last_after) = (hour("last_before")?, hour("last_after")?);
    Ok((0..changed.height())
        .map(|i| ChangedBill {
            customer_id: customers[i].clone().unwrap_or_default(),
            billing_month: months[i].clone().unwrap_or_default(),
            total_ml_before: totals_before[i],
            total_ml_after: totals_after[i],
            last_hour_before: last_before[i].clone(),
            last_hour_after: last_after[i].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use polars::df;

    use super::*;
    use crate::hours::parse_hour;

    fn hour(text: &str) -> i64 {
        parse_hour(text).expect("an hour")
    }

    #[test]
    fn a_month_closes_in_the_run_whose_watermark_passes_its_end() -> Result<()> {
        let utc = chrono_tz::UTC;
        let stored: BTreeSet<i64> = (hour("2026-03-30T00")..hour("2026-04-02T05")).collect();
        let closing = |before: &str, after: &str| -> Result<Vec<String>> {
            Ok(
                closing_months(&stored, parse_hour(before), parse_hour(after), utc)?
                    .into_iter()
                    .map(|m| m.month)
                    .collect(),
            )
        };
        // The watermark reaches April's first hour: March's last hour is final.
        assert_eq!(closing("2026-03-31T22", "2026-04-01T00")?, ["2026-03"]);
        assert_eq!(
            closing("2026-03-31T22", "2026-03-31T23")?,
            Vec::<String>::new()
        );
        // Already closed by an earlier run.
        assert_eq!(
            closing("2026-04-01T00", "2026-04-01T03")?,
            Vec::<String>::new()
        );
        // No watermark before (the first run over an old log): every month that ended.
        let first = closing_months(&stored, None, parse_hour("2026-04-01T01"), utc)?;
        assert_eq!(
            first,
            [ClosingMonth {
                month: "2026-03".into(),
                start: hour("2026-03-01T00"),
                end: hour("2026-04-01T00"),
                last_stored: hour("2026-03-31T23"),
            }]
        );
        assert!(closing_months(&stored, None, None, utc)?.is_empty());
        // In New York, March ends at 04:00 UTC.
        let ny = chrono_tz::America::New_York;
        let ny_closing = |after: &str| -> Result<Vec<String>> {
            Ok(
                closing_months(&stored, parse_hour("2026-04-01T00"), parse_hour(after), ny)?
                    .into_iter()
                    .map(|m| m.month)
                    .collect(),
            )
        };
        assert_eq!(ny_closing("2026-04-01T03")?, Vec::<String>::new());
        assert_eq!(ny_closing("2026-04-01T04")?, ["2026-03"]);
        Ok(())
    }

    fn hourly(rows: &[(&str, &str, i64, i64)]) -> Result<DataFrame> {
        crate::table::HOURLY_USAGE.frame(vec![
            Values::Str(rows.iter().map(|r| r.0.into()).collect()),
            Values::Long(rows.iter().map(|r| hour(r.1)).collect()),
            Values::Long(rows.iter().map(|r| r.2).collect()),
            Values::Long(rows.iter().map(|_| 1).collect()),
            Values::Long(rows.iter().map(|r| r.3).collect()),
        ])
    }

    fn source(batch: i64) -> BillSource {
        BillSource {
            batch,
            computed_by: "aquabill 9.9.9 source 00ff".into(),
            parameters: r#"{"billing_timezone":"UTC"}"#.into(),
        }
    }

    fn month() -> ClosingMonth {
        ClosingMonth {
            month: "2026-03".into(),
            start: hour("2026-03-01T00"),
            end: hour("2026-04-01T00"),
            last_stored: hour("2026-03-31T23"),
        }
    }

    #[test]
    fn bills_carry_the_total_and_how_complete_the_readings_are() -> Result<()> {
        let mut completeness = Completeness::default();
        // Folded in two parts, as the month is read: C1 reports from the month's first hour,
        // with one gap; C2 from its last day on, with two meters in one hour.
        completeness.add(hourly(&[
            ("C1", "2026-03-01T00", 5, 1),
            ("C1", "2026-03-01T02", 7, 1),
        ])?)?;
        completeness.add(hourly(&[
            ("C2", "2026-03-31T00", 1, 1),
            ("C2", "2026-03-31T01", 2, 2),
            ("C1", "2026-03-31T23", 3, 1),
        ])?)?;
        let totals = df!(
            col::CUSTOMER_ID => ["C2", "C1"],
            col::CUMULATIVE_ML => [3i64, 1_500_000],
        )
        .map_err(Error::polars("test"))?;
        let rows = bill_rows(totals, completeness, &month(), &source(42))?;
        let long = |c: &str| -> Result<Vec<i64>> {
            let values = rows.column(c).and_then(|c| c.i64().cloned());
            Ok(values
                .map_err(Error::polars("test"))?
                .into_no_null_iter()
                .collect())
        };
        let ids = rows.column(col::CUSTOMER_ID).and_then(|c| c.str().cloned());
        let ids: Vec<String> = ids
            .map_err(Error::polars("test"))?
            .iter()
            .flatten()
            .map(str::to_owned)
            .collect();
        assert_eq!(ids, ["C1", "C2"]);
        assert_eq!(long(col::TOTAL_ML)?, [1_500_000, 3]);
        assert_eq!(long(col::TOTAL_M3)?, [1_500_000, 3]);
        assert_eq!(long(col::HOURS_WITH_READINGS)?, [3, 2]);
        // March has 744 hours; C2's first reading is 24 hours before its end.
        assert_eq!(long(col::HOURS_SINCE_FIRST_READING)?, [744, 24]);
        assert_eq!(long(col::METERS_REPORTED)?, [1, 2]);
        let last = hour("2026-03-31T23");
        assert_eq!(long(col::LAST_HOUR)?, [last, last]);
        assert_eq!(long(col::CLOSED_BY_BATCH)?, [42, 42]);
        let text = |c: &str| -> Result<Vec<Option<String>>> {
            let values = rows.column(c).and_then(|c| c.str().cloned());
            Ok(values
                .map_err(Error::polars("test"))?
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect())
        };
        let by = Some("aquabill 9.9.9 source 00ff".to_owned());
        assert_eq!(text(col::COMPUTED_BY)?, [by.clone(), by]);
        let parameters = Some(r#"{"billing_timezone":"UTC"}"#.to_owned());
        assert_eq!(text(col::PARAMETERS)?, [parameters.clone(), parameters]);
        assert_eq!(bills_with_gaps(&rows)?, 2);
        Ok(())
    }

    #[test]
    fn a_rebuild_reports_the_bills_that_changed_appeared_or_went() -> Result<()> {
        let (march, april) = (hour("2026-03-31T23"), hour("2026-04-30T23"));
        let before = df!(
            col::CUSTOMER_ID => ["C1", "C2", "C3", "C1"],
            col::BILLING_MONTH => ["2026-03", "2026-03", "2026-03", "2026-04"],
            col::TOTAL_ML => [100i64, 50, 7, 1],
            col::LAST_HOUR => [march, march, march, april],
        )
        .map_err(Error::polars("test"))?;
        // C1's March is the same; C2's total and C1's April's last hour changed; C3's bill went,
        // C4's came.
        let after = df!(
            col::CUSTOMER_ID => ["C4", "C2", "C1", "C1"],
            col::BILLING_MONTH => ["2026-03", "2026-03", "2026-03", "2026-04"],
            col::TOTAL_ML => [9i64, 60, 100, 1],
            col::LAST_HOUR => [march, march, march, april + 4],
        )
        .map_err(Error::polars("test"))?;
        let changed = changed_bills(&before, &after)?;
        let bill =
            |customer: &str, month: &str, before: Option<(i64, i64)>, after: Option<(i64, i64)>| {
                ChangedBill {
                    customer_id: customer.into(),
                    billing_month: month.into(),
                    total_ml_before: before.map(|b| b.0),
                    total_ml_after: after.map(|a| a.0),
                    last_hour_before: before.map(|b| format_hour(b.1)),
                    last_hour_after: after.map(|a| format_hour(a.1)),
                }
            };
        assert_eq!(
            changed,
            [
                bill("C2", "2026-03", Some((50, march)), Some((60, march))),
                bill("C3", "2026-03", Some((7, march)), None),
                bill("C4", "2026-03", None, Some((9, march))),
                bill("C1", "2026-04", Some((1, april)), Some((1, april + 4))),
            ]
        );
        assert_eq!(changed_bills(&after, &after)?, []);
        Ok(())
    }

    #[test]
    fn a_customer_without_readings_is_an_error_not_a_default() -> Result<()> {
        let mut completeness = Completeness::default();
        completeness.add(hourly(&[("C1", "2026-03-01T00", 5, 1)])?)?;
        let totals = df!(
            col::CUSTOMER_ID => ["C1", "C9"],
            col::CUMULATIVE_ML => [5i64, 0],
        )
        .map_err(Error::polars("test"))?;
        let bills = bill_rows(totals, completeness, &month(), &source(1));
        assert!(
            matches!(&bills, Err(Error::TableData { table, .. }) if table == "monthly_bills"),
            "{bills:?}"
        );
        Ok(())
    }
}
