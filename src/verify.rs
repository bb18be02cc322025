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

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::DataFrame;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{format_hour, month_start_hour};
use crate::run::checked_tables;
use crate::state::{Store, marker};
use crate::table::{
    CUMULATIVE_USAGE, HOURLY_USAGE, MONTHLY_BILLS, QUARANTINE, RUN_METRICS, Spec, Table, block_on,
    col,
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

/// `cumulative_usage` against `hourly_usage` hour by hour, and the bills against the totals.
fn running_totals(
    hourly: Option<Table>,
    cumulative: Option<Table>,
    bills: &DataFrame,
    config: &Config,
) -> Result<(Check, Check)> {
    let (mut totals, mut checked_bills) = (Found::new(), Found::new());
    // (customer, last hour) -> (month, total) of every bill.
    let mut open_bills: BTreeMap<(String, i64), (String, i64)> = BTreeMap::new();
    let (customers, months) = (
        strs(bills, col::CUSTOMER_ID)?,
        strs(bills, col::BILLING_MONTH)?,
    );
    let (amounts, last_hours) = (longs(bills, col::TOTAL_ML)?, longs(bills, col::LAST_HOUR)?);
    for i in 0..bills.height() {
        let key = (customers[i].clone(), last_hours[i]);
        if open_bills
            .insert(key, (months[i].clone(), amounts[i]))
            .is_some()
        {
            checked_bills.add(format!(
                "customer {} has two bills ending at {}",
                customers[i],
                format_hour(last_hours[i])
            ));
        }
    }
    let bill_count = open_bills.len();
    let hourly_hours = hourly.as_ref().map(Table::partitions).unwrap_or_default();
    let cumulative_hours = cumulative
        .as_ref()
        .map(Table::partitions)
        .unwrap_or_default();
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // The customers of each month, from its first hour.
    let mut month_customers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rows = 0usize;
    for &hour in hourly_hours.union(&cumulative_hours) {
        let name = format_hour(hour);
        let usage: BTreeMap<String, i64> = match (&hourly, hourly_hours.contains(&hour)) {
            (Some(table), true) => {
                let frame = block_on(table.read_hours(&BTreeSet::from([hour])))??;
                let ids = strs(&frame, col::CUSTOMER_ID)?;
                let ml = longs(&frame, col::USAGE_ML)?;
                if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
                    totals.add(format!("hourly_usage has a customer twice in hour {name}"));
                }
                ids.into_iter().zip(ml).collect()
            }
            _ => BTreeMap::new(),
        };
        let Some(table) = cumulative
            .as_ref()
            .filter(|_| cumulative_hours.contains(&hour))
        else {
            totals.add(format!(
                "hour {name} has hourly_usage rows and no cumulative_usage rows"
            ));
            continue;
        };
        let frame = block_on(table.read_hours(&BTreeSet::from([hour])))??;
        rows += frame.height();
        let ids = strs(&frame, col::CUSTOMER_ID)?;
        let (in_month, ml) = (
            strs(&frame, col::BILLING_MONTH)?,
            longs(&frame, col::USAGE_ML)?,
        );
        let total = longs(&frame, col::CUMULATIVE_ML)?;
        let first_hour = month_start_hour(hour, config.billing_timezone)?;
        let mut here: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for i in 0..frame.height() {
            let (customer, month) = (&ids[i], &in_month[i]);
            if !here
                .entry(month.clone())
                .or_default()
                .insert(customer.clone())
            {
                totals.add(format!("customer {customer} has two rows in hour {name}"));
                continue;
            }
            let expected_usage = usage.get(customer).copied().unwrap_or(0);
            if ml[i] != expected_usage {
                totals.add(format!(
                    "customer {customer}, hour {name}: usage {} in cumulative_usage, {} in \
                     hourly_usage",
                    ml[i], expected_usage
                ));
            }
            let before = running
                .get(customer)
                .filter(|r| r.month == *month && r.hour == hour - 1)
                .map(|r| r.total);
            let expected_total = match before {
                Some(previous) => previous + ml[i],
                None if hour == first_hour => ml[i],
                None => {
                    totals.add(format!(
                        "customer {customer} has no row in the hour before {name} of month \
                         {month}"
                    ));
                    total[i]
                }
            };
            if total[i] != expected_total {
                totals.add(format!(
                    "customer {customer}, hour {name}: running total {}, expected {expected_total}",
                    total[i]
                ));
            }
            running.insert(
                customer.clone(),
                Running {
                    month: month.clone(),
                    hour,
                    total: total[i],
                },
            );
            if let Some((bill_month, amount)) = open_bills.remove(&(customer.clone(), hour))
                && (bill_month != *month || amount != total[i])
            {
                checked_bills.add(format!(
                    "customer {customer}'s bill for {bill_month} is {amount} ml, and the \
                     running total at its last hour {name} is {} ml ({month})",
                    total[i]
                ));
            }
        }
        for customer in usage.keys() {
            if !here.values().any(|customers| customers.contains(customer)) {
                totals.add(format!(
                    "customer {customer} has hourly_usage in hour {name} and no \
                     cumulative_usage row"
                ));
            }
        }
        for (month, customers) in here {
            let known = month_customers.entry(month.clone()).or_default();
            if hour == first_hour {
                *known = customers;
            } else if *known != customers {
                totals.add(format!(
                    "month {month}, hour {name}: {} customers, {} in the month's first hour",
                    customers.len(),
                    known.len()
                ));
                *known = customers;
            }
        }
    }
    for ((customer, hour), (month, _)) in open_bills {
        checked_bills.add(format!(
            "customer {customer}'s bill for {month} ends at hour {}, which has no running total",
            format_hour(hour)
        ));
    }
    Ok((
        totals.check(
            "running totals",
            format!(
                "{rows} rows in {} hours",
                hourly_hours.union(&cumulative_hours).count()
            ),
        ),
        checked_bills.check("bills", format!("{bill_count} bills")),
    ))
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
    let values = frame
        .column(name)
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("verify"))?;
    values
        .iter()
        .map(|v| v.ok_or_else(|| Error::table_data("verify", name, "a null")))
        .collect()
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
