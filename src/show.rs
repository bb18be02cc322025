//! What the notebook shows after a run, read back from the committed tables: the bills of the
//! latest billing months and one customer's month as a chart. Read-only: a missing table means
//! "nothing yet", never a table created.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use polars::prelude::*;

use crate::chart::{self, Point};
use crate::checkpoint::Store;
use crate::config::Config;
use crate::delta::{self, Table};
use crate::error::{Error, Result};
use crate::hours::{billing_month, format_hour, month_start_hour};
use crate::html;
use crate::report::Shown;
use crate::run::block_on;

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

/// One customer's billing month.
#[derive(Debug, Clone)]
pub struct CustomerMonth {
    /// Customer.
    pub customer: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Hours with rows.
    pub points: Vec<Point>,
    /// The SVG chart.
    pub svg: String,
}

/// `ml` in cubic meters, exact (up to 6 decimals, trailing zeros dropped).
pub fn cubic_meters(ml: i64) -> String {
    let sign = if ml < 0 { "-" } else { "" };
    let (whole, frac) = (ml.unsigned_abs() / 1_000_000, ml.unsigned_abs() % 1_000_000);
    let frac = format!("{frac:06}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac}")
    }
}

fn open(config: &Config) -> Result<Option<Table>> {
    let dir = config.table_path(delta::CUMULATIVE_USAGE.name);
    if !dir.join("_delta_log").is_dir() {
        return Ok(None);
    }
    Ok(Some(block_on(Table::open_or_create(
        &dir,
        &delta::CUMULATIVE_USAGE,
    ))??))
}

fn watermark(config: &Config) -> Result<Option<i64>> {
    Ok(Store::new(Path::new(&config.checkpoint_dir))
        .load()?
        .watermark_hour)
}

/// The bills of the latest closed billing months and of the month to date.
pub fn bills(config: &Config) -> Result<BillsReport> {
    let Some(table) = open(config)? else {
        return Ok(BillsReport::default());
    };
    let tz = config.billing_timezone;
    let wm = watermark(config)?;
    let partitions = block_on(table.partitions())??;
    // Last hour with rows per month (keyed by the month's first hour).
    let mut last_of_month: BTreeMap<i64, i64> = BTreeMap::new();
    for &h in &partitions {
        last_of_month.insert(month_start_hour(h, tz), h);
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
        let end = month_start_hour(start + 24 * 32, tz);
        let bills = rows
            .clone()
            .lazy()
            .filter(col("usage_hour").eq(lit(last)))
            .select([col("customer_id"), col("cumulative_ml")])
            .sort_by_exprs(
                [col("cumulative_ml"), col("customer_id")],
                SortMultipleOptions::default().with_order_descending_multi([true, false]),
            )
            .collect()
            .map_err(Error::polars("bills"))?;
        let ids = bills.column("customer_id").and_then(|c| c.str().cloned());
        let totals = bills.column("cumulative_ml").and_then(|c| c.i64().cloned());
        let (ids, totals) = (
            ids.map_err(Error::polars("bills"))?,
            totals.map_err(Error::polars("bills"))?,
        );
        months.push(MonthBills {
            month: billing_month(start, tz),
            last_hour: format_hour(last),
            closed: wm.is_some_and(|w| end <= w && last + 1 == end),
            customers: bills.height(),
            total_ml: totals.sum().unwrap_or(0),
            largest: (
                ids.get(0).unwrap_or_default().to_owned(),
                totals.get(0).unwrap_or(0),
            ),
        });
    }
    Ok(BillsReport {
        months,
        watermark: wm.map(format_hour),
    })
}

