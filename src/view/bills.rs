//! The bills of the latest closed billing months and of the month to date: the running totals
//! at each month's last hour.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::{cumulative_usage, watermark};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{billing_month, format_hour, month_end_hour, month_start_hour};
use crate::table::{block_on, col};

/// Closed months shown besides the open one.
const CLOSED_MONTHS_SHOWN: usize = 3;

/// One billing month's bills: the running totals at its last hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthBills {
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// The last hour with rows (the month's last hour once it is complete).
    pub last_hour: String,
    /// True when the watermark passed the month's end: these are the bills.
    pub closed: bool,
    /// Customers billed.
    pub customers: usize,
    /// Sum of the bills, ml.
    pub total_ml: i64,
    /// The largest bill: customer and ml.
    pub largest: (String, i64),
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
    let Some(table) = cumulative_usage(config)? else {
        return Ok(BillsReport::default());
    };
    let tz = config.billing_timezone;
    let wm = watermark(config)?;
    let partitions = table.partitions();
    // Last hour with rows per month (keyed by the month's first hour).
    let mut last_of_month: BTreeMap<i64, i64> = BTreeMap::new();
    for &h in &partitions {
        last_of_month.insert(month_start_hour(h, tz)?, h);
    }
    let shown: Vec<(i64, i64)> = last_of_month
        .into_iter()
        .rev()
        .take(CLOSED_MONTHS_SHOWN + 1)
        .collect();
    let hours: BTreeSet<i64> = shown.iter().map(|m| m.1).collect();
    let rows = block_on(table.read_hours(&hours))??;
    let mut months = Vec::new();
    for (start, last) in shown.into_iter().rev() {
        let end = month_end_hour(start, tz)?;
        let bills = rows
            .clone()
            .lazy()
            .filter(col(col::USAGE_HOUR).eq(lit(last)))
            .select([col(col::CUSTOMER_ID), col(col::CUMULATIVE_ML)])
            .sort_by_exprs(
                [col(col::CUMULATIVE_ML), col(col::CUSTOMER_ID)],
                SortMultipleOptions::default().with_order_descending_multi([true, false]),
            )
            .collect()
            .map_err(Error::polars("bills"))?;
        let ids = bills
            .column(col::CUSTOMER_ID)
            .and_then(|c| c.str().cloned());
        let totals = bills
            .column(col::CUMULATIVE_ML)
            .and_then(|c| c.i64().cloned());
        let (ids, totals) = (
            ids.map_err(Error::polars("bills"))?,
            totals.map_err(Error::polars("bills"))?,
        );
        months.push(MonthBills {
            month: billing_month(start, tz)?,
            last_hour: format_hour(last),
            closed: wm.is_some_and(|w| end <= w && last + 1 == end),
            customers: bills.height(),
            total_ml: totals.sum().unwrap_or(0),
            largest: (
                ids.iter().flatten().next().unwrap_or_default().to_owned(),
                totals.iter().flatten().next().unwrap_or(0),
            ),
        });
    }
    Ok(BillsReport {
        months,
        watermark: wm.map(format_hour),
    })
}
