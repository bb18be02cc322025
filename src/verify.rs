//! A read-only check of the tables: everything a bill depends on is recomputed from what the
//! tables themselves hold and compared, without writing anything.
//!
//! - the checkpoint and the tables agree (each table's last batch, the pinned parameters, no
//!   unfinished rebuild), as a run would check before writing;
//! - every run's accounting adds up (`lines_read = accepted + duplicates + quarantined`), and the
//!   `quarantine` table holds as many rows of each batch as its metrics say it quarantined;
//! - `cumulative_usage` is dense and its running totals are right: in each billing month every
//!   customer has one row in every hour from the month's first, each hour's usage is the
//!   customer's `hourly_usage` row (0 without one), and each total is the previous hour's plus
//!   that usage; every `hourly_usage` row has its `cumulative_usage` row;
//! - every bill in `monthly_bills` equals the running total at its month's last hour.
//!
//! The tables are read one hour partition at a time, so memory stays bounded by an hour.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::DataFrame;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{format_hour, month_start_hour};
use crate::run::checked_tables;
use crate::state::{Store, marker};
use crate::table::{
    CUMULATIVE_USAGE, HOURLY_USAGE, MONTHLY_BILLS, QUARANTINE, RUN_METRICS, Spec, Table, block_on,
    col, long_values,
};

/// Most disagreements listed per check (the count is always given).
const LISTED: usize = 20;

/// One check and what disagreed.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How much was checked (rows, batches, hours).
    pub checked: String,
    /// Disagreements found (at most [`LISTED`] listed).
    pub problems: Vec<String>,
    /// How many disagreements there were in all.
    pub count: usize,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl VerifyReport {
    /// Whether every check agreed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.count == 0)
    }
}

/// Disagreements of one check, as they are found.
struct Found {
    problems: Vec<String>,
    count: usize,
}

impl Found {
    fn new() -> Self {
        Self {
            problems: Vec::new(),
            count: 0,
        }
    }

    fn add(&mut self, problem: String) {
        self.count += 1;
        if self.problems.len() < LISTED {
            self.problems.push(problem);
        }
    }

    fn check(self, name: &'static str, checked: String) -> Check {
        Check {
            name,
            checked,
            problems: self.problems,
            count: self.count,
        }
    }
}

/// Checks the tables of `config` (see the module documentation); writes nothing.
pub fn verify(config: &Config) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    report.checks.push(agreement(config)?);
    let open = |spec: &'static Spec| -> Result<Option<Table>> {
        block_on(Table::open_existing(&spec.dir(config), spec, &[]))?
    };
    report
        .checks
        .push(accounting(open(&RUN_METRICS)?, open(&QUARANTINE)?)?);
    let bills = match open(&MONTHLY_BILLS)? {
        Some(table) => read_all(&table)?,
        None => MONTHLY_BILLS.empty_frame()?,
    };
    let (totals, bills) = running_totals(
        open(&HOURLY_USAGE)?,
        open(&CUMULATIVE_USAGE)?,
        &bills,
        config,
    )?;
    report.checks.push(totals);
    report.checks.push(bills);
    Ok(report)
}

/// The checkpoint against the tables, as a run checks them before writing.
fn agreement(config: &Config) -> Result<Check> {
    let mut found = Found::new();
    if marker::in_progress(&config.output_root)? {
        found.add("a rebuild is unfinished: run with rebuild = true to finish it".to_owned());
    }
    let store = Store::new(&config.checkpoint_dir);
    let checkpoint = store.load()?;
    match store.committed(&checkpoint).all() {
        Ok(_) => {}
        Err(e @ Error::Checkpoint { .. }) => found.add(e.to_string()),
        Err(e) => return Err(e),
    }
    let resuming = store
        .load_plan(checkpoint.next_batch)?
        .filter(|plan| !plan.files.is_empty())
        .map(|plan| plan.batch_id);
    match checked_tables(config, &checkpoint, resuming, false) {
        Ok(_) => {}
        Err(e @ (Error::Disagree { .. } | Error::Pinned { .. } | Error::TableLayout { .. })) => {
            found.add(e.to_string());
        }
        Err(e) => return Err(e),
    }
    let last = match checkpoint.next_batch {
        0 => "no batch yet".to_owned(),
        next => format!("last batch {}", next - 1),
    };
    Ok(found.check("checkpoint and tables", last))
}

