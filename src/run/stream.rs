//! Streaming a table step hour by hour: a helper thread reads the next hour partitions while
//! the step works on the one before, and [`RowsWritten`] counts what goes to the writers.

use std::collections::BTreeSet;

use polars::prelude::DataFrame;

use super::report::TableReport;
use crate::error::Result;
use crate::table::{Committed, Table, block_on};

/// What to read of one hour partition: every file, or the files named.
pub(super) type HourRead = (i64, Option<BTreeSet<String>>);

/// Hands the rows read of each hour partition in `reads` of `table` (all its files, or the files
/// named), in order, to `each`, while a helper thread reads the next few: reading overlaps the
/// work on the hour before.
pub(super) fn read_ahead(
    table: &Table,
    reads: &[HourRead],
    mut each: impl FnMut(i64, DataFrame) -> Result<()>,
) -> Result<()> {
    const AHEAD: usize = 2;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<(i64, DataFrame)>>(AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (hour, files) in reads {
                let hour = *hour;
                let hours = BTreeSet::from([hour]);
                let rows = match files {
                    None => block_on(table.read_hours(&hours)),
                    Some(paths) if paths.is_empty() => Ok(table.empty_frame()),
                    Some(paths) => block_on(table.read_files(&hours, paths)),
                }
                .and_then(|r| r);
                let failed = rows.is_err();
                // The receiver reports an error; if it is gone, nobody is waiting.
                if sender.send(rows.map(|rows| (hour, rows))).is_err() || failed {
                    break;
                }
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
