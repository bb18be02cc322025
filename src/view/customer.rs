//! One customer's billing month, read back from `cumulative_usage`, with its chart.

use std::collections::BTreeSet;

use polars::prelude::*;

use super::cumulative_usage;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{billing_month, month_end_hour, month_start_hour};
use crate::table::{Table, block_on, col};

/// One hour of a customer's month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// UTC hour index.
    pub hour: i64,
    /// Usage in the hour, ml.
    pub usage_ml: i64,
    /// Running total at the hour's end, ml.
    pub cumulative_ml: i64,
}

/// One customer's billing month.
#[derive(Debug, Clone)]
pub struct CustomerMonth {
    /// Customer.
    pub customer: String,
    /// `YYYY-MM`.
    pub month: String,
    /// The billing time zone.
    pub time_zone: String,
    /// The month's first hour (UTC hour index).
    pub first_hour: i64,
    /// The month's last hour.
    pub last_hour: i64,
    /// Hours with rows.
    pub points: Vec<Point>,
}

/// `customer`'s month (the latest billing month in the table) as a chart; an empty `customer`
/// picks the customer with the largest running total in that month.
pub fn customer_month(config: &Config, customer: &str) -> Result<Option<CustomerMonth>> {
    let Some(table) = cumulative_usage(config)? else {
        return Ok(None);
    };
    let tz = config.billing_timezone;
    let partitions = table.partitions();
    let Some(&latest) = partitions.last() else {
        return Ok(None);
    };
    let start = month_start_hour(latest, tz)?;
    let end = month_end_hour(start, tz)?;
    let t = std::time::Instant::now();
    let customer = if customer.is_empty() {
        match largest_customer(&table, latest)? {
            Some(id) => id,
            None => return Ok(None),
        }
    } else {
        customer.to_owned()
    };
    let t = crate::trace::phase("view/largest customer", t);
    let hours: BTreeSet<i64> = partitions.range(start..end).copied().collect();
    let wanted = BTreeSet::from([customer.clone()]);
    // Only the customer's rows are read.
    let rows = block_on(table.read_hours_of(&hours, col::CUSTOMER_ID, &wanted))??
        .lazy()
        .sort([col::USAGE_HOUR], SortMultipleOptions::default())
        .collect()
        .map_err(Error::polars("chart"))?;
    crate::trace::phase("view/customer month", t);
    let column = |name: &str| {
        rows.column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("chart"))
    };
    let (hours, usage, totals) = (
        column(col::USAGE_HOUR)?,
        column(col::USAGE_ML)?,
        column(col::CUMULATIVE_ML)?,
    );
    // The table's columns are non-nullable (nulls are refused when read).
    let points: Vec<Point> = hours
        .into_no_null_iter()
        .zip(usage.into_no_null_iter())
        .zip(totals.into_no_null_iter())
        .map(|((hour, usage_ml), cumulative_ml)| Point {
            hour,
            usage_ml,
            cumulative_ml,
        })
        .collect();
    Ok(Some(CustomerMonth {
        customer,
        month: billing_month(start, tz)?,
        time_zone: tz.to_string(),
        first_hour: start,
        last_hour: end - 1,
        points,
    }))
}

/// The customer with the largest running total at hour `hour` (ties: the smallest id).
pub(super) fn largest_customer(table: &Table, hour: i64) -> Result<Option<String>> {
    let rows = block_on(table.read_hours(&BTreeSet::from([hour])))??;
    let top = rows
        .lazy()
        .sort_by_exprs(
            [col(col::CUMULATIVE_ML), col(col::CUSTOMER_ID)],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .first()
        .collect()
        .map_err(Error::polars("chart"))?;
    let ids = top
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str().cloned())
        .map_err(Error::polars("chart"))?;
    Ok(ids.iter().flatten().next().map(str::to_owned))
}