/// Every run's accounting, and the quarantine rows of each batch.
fn accounting(metrics: Option<Table>, quarantine: Option<Table>) -> Result<Check> {
    let mut found = Found::new();
    let metrics = match metrics {
        Some(table) => read_all(&table)?,
        None => RUN_METRICS.empty_frame()?,
    };
    let mut quarantined_rows: BTreeMap<i64, i64> = BTreeMap::new();
    if let Some(table) = quarantine {
        for batch in longs(&read_all(&table)?, col::BATCH_ID)? {
            *quarantined_rows.entry(batch).or_default() += 1;
        }
    }
    let column = |name: &str| longs(&metrics, name);
    let batches = column(col::BATCH_ID)?;
    let lines = column("lines_read")?;
    let kept = ["accepted", "duplicates"]
        .iter()
        .map(|c| column(c))
        .collect::<Result<Vec<_>>>()?;
    let out = ["conflicts", "late", "future", "malformed"]
        .iter()
        .map(|c| column(c))
        .collect::<Result<Vec<_>>>()?;
    let mut seen = BTreeSet::new();
    for (i, &batch) in batches.iter().enumerate() {
        if !seen.insert(batch) {
            found.add(format!("batch {batch} has two rows in run_metrics"));
        }
        let quarantined: i64 = out.iter().map(|c| c[i]).sum();
        let counted = kept.iter().map(|c| c[i]).sum::<i64>() + quarantined;
        if lines[i] != counted {
            found.add(format!(
                "batch {batch} read {} lines but accounted for {counted}",
                lines[i]
            ));
        }
        let rows = quarantined_rows.remove(&batch).unwrap_or(0);
        if rows != quarantined {
            found.add(format!(
                "batch {batch} quarantined {quarantined} lines, and `quarantine` holds {rows} \
                 rows of it"
            ));
        }
    }
    for (batch, rows) in quarantined_rows {
        found.add(format!(
            "`quarantine` holds {rows} rows of batch {batch}, which has no run_metrics row"
        ));
    }
    Ok(found.check("accounting", format!("{} batches", batches.len())))
}

/// A customer's running total as the walk over the hours carries it.
struct Running {
    month: String,
    hour: i64,
    total: i64,
}

/// One customer's row of `cumulative_usage` in one hour, as the walk checks it.
struct Row<'a> {
    customer: &'a str,
    month: &'a str,
    usage: i64,
    total: i64,
}

/// The walk over the hours: what it found, and what it carries from hour to hour.
struct Walk {
    totals: Found,
    bills: Found,
    /// (customer, last hour) -> (month, total) of every bill not yet met by the walk.
    open_bills: BTreeMap<(String, i64), (String, i64)>,
    running: BTreeMap<String, Running>,
    /// The customers of each month, from its first hour.
    month_customers: BTreeMap<String, BTreeSet<String>>,
    rows: usize,
}

impl Walk {
    /// A walk that will meet `bills` (`monthly_bills` rows) at their last hours.
    fn new(bills: &DataFrame) -> Result<Self> {
        let mut walk = Self {
            totals: Found::new(),
            bills: Found::new(),
            open_bills: BTreeMap::new(),
            running: BTreeMap::new(),
            month_customers: BTreeMap::new(),
            rows: 0,
        };
        let (customers, months) = (
            strs(bills, col::CUSTOMER_ID)?,
            strs(bills, col::BILLING_MONTH)?,
        );
        let (amounts, last_hours) = (longs(bills, col::TOTAL_ML)?, longs(bills, col::LAST_HOUR)?);
        for i in 0..bills.height() {
            let key = (customers[i].clone(), last_hours[i]);
            if walk
                .open_bills
                .insert(key, (months[i].clone(), amounts[i]))
                .is_some()
            {
                walk.bills.add(format!(
                    "customer {} has two bills ending at {}",
                    customers[i],
                    format_hour(last_hours[i])
                ));
            }
        }
        Ok(walk)
    }

