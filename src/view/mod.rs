//! What the notebook shows after a run, read back from the committed tables: the bills of the
//! latest billing months ([`bills`], from `monthly_bills` and the month to date), one customer's
//! month ([`customer_month`]), and SQL over the tables for people exploring them ([`sql`],
//! [`tables`]).
//! Read-only: a missing table means "nothing yet", never a table created.

mod bills;
mod customer;
mod sql;
mod tables;

pub use bills::{BillsReport, MonthBills, MonthStatus, bills};
pub use customer::{CustomerMonth, Point, customer_month};
pub use sql::{SQL_ROW_LIMIT, SqlResult, sql};
pub use tables::{TableInfo, TablesReport, tables};

use crate::config::Config;
use crate::error::Result;
use crate::state::Store;
use crate::table::{CUMULATIVE_USAGE, Spec, Table, block_on};

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

/// `cumulative_usage`, if it exists, with its day table (for reads by customer).
fn cumulative_usage(config: &Config) -> Result<Option<Table>> {
    Ok(open_all(config, &[&CUMULATIVE_USAGE], true)?
        .pop()
        .flatten())
}

/// The table of `spec`, if it exists (a view never creates one).
fn open_if_exists(config: &Config, spec: &'static Spec) -> Result<Option<Table>> {
    Ok(open_all(config, &[spec], false)?.pop().flatten())
}

/// The tables of `specs`, in order, where they exist, opened all at once (on object storage an
/// opening is a few round trips one after another); `with_days`: each with its day table
/// attached, if it has one (reads by customer take the final days from it).
fn open_all(
    config: &Config,
    specs: &[&'static Spec],
    with_days: bool,
) -> Result<Vec<Option<Table>>> {
    let days = |spec: &'static Spec| spec.days.filter(|_| with_days);
    let every: Vec<&'static Spec> = specs
        .iter()
        .flat_map(|&spec| std::iter::once(spec).chain(days(spec)))
        .collect();
    let opening = every
        .iter()
        .map(|&spec| async move { Table::open_existing(&spec.dir(config), spec, &[]).await });
    let mut opened = block_on(futures::future::join_all(opening))?.into_iter();
    let mut tables = Vec::with_capacity(specs.len());
    for &spec in specs {
        let table = opened.next().transpose()?.flatten();
        // A day table is an index: one that cannot be opened (damaged, of another version) is
        // left out, and the days are read from the hour files, as without one.
        let day_table = match days(spec) {
            Some(_) => opened.next().and_then(|opened| opened.ok()).flatten(),
            None => None,
        };
        tables.push(table.map(|t| t.with_days(day_table)));
    }
    Ok(tables)
}

/// The tables' watermark (first hour not yet final).
fn watermark(config: &Config) -> Result<Option<i64>> {
    Ok(Store::new(&config.checkpoint_dir).load()?.watermark_hour)
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
