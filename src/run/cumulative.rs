//! The `cumulative_usage` step: each affected billing month recomputed from its earliest
//! changed hour (as [`plan_months`] decides), hour by hour, each hour continuing the totals of
//! the hour before; customers new to a month get zero rows from the month's first hour; hours the
//! watermark passed are rewritten final. One commit replaces every rewritten hour.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use super::compaction::{CUMULATIVE_FILES_PER_HOUR, SMALL_FILE_ROWS};
use super::stream::{RowsWritten, read_ahead};
use super::{Run, TableReport};
use crate::error::{Error, Result};
use crate::query::cumulative::{MonthPlan, final_rewrites, next_cumulative_hour, plan_months};
use crate::table::{CUMULATIVE_USAGE, HOURLY_USAGE, Table, block_on, col};

/// A month's recomputation with the data it starts from.
struct MonthStart {
    plan: MonthPlan,
    /// Totals through `plan.from - 1` (`customer_id`, `cumulative_ml`), newcomers at 0.
    totals: DataFrame,
    /// Customers new to the month, with `cumulative_ml` 0.
    newcomers: DataFrame,
}

impl MonthStart {
    /// Hours before `from` that get zero rows for the newcomers.
    fn zero_hours(&self) -> std::ops::Range<i64> {
        if self.newcomers.height() > 0 {
            self.plan.start..self.plan.from
        } else {
            self.plan.start..self.plan.start
        }
    }
}

impl Run {
    /// Updates `cumulative_usage` from the earliest changed hour of each billing month on (the
    /// first hour that got new usage, or the first hour new to the month), hour by hour: each
    /// hour's totals continue from the hour before, starting from the stored totals of the hour
    /// before the first. Customers new to the month also get zero rows from the month's first
    /// hour. Hours the watermark passed are rewritten as final.
    pub fn write_cumulative(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        let batch = self.batch.plan.batch_id;
        let tz = self.config.billing_timezone;
        let hourly = self.open(&HOURLY_USAGE)?;
        let mut cumulative = self.open(&CUMULATIVE_USAGE)?;
        if block_on(cumulative.has_batch(batch))?? {
            return Ok(TableReport::skipped(CUMULATIVE_USAGE.name));
        }
        let classified = self.classified("cumulative")?;
        let stored = cumulative.partitions();
        let plans = plan_months(
            &classified.affected_hours,
            &hourly.partitions(),
            &stored,
            tz,
        )?;
        let rewritten = final_rewrites(
            &stored,
            self.batch.plan.watermark_before,
            self.batch.watermark_after,
            &plans,
        );
        let mut months = Vec::with_capacity(plans.len());
        for plan in plans {
            months.push(month_start(&cumulative, &classified.accepted, plan)?);
        }
        let recomputed: BTreeSet<i64> = months
            .iter()
            .flat_map(|m| m.plan.from..=m.plan.last)
            .collect();
        let zeroed: BTreeSet<i64> = months.iter().flat_map(MonthStart::zero_hours).collect();
        // Hours getting zero rows that already have a few small files: those are rewritten as
        // one with the new rows (the hour's large file stays).
        let mut crowded =
            cumulative.small_files(&zeroed, SMALL_FILE_ROWS, CUMULATIVE_FILES_PER_HOUR - 1);
        crowded.retain(|h, _| !rewritten.contains(h) && !recomputed.contains(h));
        let compacted: BTreeSet<String> = crowded.values().flatten().cloned().collect();
        let wm = self.batch.watermark_after;
        let is_final = |hour: i64| wm.is_some_and(|w| hour < w);
        let mut written_rows = RowsWritten::default();
        let written = cumulative.write_frames(|emit| {
            let mut done = BTreeSet::new();
            for m in &months {
                for hour in m.zero_hours() {
                    let mut rows = next_cumulative_hour(
                        &m.newcomers,
                        &usage_of_none()?,
                        hour,
                        &m.plan.month,
                        is_final(hour),
                    )?;
                    let stored_too = rewritten.contains(&hour) || crowded.contains_key(&hour);
                    if stored_too && done.insert(hour) {
                        let stored = stored_rows(&cumulative, &crowded, hour, is_final(hour))?;
                        rows = stack(stored, rows)?;
                    }
                    emit(written_rows.note(rows))?;
                }
                let mut totals = m.totals.clone();
                let hours: Vec<i64> = (m.plan.from..=m.plan.last).collect();
                read_ahead(&hourly, &hours, |hour, usage| {
                    let rows =
                        next_cumulative_hour(&totals, &usage, hour, &m.plan.month, is_final(hour))?;
                    totals = rows
                        .select([col::CUSTOMER_ID, col::CUMULATIVE_ML])
                        .map_err(Error::polars("cumulative"))?;
                    emit(written_rows.note(rows))
                })?;
            }
            for &hour in rewritten.difference(&done) {
                emit(written_rows.note(stored_rows(&cumulative, &crowded, hour, is_final(hour))?))?;
            }
            Ok(())
        })?;
        let replace: BTreeSet<i64> = recomputed.union(&rewritten).copied().collect();
        let committed = block_on(cumulative.commit_written(batch, written, &replace, &compacted))??;
        self.step_done("cumulative_usage", t);
        Ok(written_rows.report(CUMULATIVE_USAGE.name, committed, replace.len()))
    }
}

