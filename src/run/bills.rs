//! The bills, the last part of the cumulative step: when the batch's watermark passes a billing
//! month's end, the month's running totals at its last hour are final, and they go to
//! `monthly_bills` with how complete each customer's readings were (one commit for every month
//! the batch closes). Written once: later records of the month are late by definition.

use std::collections::BTreeSet;

use polars::prelude::*;

use super::{BillsWritten, ClosedMonth, Run};
use crate::error::{Error, Result};
use crate::query::bills::{
    BillSource, ClosingMonth, Completeness, bill_rows, bills_with_gaps, closing_months,
};
use crate::table::{CUMULATIVE_USAGE, HOURLY_USAGE, MONTHLY_BILLS, Table, block_on, col};

/// Hour partitions of `hourly_usage` read at a time to fold a month's completeness: a day.
const HOURS_PER_READ: usize = 24;

impl Run {
    /// Writes the bills of the months whose end this batch's watermark passes (none, mostly).
    pub(super) fn write_bills(&mut self) -> Result<BillsWritten> {
        let batch = self.batch.plan.batch_id;
        let mut bills = self.open(&MONTHLY_BILLS)?;
        if block_on(bills.has_batch(batch))?? {
            self.keep(bills);
            return Ok(BillsWritten {
                committed: crate::table::Committed::AlreadyCommitted,
                months: Vec::new(),
            });
        }
        let cumulative = self.open(&CUMULATIVE_USAGE)?;
        let hourly = self.open(&HOURLY_USAGE)?;
        let closing = closing_months(
            &cumulative.partitions(),
            self.batch.plan.watermark_before,
            self.batch.watermark_after,
            self.config.billing_timezone,
        );
        let source = BillSource {
            batch,
            computed_by: crate::provenance::computed_by(),
            parameters: crate::provenance::bill_parameters(
                self.config.billing_timezone.name(),
                self.batch.clock_skew_minutes(&self.config),
            ),
        };
        let rows = closing.and_then(|closing| {
            closing
                .iter()
                .map(|month| month_bills(&cumulative, &hourly, month, &source))
                .collect::<Result<Vec<_>>>()
        });
        self.keep(cumulative);
        self.keep(hourly);
        let rows = rows?;
        let months = rows
            .iter()
            .map(|(month, rows)| closed(month, rows))
            .collect::<Result<Vec<_>>>()?;
        let committed = if rows.is_empty() {
            crate::table::Committed::Nothing
        } else {
            let all = concat(
                rows.into_iter().map(|(_, r)| r.lazy()).collect::<Vec<_>>(),
                UnionArgs::default(),
            )
            .and_then(LazyFrame::collect)
            .map_err(Error::polars("monthly_bills rows"))?;
            block_on(bills.commit_removing(batch, Some(&all), &BTreeSet::new(), &BTreeSet::new()))??
        };
        self.keep(bills);
        Ok(BillsWritten { committed, months })
    }
}

/// The bills of `month`: the totals at its last stored hour, with the completeness of each
/// customer's readings folded over the month's `hourly_usage` a day at a time.
fn month_bills(
    cumulative: &Table,
    hourly: &Table,
    month: &ClosingMonth,
    source: &BillSource,
) -> Result<(ClosingMonth, DataFrame)> {
    let last = BTreeSet::from([month.last_stored]);
    let totals = block_on(cumulative.read_hours(&last))??;
    let mut completeness = Completeness::default();
    let hours: Vec<i64> = hourly
        .partitions()
        .range(month.start..month.end)
        .copied()
        .collect();
    for chunk in hours.chunks(HOURS_PER_READ) {
        let chunk: BTreeSet<i64> = chunk.iter().copied().collect();
        completeness.add(block_on(hourly.read_hours(&chunk))??)?;
    }
    Ok((
        month.clone(),
        bill_rows(totals, completeness, month, source)?,
    ))
}

/// What the report says of a month closed with `rows`.
fn closed(month: &ClosingMonth, rows: &DataFrame) -> Result<ClosedMonth> {
    let totals = rows
        .column(col::TOTAL_ML)
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("monthly_bills report"))?;
    Ok(ClosedMonth {
        month: month.month.clone(),
        customers: rows.height(),
        total_ml: totals.sum().unwrap_or(0),
        with_gaps: bills_with_gaps(rows)?,
    })
}
