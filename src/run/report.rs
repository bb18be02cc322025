//! What each step returns: what it did, as data. `present` shows these as text and HTML.

use std::collections::BTreeMap;

use polars::prelude::DataFrame;

use super::Counts;
use crate::input::HeldBack;
use crate::table::Committed;

/// The files a run takes.
#[derive(Debug, Clone)]
pub struct PlanReport {
    /// Batch id.
    pub batch_id: i64,
    /// True when the batch was planned by a run that did not finish.
    pub resumed: bool,
    /// Files (relative path, bytes).
    pub files: Vec<(String, u64)>,
    /// Paths that do not fit the log's layout, with the reason.
    pub ignored: Vec<(String, &'static str)>,
    /// Ingestion-hour folders dated after the current hour: not taken.
    pub held_back: Vec<HeldBack>,
    /// Watermark before the run.
    pub watermark_before: Option<String>,
    /// New files beyond this batch, for the run's later batches.
    pub later: usize,
}

/// What parsing found.
#[derive(Debug, Clone)]
pub struct ParseReport {
    /// Files read.
    pub files: usize,
    /// Lines read.
    pub lines_read: u64,
    /// Valid records.
    pub records: usize,
    /// Quarantined lines per reason.
    pub quarantined: BTreeMap<&'static str, u64>,
    /// The first parsed records.
    pub head: DataFrame,
}

/// What the watermark and dedup decided.
#[derive(Debug, Clone)]
pub struct DedupReport {
    /// The run's counts so far.
    pub counts: Counts,
    /// Recording hours that got new readings.
    pub hours_touched: usize,
    /// Dedup-state rows read (the touched hours' earlier readings).
    pub prior_rows: usize,
    /// Slices by meter the batch was classified in, one after another (see
    /// [`crate::query::classify`]).
    pub slices: usize,
    /// How dedup classified the batch (its pass, key and slices), for `explain`.
    pub method: String,
}

/// What a table step committed.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Table name.
    pub table: &'static str,
    /// The commit.
    pub committed: Committed,
    /// Rows written.
    pub rows: usize,
    /// Hour partitions rewritten (whole, or their side files alone).
    pub partitions: usize,
    /// Of those, the hours whose side files alone were rewritten.
    pub side_only: usize,
    /// The first rows written.
    pub head: DataFrame,
    /// Polars' optimized plan of the aggregation, when there is one to show.
    pub plan: Option<String>,
    /// The billing months the step closed (`cumulative_usage` only).
    pub bills: Option<BillsWritten>,
}

/// How a batch's dedup ran and Polars' optimized plan of its aggregation, kept for `explain`.
#[derive(Debug, Clone, Default)]
pub struct QueryPlans {
    /// How dedup classified the batch ([`DedupReport::method`]).
    pub dedup: Option<String>,
    /// The aggregation's plan, when the hourly step ran one.
    pub aggregation: Option<String>,
}

/// What the cumulative step wrote to `monthly_bills`: the months whose end the watermark passed.
#[derive(Debug, Clone)]
pub struct BillsWritten {
    /// The commit (one for every month the batch closed).
    pub committed: Committed,
    /// The months closed, oldest first.
    pub months: Vec<ClosedMonth>,
}

/// One billing month closed by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedMonth {
    /// `YYYY-MM` in the billing time zone.
    pub month: String,
    /// Customers billed.
    pub customers: usize,
    /// Sum of the bills, ml.
    pub total_ml: i64,
    /// Bills with an hour without readings since the customer's first reading of the month.
    pub with_gaps: usize,
}

impl TableReport {
    /// A table step skipped because the batch already committed to the table.
    pub(super) fn skipped(table: &'static str) -> Self {
        Self::untouched(table, Committed::AlreadyCommitted)
    }

    /// A table step of a run without files: the table is not touched (no version records a
    /// batch that took nothing).
    pub(super) fn no_files(table: &'static str) -> Self {
        Self::untouched(table, Committed::Nothing)
    }

    fn untouched(table: &'static str, committed: Committed) -> Self {
        Self {
            table,
            committed,
            rows: 0,
            partitions: 0,
            side_only: 0,
            head: DataFrame::empty(),
            plan: None,
            bills: None,
        }
    }
}