    /// Checks hour `hour`'s `cumulative_usage` rows (`frame`) against its `hourly_usage`
    /// (`usage` by customer); `first_hour` is the first hour of the hour's billing month.
    fn hour(
        &mut self,
        hour: i64,
        frame: &DataFrame,
        usage: &BTreeMap<String, i64>,
        first_hour: i64,
    ) -> Result<()> {
        let name = format_hour(hour);
        self.rows += frame.height();
        let (ids, in_month) = (
            strs(frame, col::CUSTOMER_ID)?,
            strs(frame, col::BILLING_MONTH)?,
        );
        let (ml, total) = (
            longs(frame, col::USAGE_ML)?,
            longs(frame, col::CUMULATIVE_ML)?,
        );
        let mut here: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for i in 0..frame.height() {
            let row = Row {
                customer: &ids[i],
                month: &in_month[i],
                usage: ml[i],
                total: total[i],
            };
            if !here
                .entry(row.month.to_owned())
                .or_default()
                .insert(row.customer.to_owned())
            {
                self.totals.add(format!(
                    "customer {} has two rows in hour {name}",
                    row.customer
                ));
                continue;
            }
            self.row(hour, &row, usage, first_hour);
        }
        for customer in usage.keys() {
            if !here.values().any(|customers| customers.contains(customer)) {
                self.totals.add(format!(
                    "customer {customer} has hourly_usage in hour {name} and no \
                     cumulative_usage row"
                ));
            }
        }
        self.month_customers_stay(hour, here, first_hour);
        Ok(())
    }

    /// One row: its usage against `hourly_usage`, its total against the hour before, and the
    /// bill that ends in this hour, if any.
    fn row(&mut self, hour: i64, row: &Row<'_>, usage: &BTreeMap<String, i64>, first_hour: i64) {
        let (name, customer, month) = (format_hour(hour), row.customer, row.month);
        let expected_usage = usage.get(customer).copied().unwrap_or(0);
        if row.usage != expected_usage {
            self.totals.add(format!(
                "customer {customer}, hour {name}: usage {} in cumulative_usage, {} in \
                 hourly_usage",
                row.usage, expected_usage
            ));
        }
        let before = self
            .running
            .get(customer)
            .filter(|r| r.month == month && r.hour == hour - 1)
            .map(|r| r.total);
        let expected_total = match before {
            Some(previous) => previous + row.usage,
            None if hour == first_hour => row.usage,
            None => {
                self.totals.add(format!(
                    "customer {customer} has no row in the hour before {name} of month {month}"
                ));
                row.total
            }
        };
        if row.total != expected_total {
            self.totals.add(format!(
                "customer {customer}, hour {name}: running total {}, expected {expected_total}",
                row.total
            ));
        }
        self.running.insert(
            customer.to_owned(),
            Running {
                month: month.to_owned(),
                hour,
                total: row.total,
            },
        );
        if let Some((bill_month, amount)) = self.open_bills.remove(&(customer.to_owned(), hour))
            && (bill_month != month || amount != row.total)
        {
            self.bills.add(format!(
                "customer {customer}'s bill for {bill_month} is {amount} ml, and the running \
                 total at its last hour {name} is {} ml ({month})",
                row.total
            ));
        }
    }

