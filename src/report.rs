//! What each step shows in the notebook: small reports with a text form (`Display`, for logs
//! and papermill) and an HTML table helper for a few rows.

use std::collections::BTreeMap;
use std::fmt;

use polars::prelude::*;

use crate::delta::Committed;
use crate::error::{Error, Result};
use crate::hours::format_hour;
use crate::parse::Parsed;
use crate::run::Counts;

/// Implements evcxr's display hook as the report's text.
macro_rules! evcxr_text {
    ($t:ty) => {
        impl $t {
            /// Shows the report in a notebook (evcxr calls this for a cell's last expression).
            pub fn evcxr_display(&self) {
                println!("EVCXR_BEGIN_CONTENT text/plain\n{self}\nEVCXR_END_CONTENT");
            }
        }
    };
}

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
    /// Watermark before the run.
    pub watermark_before: Option<String>,
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: u64 = self.files.iter().map(|x| x.1).sum();
        let resumed = if self.resumed {
            " (resuming an unfinished run)"
        } else {
            ""
        };
        writeln!(
            f,
            "batch {}{resumed}: {} new files, {bytes} bytes",
            self.batch_id,
            self.files.len()
        )?;
        writeln!(
            f,
            "watermark before the run: {}",
            self.watermark_before.as_deref().unwrap_or("none")
        )?;
        for (path, size) in self.files.iter().take(5) {
            writeln!(f, "  {path} ({size} bytes)")?;
        }
        if self.files.len() > 5 {
            writeln!(f, "  ... and {} more", self.files.len() - 5)?;
        }
        for (path, why) in &self.ignored {
            writeln!(f, "  ignored {path}: {why}")?;
        }
        Ok(())
    }
}
evcxr_text!(PlanReport);

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
    /// The first rows of the parsed records.
    pub head: DataFrame,
}

impl ParseReport {
    pub(crate) fn new(parsed: &Parsed, files: usize) -> Self {
        let mut quarantined = BTreeMap::new();
        for q in &parsed.quarantined {
            *quarantined.entry(q.reason.as_str()).or_default() += 1;
        }
        Self {
            files,
            lines_read: parsed.lines_read,
            records: parsed.records.height(),
            quarantined,
            head: readable(&parsed.records.head(Some(5))),
        }
    }
}

impl fmt::Display for ParseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} lines in {} files: {} valid records",
            self.lines_read, self.files, self.records
        )?;
        for (reason, n) in &self.quarantined {
            writeln!(f, "  quarantined {n} lines: {reason}")?;
        }
        write_head(f, &self.head)
    }
}
evcxr_text!(ParseReport);

/// What the watermark and dedup decided.
#[derive(Debug, Clone)]
pub struct DedupReport {
    /// The run's counts so far.
    pub counts: Counts,
    /// Recording hours that got new readings.
    pub hours_touched: usize,
    /// Dedup-state rows read (the touched hours' earlier readings).
    pub prior_rows: usize,
    /// Polars' optimized plan of the dedup query.
    pub plan: String,
}

impl fmt::Display for DedupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "read {} = accepted {} + duplicates {} + quarantined {}",
            c.lines_read,
            c.accepted,
            c.duplicates,
            c.quarantined()
        )?;
        writeln!(
            f,
            "  quarantined: malformed {}, late {}, future {}, conflicts {}",
            c.malformed, c.late, c.future, c.conflicts
        )?;
        writeln!(
            f,
            "  {} recording hours touched; {} earlier readings of those hours read from the dedup state",
            self.hours_touched, self.prior_rows
        )?;
        writeln!(f, "dedup plan (optimized):")?;
        write!(f, "{}", self.plan)
    }
}
evcxr_text!(DedupReport);

/// What a table commit did.
#[derive(Debug, Clone)]
pub struct TableReport {
    /// Table name.
    pub table: &'static str,
    /// The commit.
    pub committed: Committed,
    /// Rows written.
    pub rows: usize,
    /// Hour partitions replaced.
    pub partitions: usize,
    /// The first rows written.
    pub head: DataFrame,
}

impl TableReport {
    pub(crate) fn new(
        table: &'static str,
        committed: Committed,
        rows: DataFrame,
        partitions: usize,
    ) -> Self {
        Self {
            table,
            committed,
            rows: rows.height(),
            partitions,
            head: readable(&rows.head(Some(5))),
        }
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.committed {
            Committed::Version(v) => format!("committed version {v}"),
            Committed::AlreadyCommitted => {
                "already committed by an earlier attempt of this batch: skipped".to_owned()
            }
            Committed::Nothing => "nothing to change".to_owned(),
        };
        writeln!(
            f,
            "{}: {what}; {} rows in {} hour partitions",
            self.table, self.rows, self.partitions
        )?;
        write_head(f, &self.head)
    }
}
evcxr_text!(TableReport);

