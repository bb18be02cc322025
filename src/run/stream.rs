//! Streaming a table step hour by hour: a helper thread reads the next hour partitions while
//! the step works on the one before, and [`RowsWritten`] counts what goes to the writers.

use std::collections::BTreeSet;

use polars::prelude::DataFrame;

use super::report::TableReport;
use crate::error::Result;
use crate::table::{Committed, Table, block_on};

/// Hands the rows of each hour partition in `hours` of `table`, in order, to `each`, while a
/// helper thread reads the next few: reading overlaps the work on the hour before.
pub(super) fn read_ahead(
    table: &Table,
    hours: &[i64],
    mut each: impl FnMut(i64, DataFrame) -> Result<()>,
) -> Result<()> {
    const AHEAD: usize = 2;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<(i64, DataFrame)>>(AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for &hour in hours {
                let rows = block_on(table.read_hours(&BTreeSet::from([hour]))).and_then(|r| r);
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
            head: self.head.unwrap_or_default(),
            plan: None,
        }
    }
}
