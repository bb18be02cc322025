//! Streaming a table step hour by hour: a helper thread reads the next hour partitions while
//! the step works on the one before, and [`RowsWritten`] counts what goes to the writers.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use polars::prelude::DataFrame;

use super::report::TableReport;
use crate::error::Result;
use crate::table::{Committed, Table, block_on};

/// What to read of one hour partition: every file, or the files named.
pub(super) type HourRead = (i64, Option<BTreeSet<String>>);

/// Hands the rows read of each hour partition in `reads` of `table` (all its files, or the files
/// named), in order, to `each`, while a helper thread reads the next few, several at once:
/// reading overlaps the work on the hour before, and on object storage the round trips of
/// several hours overlap each other.
pub(super) fn read_ahead(
    table: &Table,
    reads: &[HourRead],
    mut each: impl FnMut(i64, DataFrame) -> Result<()>,
) -> Result<()> {
    // Hours read and waiting; hours being read at once (each a few round trips on S3).
    const AHEAD: usize = 2;
    const READING: usize = 8;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<(i64, DataFrame)>>(AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let reading = block_on(async {
                let mut hours = futures::stream::iter(reads)
                    .map(|r| read_hour(table, r))
                    .buffered(READING);
                while let Some(rows) = hours.next().await {
                    let failed = rows.is_err();
                    // The receiver reports an error; if it is gone, nobody is waiting.
                    if sender.send(rows).is_err() || failed {
                        break;
                    }
                }
            });
            if let Err(e) = reading {
                let _ = sender.send(Err(e));
            }
        });
        // Dropping the receiver early (on an error) stops the reader at its next send.
        for read in receiver {
            let (hour, rows) = read?;
            each(hour, rows)?;
        }
        Ok(())
    })
}

/// The rows of one hour partition of `table` that `read` names.
async fn read_hour(table: &Table, (hour, files): &HourRead) -> Result<(i64, DataFrame)> {
    let hours = BTreeSet::from([*hour]);
    let rows = match files {
        None => table.read_hours(&hours).await?,
        Some(paths) if paths.is_empty() => table.empty_frame()?,
        Some(paths) => table.read_files(&hours, paths).await?,
    };
    Ok((*hour, rows))
}

/// Rows a streamed table step wrote, and the first few to show.
#[derive(Default)]
pub(super) struct RowsWritten {
    rows: usize,
    head: Option<DataFrame>,
}

impl RowsWritten {
    /// Counts `rows` on their way to the writer.
    pub(super) fn note(&mut self, rows: DataFrame) -> DataFrame {
        self.rows += rows.height();
        if self.head.is_none() && rows.height() > 0 {
            self.head = Some(rows.head(Some(5)));
        }
        rows
    }

    pub(super) fn report(
        self,
        table: &'static str,
        committed: Committed,
        partitions: usize,
    ) -> TableReport {
        TableReport {
            table,
            committed,
            rows: self.rows,
            partitions,
            side_only: 0,
            head: self.head.unwrap_or_default(),
            plan: None,
            bills: None,
        }
    }
}