/// Reads what a month's recomputation starts from: the stored totals of the hour before, and
/// the customers new to the month (from the batch's readings of the month, less those the
/// stored hours already hold).
fn month_start(cumulative: &Table, accepted: &DataFrame, plan: MonthPlan) -> Result<MonthStart> {
    let err = Error::polars("cumulative");
    let totals = match plan.totals_from {
        Some(hour) => block_on(cumulative.read_hours(&BTreeSet::from([hour])))??
            .select([col::CUSTOMER_ID, col::CUMULATIVE_ML])
            .map_err(err)?,
        None => totals_of_none()?,
    };
    // Customers of the month: the stored hours hold every customer the month had (dense);
    // those not in the totals start at 0 and, when the recomputation starts after the month's
    // first hour, get zero rows from it.
    let mut customers = vec![
        accepted
            .clone()
            .lazy()
            .filter(col(col::USAGE_HOUR).gt_eq(lit(plan.start)))
            .filter(col(col::USAGE_HOUR).lt(lit(plan.end)))
            .select([col(col::CUSTOMER_ID)]),
    ];
    if let Some(hour) = plan.customers_from {
        let rows = block_on(cumulative.read_hours(&BTreeSet::from([hour])))??;
        customers.push(rows.lazy().select([col(col::CUSTOMER_ID)]));
    }
    let newcomers = concat(customers, UnionArgs::default())
        .map_err(err)?
        .unique(None, UniqueKeepStrategy::Any)
        .join(
            totals.clone().lazy(),
            [col(col::CUSTOMER_ID)],
            [col(col::CUSTOMER_ID)],
            JoinArgs::new(JoinType::Anti),
        )
        .with_column(lit(0i64).cast(DataType::Int64).alias(col::CUMULATIVE_ML))
        .collect()
        .map_err(err)?;
    Ok(MonthStart {
        totals: stack(totals, newcomers.clone())?,
        newcomers,
        plan,
    })
}

/// The stored rows of `hour` (only its small files, when those are being compacted), marked
/// final or not.
fn stored_rows(
    cumulative: &Table,
    crowded: &BTreeMap<i64, BTreeSet<String>>,
    hour: i64,
    is_final: bool,
) -> Result<DataFrame> {
    let hours = BTreeSet::from([hour]);
    let rows = match crowded.get(&hour) {
        Some(paths) => block_on(cumulative.read_files(&hours, paths))??,
        None => block_on(cumulative.read_hours(&hours))??,
    };
    rows.lazy()
        .with_column(lit(is_final).alias(col::IS_FINAL))
        .collect()
        .map_err(Error::polars("cumulative"))
}

/// The rows of `a` followed by those of `b` (same columns).
fn stack(a: DataFrame, b: DataFrame) -> Result<DataFrame> {
    concat([a.lazy(), b.lazy()], UnionArgs::default())
        .and_then(LazyFrame::collect)
        .map_err(Error::polars("stacking rows"))
}

/// No running totals yet (`customer_id`, `cumulative_ml`).
fn totals_of_none() -> Result<DataFrame> {
    no_rows(col::CUMULATIVE_ML)
}

/// No usage (`customer_id`, `usage_ml`).
fn usage_of_none() -> Result<DataFrame> {
    no_rows(col::USAGE_ML)
}

fn no_rows(value: &str) -> Result<DataFrame> {
    DataFrame::new(
        0,
        vec![
            Column::new(col::CUSTOMER_ID.into(), Vec::<String>::new()),
            Column::new(value.into(), Vec::<i64>::new()),
        ],
    )
    .map_err(Error::polars("cumulative"))
}
