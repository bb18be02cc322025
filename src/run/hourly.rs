//! The `hourly_usage` step: what the accepted readings add to each customer's hours, merged
//! into the stored rows of the recording hours they fall in, hour by hour, and those partitions
//! replaced in one commit.

use std::collections::BTreeSet;
use std::time::Instant;

use polars::prelude::*;

use super::stream::{RowsWritten, read_ahead};
use super::{Run, TableReport};
use crate::error::{Error, Result};
use crate::query::hourly::{hourly_additions, merge_hourly};
use crate::table::{HOURLY_USAGE, block_on, col, split_by_hour};

impl Run {
    /// Adds the accepted readings to the stored rows of the recording hours they fall in and
    /// replaces those partitions of `hourly_usage`, hour by hour.
    pub fn write_hourly(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        let err = Error::polars("hourly");
        let batch = self.batch.plan.batch_id;
        let mut table = self.open(&HOURLY_USAGE)?;
        if block_on(table.has_batch(batch))?? {
            return Ok(TableReport::skipped(HOURLY_USAGE.name));
        }
        let classified = self.classified("hourly")?;
        let query = hourly_additions(
            classified.accepted.clone().lazy(),
            classified.prior.clone().lazy(),
        )
        .map_err(err)?;
        let plan = query.explain(true).map_err(err)?;
        let added = query.collect().map_err(err)?;
        let mut written_rows = RowsWritten::default();
        let written = table.write_frames(|emit| {
            let mut added = split_by_hour(&added, col::USAGE_HOUR)?;
            let hours: Vec<i64> = added.keys().copied().collect();
            read_ahead(&table, &hours, |hour, stored| {
                let added = match added.remove(&hour) {
                    Some(rows) => rows,
                    None => HOURLY_USAGE.empty_frame()?,
                };
                emit(written_rows.note(merge_hourly(&stored, &added, hour)?))
            })
        })?;
        let affected = classified.affected_hours.clone();
        let committed =
            block_on(table.commit_written(batch, written, &affected, &BTreeSet::new()))??;
        self.step_done("hourly_usage", t);
        let mut report = written_rows.report(HOURLY_USAGE.name, committed, affected.len());
        report.plan = Some(plan);
        Ok(report)
    }
}