/// The run's metrics, as printed and as stored in `run_metrics`.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    /// Batch id.
    pub batch_id: i64,
    /// Start of the run, µs since the epoch.
    pub started_at_us: i64,
    /// Files processed.
    pub files: u64,
    /// Record counts.
    pub counts: Counts,
    /// Recording hours that got new readings.
    pub hours_touched: u64,
    /// Dedup-state rows read (earlier readings of the recording hours the batch touched).
    pub state_rows_read: u64,
    /// Watermark after the run.
    pub watermark_hour: String,
    /// Wall time so far.
    pub duration_ms: i64,
    /// Wall time per step.
    pub steps: Vec<(&'static str, u128)>,
}

impl RunMetrics {
    /// The metrics as the `run_metrics` table's row.
    pub fn frame(&self) -> Result<DataFrame> {
        let c = &self.counts;
        let long = |name: &str, v: u64| Column::new(name.into(), [v as i64]);
        let step = |name: &str| {
            let ms = self
                .steps
                .iter()
                .filter(|s| s.0 == name)
                .map(|s| s.1)
                .sum::<u128>();
            Column::new(format!("{name}_ms").into(), [ms as i64])
        };
        DataFrame::new(
            1,
            vec![
                Column::new("batch_id".into(), [self.batch_id]),
                Column::new("started_at".into(), [self.started_at_us]),
                long("files", self.files),
                long("lines_read", c.lines_read),
                long("accepted", c.accepted),
                long("duplicates", c.duplicates),
                long("conflicts", c.conflicts),
                long("late", c.late),
                long("future", c.future),
                long("malformed", c.malformed),
                long("hours_touched", self.hours_touched),
                long("state_rows_read", self.state_rows_read),
                Column::new("watermark_hour".into(), [self.watermark_hour.as_str()]),
                Column::new("duration_ms".into(), [self.duration_ms]),
                step("plan"),
                step("parse"),
                step("dedup"),
                step("hourly_usage"),
                step("cumulative_usage"),
                step("finish"),
            ],
        )
        .map_err(Error::polars("run metrics"))
    }
}

impl fmt::Display for RunMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        if self.files == 0 {
            return write!(f, "no new files: nothing changed");
        }
        writeln!(
            f,
            "batch {}: {} files, {} lines",
            self.batch_id, self.files, c.lines_read
        )?;
        writeln!(
            f,
            "  accepted {}, duplicates {}, conflicts {}, late {}, future {}, malformed {}",
            c.accepted, c.duplicates, c.conflicts, c.late, c.future, c.malformed
        )?;
        writeln!(
            f,
            "  check: read {} = accepted + duplicates + quarantined = {}",
            c.lines_read,
            c.accepted + c.duplicates + c.quarantined()
        )?;
        writeln!(
            f,
            "  hours touched {}, watermark {}",
            self.hours_touched, self.watermark_hour
        )?;
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(s, ms)| format!("{s} {ms} ms"))
            .collect();
        write!(f, "  {} ms: {}", self.duration_ms, steps.join(", "))
    }
}
evcxr_text!(RunMetrics);

/// Writes the first rows of a frame, or nothing when it is empty.
fn write_head(f: &mut fmt::Formatter<'_>, head: &DataFrame) -> fmt::Result {
    if head.height() == 0 {
        return Ok(());
    }
    write!(f, "{head}")
}

/// A copy for people: hour indexes as `YYYY-MM-DDTHH`, times as RFC 3339, no internal columns.
fn readable(df: &DataFrame) -> DataFrame {
    let mut columns = Vec::new();
    for column in df.columns() {
        let name = column.name().as_str();
        let values = column.i64().ok();
        let text = |f: &dyn Fn(i64) -> String| -> Option<Column> {
            let strings: Vec<Option<String>> = values?.iter().map(|v| v.map(f)).collect();
            Some(Column::new(name.into(), strings))
        };
        let shown = match name {
            "seq" => continue,
            "usage_hour" | "ingest_hour" => text(&format_hour),
            "recorded_at" => text(&|us| {
                chrono::DateTime::from_timestamp_micros(us)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default()
            }),
            _ => None,
        };
        columns.push(shown.unwrap_or_else(|| column.clone()));
    }
    DataFrame::new(df.height(), columns).unwrap_or_else(|_| df.clone())
}
