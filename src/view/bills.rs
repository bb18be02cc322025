//! The bills of the latest closed billing months, read from `monthly_bills`, and of the month
//! to date, the running totals at its latest hour in `cumulative_usage`.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::{open_if_exists, watermark};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{billing_month, format_hour, month_end_hour, month_start_hour};
use crate::query::bills::bills_with_gaps;
use crate::table::{CUMULATIVE_USAGE, MONTHLY_BILLS, block_on, col};

/// Closed months shown besides the open one.
const CLOSED_MONTHS_SHOWN: usize = 3;

/// Whether a month's totals are its bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthStatus {
    /// The watermark passed the month's end: its rows in `monthly_bills` are the bills.
    Closed,
    /// The watermark passed the month's end, but `monthly_bills` has no rows of it: the month
    /// closed before the table existed (a rebuild writes them).
    FinalNotBilled,
    /// The month to date.
    Open,
}

/// One billing month's bills: the running totals at its last hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthBills {
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// The month's last hour once it closed, else the latest hour with rows.
    pub last_hour: String,
    /// Whether these are the bills.
    pub status: MonthStatus,
    /// Customers billed.
    pub customers: usize,
    /// Sum of the bills, ml.
    pub total_ml: i64,
    /// The largest bill: customer and ml.
    pub largest: (String, i64),
    /// Closed months: bills with an hour without readings since the customer's first reading
    /// of the month (billing may hold them back).
    pub with_gaps: Option<usize>,
}

/// The bills of the latest closed months and the month to date.
#[derive(Debug, Clone, Default)]
pub struct BillsReport {
    /// Oldest first.
    pub months: Vec<MonthBills>,
    /// Watermark (first hour not yet final).
    pub watermark: Option<String>,
}

/// The bills of the latest closed billing months and of the month to date.
pub fn bills(config: &Config) -> Result<BillsReport> {
    let wm = watermark(config)?;
    let mut months: BTreeMap<String, MonthBills> = closed_months(config)?
        .into_iter()
        .map(|m| (m.month.clone(), m))
        .collect();
    if let Some(table) = open_if_exists(config, &CUMULATIVE_USAGE)? {
        let tz = config.billing_timezone;
        // Last hour with rows per month not in `monthly_bills` (keyed by the month's first hour).
        let mut last_of_month: BTreeMap<i64, i64> = BTreeMap::new();
        for &h in &table.partitions() {
            last_of_month.insert(month_start_hour(h, tz)?, h);
        }
        let mut unbilled = Vec::new();
        for (start, last) in last_of_month {
            let month = billing_month(start, tz)?;
            if !months.contains_key(&month) {
                unbilled.push((month, start, last));
            }
        }
        let shown: Vec<_> = unbilled
            .into_iter()
            .rev()
            .take(CLOSED_MONTHS_SHOWN + 1)
            .collect();
        let hours: BTreeSet<i64> = shown.iter().map(|m| m.2).collect();
        let rows = block_on(table.read_hours(&hours))??;
        for (month, start, last) in shown {
            let end = month_end_hour(start, tz)?;
            let totals = rows
                .clone()
                .lazy()
                .filter(col(col::USAGE_HOUR).eq(lit(last)))
                .select([
                    col(col::CUSTOMER_ID),
                    col(col::CUMULATIVE_ML).alias(col::TOTAL_ML),
                ])
                .collect()
                .map_err(Error::polars("bills"))?;
            let status = if wm.is_some_and(|w| end <= w) {
                MonthStatus::FinalNotBilled
            } else {
                MonthStatus::Open
            };
            let summary = summarize(&totals, None)?;
            months.insert(
                month.clone(),
                MonthBills {
                    month,
                    last_hour: format_hour(last),
                    status,
                    customers: summary.customers,
                    total_ml: summary.total_ml,
                    largest: summary.largest,
                    with_gaps: None,
                },
            );
        }
    }
    let skip = months.len().saturating_sub(CLOSED_MONTHS_SHOWN + 1);
    Ok(BillsReport {
        months: months.into_values().skip(skip).collect(),
        watermark: wm.map(format_hour),
    })
}

/// The latest closed months in `monthly_bills`.
fn closed_months(config: &Config) -> Result<Vec<MonthBills>> {
    let Some(table) = open_if_exists(config, &MONTHLY_BILLS)? else {
        return Ok(Vec::new());
    };
    let rows = block_on(table.read_hours(&BTreeSet::new()))??;
    let err = Error::polars("bills");
    let months_column = rows
        .column(col::BILLING_MONTH)
        .and_then(|c| c.str().cloned())
        .map_err(err)?;
    let month_names: BTreeSet<String> = months_column.iter().flatten().map(str::to_owned).collect();
    let mut months = Vec::new();
    for month in month_names
        .into_iter()
        .rev()
        .take(CLOSED_MONTHS_SHOWN)
        .rev()
    {
        let of_month = rows
            .clone()
            .lazy()
            .filter(col(col::BILLING_MONTH).eq(lit(month.as_str())))
            .collect()
            .map_err(err)?;
        let last_hour = of_month
            .column(col::LAST_HOUR)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?
            .max()
            .unwrap_or_default();
        let summary = summarize(&of_month, Some(&of_month))?;
        months.push(MonthBills {
            month,
            last_hour: format_hour(last_hour),
            status: MonthStatus::Closed,
            customers: summary.customers,
            total_ml: summary.total_ml,
            largest: summary.largest,
            with_gaps: summary.with_gaps,
        });
    }
    Ok(months)
}

/// Count, sum and largest of a month's bills.
struct Summary {
    customers: usize,
    total_ml: i64,
    largest: (String, i64),
    with_gaps: Option<usize>,
}

/// Summarizes bills (`customer_id`, `total_ml`), counting gaps from `completeness` rows of
/// `monthly_bills` when given.
fn summarize(bills: &DataFrame, completeness: Option<&DataFrame>) -> Result<Summary> {
    let err = Error::polars("bills");
    let largest = bills
        .clone()
        .lazy()
        .select([col(col::CUSTOMER_ID), col(col::TOTAL_ML)])
        .sort_by_exprs(
            [col(col::TOTAL_ML), col(col::CUSTOMER_ID)],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(1)
        .collect()
        .map_err(err)?;
    let totals = bills
        .column(col::TOTAL_ML)
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    let first_id = largest
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str().cloned())
        .map_err(err)?
        .get(0)
        .unwrap_or_default()
        .to_owned();
    let first_total = largest
        .column(col::TOTAL_ML)
        .and_then(|c| c.i64().cloned())
        .map_err(err)?
        .get(0)
        .unwrap_or(0);
    let with_gaps = completeness.map(bills_with_gaps).transpose()?;
    Ok(Summary {
        customers: bills.height(),
        total_ml: totals.sum().unwrap_or(0),
        largest: (first_id, first_total),
        with_gaps,
    })
}