/// `customer`'s month (the latest billing month in the table) as a chart; an empty `customer`
/// picks the customer with the largest running total in that month.
pub fn customer_month(config: &Config, customer: &str) -> Result<Option<CustomerMonth>> {
    let Some(table) = open(config)? else {
        return Ok(None);
    };
    let tz = config.billing_timezone;
    let partitions = block_on(table.partitions())??;
    let Some(&latest) = partitions.last() else {
        return Ok(None);
    };
    let start = month_start_hour(latest, tz);
    let end = month_start_hour(start + 24 * 32, tz);
    let customer = if customer.is_empty() {
        let rows = block_on(table.read_hours(&BTreeSet::from([latest])))??;
        let top = rows
            .lazy()
            .sort_by_exprs(
                [col("cumulative_ml"), col("customer_id")],
                SortMultipleOptions::default().with_order_descending_multi([true, false]),
            )
            .first()
            .collect()
            .map_err(Error::polars("chart"))?;
        match top.column("customer_id").and_then(|c| c.str().cloned()) {
            Ok(ids) => match ids.get(0) {
                Some(id) => id.to_owned(),
                None => return Ok(None),
            },
            Err(e) => return Err(Error::polars("chart")(e)),
        }
    } else {
        customer.to_owned()
    };
    let keys: BTreeMap<i64, BTreeSet<String>> = partitions
        .range(start..end)
        .map(|&h| (h, BTreeSet::from([customer.clone()])))
        .collect();
    let rows = block_on(table.read_hours_matching("customer_id", &keys))??
        .lazy()
        .filter(col("customer_id").eq(lit(customer.as_str())))
        .sort(["usage_hour"], SortMultipleOptions::default())
        .collect()
        .map_err(Error::polars("chart"))?;
    let column = |name: &str| {
        rows.column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("chart"))
    };
    let (hours, usage, totals) = (
        column("usage_hour")?,
        column("usage_ml")?,
        column("cumulative_ml")?,
    );
    let points: Vec<Point> = hours
        .iter()
        .zip(usage.iter())
        .zip(totals.iter())
        .filter_map(|((h, u), c)| {
            Some(Point {
                hour: h?,
                usage_ml: u?,
                cumulative_ml: c?,
            })
        })
        .collect();
    let month = billing_month(start, tz);
    let so_far = points.last().map_or(0, |p| p.cumulative_ml);
    let title = format!(
        "{customer}, billing month {month} ({tz}): {} m³ to {}",
        cubic_meters(so_far),
        points
            .last()
            .map_or_else(String::new, |p| format_hour(p.hour + 1))
    );
    let svg = chart::month_svg(&title, start, end - 1, &points);
    Ok(Some(CustomerMonth {
        customer,
        month,
        points,
        svg,
    }))
}

impl fmt::Display for BillsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.months.is_empty() {
            return write!(f, "no bills yet");
        }
        writeln!(
            f,
            "watermark {}",
            self.watermark.as_deref().unwrap_or("none")
        )?;
        for m in &self.months {
            writeln!(
                f,
                "{} {:<7} at {}: {} customers, {} m³ in all, largest {} m³ ({})",
                m.month,
                if m.closed { "closed" } else { "to date" },
                m.last_hour,
                m.customers,
                cubic_meters(m.total_ml),
                cubic_meters(m.largest.1),
                m.largest.0
            )?;
        }
        Ok(())
    }
}

impl Shown for BillsReport {
    fn html(&self) -> String {
        if self.months.is_empty() {
            return html::para("no bills yet");
        }
        let rows: Vec<Vec<String>> = self
            .months
            .iter()
            .map(|m| {
                vec![
                    m.month.clone(),
                    if m.closed { "closed" } else { "to date" }.to_owned(),
                    m.last_hour.clone(),
                    m.customers.to_string(),
                    cubic_meters(m.total_ml),
                    cubic_meters(m.total_ml / (m.customers.max(1) as i64)),
                    format!("{} ({})", cubic_meters(m.largest.1), m.largest.0),
                ]
            })
            .collect();
        html::para(&format!(
            "Bills are the running totals at each month's last hour; a month is closed once the \
             watermark ({}) passed its end.",
            self.watermark.as_deref().unwrap_or("none")
        )) + &html::table(
            &[
                "month",
                "status",
                "last hour",
                "customers",
                "total m³",
                "mean m³",
                "largest m³",
            ],
            &rows,
        )
    }
}

impl fmt::Display for CustomerMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.points.iter().filter(|p| p.usage_ml > 0).count();
        let total = self.points.last().map_or(0, |p| p.cumulative_ml);
        write!(
            f,
            "{} in {}: {} hours, {used} with usage, running total {} m³",
            self.customer,
            self.month,
            self.points.len(),
            cubic_meters(total)
        )
    }
}

impl Shown for CustomerMonth {
    fn html(&self) -> String {
        self.svg.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_meters_are_exact() {
        assert_eq!(cubic_meters(0), "0");
        assert_eq!(cubic_meters(1_500_000), "1.5");
        assert_eq!(cubic_meters(123_456_789), "123.456789");
        assert_eq!(cubic_meters(-1), "-0.000001");
    }
}
