//! When a run compacts small files, riding on the commits it makes anyway: the policy's numbers,
//! and the compacting append of the small unpartitioned tables.

use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::table::{Table, block_on};

/// Dedup-state files with fewer rows than this are small: what runs reaching back into an hour
/// append (a live hour at 2,000 meters has 24k readings).
pub(super) const SMALL_FILE_ROWS: usize = 20_000;
/// An hour partition's small dedup-state files are compacted when a run would make them this many.
pub(super) const STATE_SMALL_FILES: usize = 4;
/// The side files of a `cumulative_usage` hour that zero rows of customers new to the month
/// were appended to are rewritten as one once the hour (its main file included) would have
/// this many files.
pub(super) const CUMULATIVE_FILES_PER_HOUR: usize = 4;
/// `quarantine` and `run_metrics` (one small file per run) are rewritten as one file once they
/// would have this many.
const APPEND_TABLE_FILES: usize = 48;
/// Every this many batches (about daily on an hourly schedule) a run vacuums the tables.
pub(super) const VACUUM_EVERY_BATCHES: i64 = 24;

/// Appends `rows` to an unpartitioned table as batch `batch`; once the table has many files,
/// the same commit rewrites them and the new rows as one file.
pub(super) fn append_compacting(table: &mut Table, batch: i64, rows: &DataFrame) -> Result<()> {
    let old = table.appended_files(APPEND_TABLE_FILES - 1);
    let rows = if old.is_empty() {
        rows.clone()
    } else {
        let mut all = block_on(table.read_files(&Default::default(), &old))??;
        all.vstack_mut(rows).map_err(Error::polars("compaction"))?;
        all
    };
    block_on(table.commit_removing(batch, Some(&rows), &Default::default(), &old))??;
    Ok(())
}