    /// A month's customers are the same in every hour (the table is dense), from its first.
    fn month_customers_stay(
        &mut self,
        hour: i64,
        here: BTreeMap<String, BTreeSet<String>>,
        first_hour: i64,
    ) {
        for (month, customers) in here {
            let known = self.month_customers.entry(month.clone()).or_default();
            if hour == first_hour {
                *known = customers;
            } else if *known != customers {
                self.totals.add(format!(
                    "month {month}, hour {}: {} customers, {} in the month's first hour",
                    format_hour(hour),
                    customers.len(),
                    known.len()
                ));
                *known = customers;
            }
        }
    }

    /// The two checks, once every hour was walked: bills never met are named.
    fn finish(mut self, hours: usize, bill_count: usize) -> (Check, Check) {
        for ((customer, hour), (month, _)) in std::mem::take(&mut self.open_bills) {
            self.bills.add(format!(
                "customer {customer}'s bill for {month} ends at hour {}, which has no running \
                 total",
                format_hour(hour)
            ));
        }
        (
            self.totals.check(
                "running totals",
                format!("{} rows in {hours} hours", self.rows),
            ),
            self.bills.check("bills", format!("{bill_count} bills")),
        )
    }
}

/// `cumulative_usage` against `hourly_usage` hour by hour, and the bills against the totals.
fn running_totals(
    hourly: Option<Table>,
    cumulative: Option<Table>,
    bills: &DataFrame,
    config: &Config,
) -> Result<(Check, Check)> {
    let mut walk = Walk::new(bills)?;
    let bill_count = walk.open_bills.len();
    let hourly_hours = hourly.as_ref().map(Table::partitions).unwrap_or_default();
    let cumulative_hours = cumulative
        .as_ref()
        .map(Table::partitions)
        .unwrap_or_default();
    let hours: BTreeSet<i64> = hourly_hours.union(&cumulative_hours).copied().collect();
    for &hour in &hours {
        let usage = match (&hourly, hourly_hours.contains(&hour)) {
            (Some(table), true) => hourly_usage_of(table, hour, &mut walk.totals)?,
            _ => BTreeMap::new(),
        };
        let Some(table) = cumulative
            .as_ref()
            .filter(|_| cumulative_hours.contains(&hour))
        else {
            walk.totals.add(format!(
                "hour {} has hourly_usage rows and no cumulative_usage rows",
                format_hour(hour)
            ));
            continue;
        };
        let frame = block_on(table.read_hours(&BTreeSet::from([hour])))??;
        let first_hour = month_start_hour(hour, config.billing_timezone)?;
        walk.hour(hour, &frame, &usage, first_hour)?;
    }
    Ok(walk.finish(hours.len(), bill_count))
}

/// Hour `hour`'s usage by customer in `hourly_usage`; a customer twice is named in `found`.
fn hourly_usage_of(table: &Table, hour: i64, found: &mut Found) -> Result<BTreeMap<String, i64>> {
    let frame = block_on(table.read_hours(&BTreeSet::from([hour])))??;
    let ids = strs(&frame, col::CUSTOMER_ID)?;
    let ml = longs(&frame, col::USAGE_ML)?;
    if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
        found.add(format!(
            "hourly_usage has a customer twice in hour {}",
            format_hour(hour)
        ));
    }
    Ok(ids.into_iter().zip(ml).collect())
}

/// Every row of an unpartitioned table.
fn read_all(table: &Table) -> Result<DataFrame> {
    let paths = table.appended_files(0);
    if paths.is_empty() {
        return table.empty_frame();
    }
    block_on(table.read_files(&BTreeSet::new(), &paths))?
}

fn longs(frame: &DataFrame, name: &str) -> Result<Vec<i64>> {
    long_values(frame, name, "verify").map(Cow::into_owned)
}

fn strs(frame: &DataFrame, name: &str) -> Result<Vec<String>> {
    let values = frame
        .column(name)
        .and_then(|c| c.str().cloned())
        .map_err(Error::polars("verify"))?;
    values
        .iter()
        .map(|v| {
            v.map(str::to_owned)
                .ok_or_else(|| Error::table_data("verify", name, "a null"))
        })
        .collect()
}
