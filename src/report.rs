//! What each step shows in the notebook: small reports with a text form (`Display`, for logs
//! and papermill) and an HTML form (counts, a few rows as a table, query plans).

use std::collections::BTreeMap;
use std::fmt;

use polars::prelude::*;

use crate::delta::Committed;
use crate::error::{Error, Result};
use crate::hours::format_hour;
use crate::html;
use crate::parse::Parsed;
use crate::run::Counts;

/// A step's output: text for logs and papermill (`Display`), HTML for Jupyter.
pub trait Shown: fmt::Display {
    /// The HTML form.
    fn html(&self) -> String;

    /// Shows the output in a notebook as both text and HTML (evcxr calls this for a cell's
    /// last expression).
    fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT text/plain\n{self}\nEVCXR_END_CONTENT\n\
             EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            self.html()
        );
    }
}

impl Shown for crate::config::Config {
    fn html(&self) -> String {
        let text = self.to_string();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|line| match line.split_once(' ') {
                Some((name, value)) => vec![name, value.trim_start()],
                None => vec![line, ""],
            })
            .collect();
        html::table(&["setting", "value"], &rows)
    }
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

impl Shown for PlanReport {
    fn html(&self) -> String {
        let bytes: u64 = self.files.iter().map(|x| x.1).sum();
        let mut out = html::para(&format!(
            "Batch {}{}: {} new files, {bytes} bytes. Watermark before the run: {}.",
            self.batch_id,
            if self.resumed {
                " (resuming an unfinished run)"
            } else {
                ""
            },
            self.files.len(),
            self.watermark_before.as_deref().unwrap_or("none")
        ));
        let mut rows: Vec<Vec<String>> = self
            .files
            .iter()
            .take(5)
            .map(|(path, size)| vec![path.clone(), size.to_string()])
            .collect();
        if self.files.len() > 5 {
            rows.push(vec![
                format!("... and {} more", self.files.len() - 5),
                String::new(),
            ]);
        }
        if !rows.is_empty() {
            out += &html::table(&["file", "bytes"], &rows);
        }
        if !self.ignored.is_empty() {
            let rows: Vec<Vec<&str>> = self
                .ignored
                .iter()
                .map(|(p, w)| vec![p.as_str(), *w])
                .collect();
            out += &html::para("Not part of the log (ignored):");
            out += &html::table(&["path", "why"], &rows);
        }
        out
    }
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

impl Shown for ParseReport {
    fn html(&self) -> String {
        let mut out = html::para(&format!(
            "{} lines in {} files: {} valid records.",
            self.lines_read, self.files, self.records
        ));
        if !self.quarantined.is_empty() {
            let rows: Vec<Vec<String>> = self
                .quarantined
                .iter()
                .map(|(reason, n)| vec![(*reason).to_owned(), n.to_string()])
                .collect();
            out += &html::table(&["quarantined as", "lines"], &rows);
        }
        out + &head_html("First records:", &self.head)
    }
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

impl Shown for DedupReport {
    fn html(&self) -> String {
        let c = &self.counts;
        let rows = vec![
            vec!["lines read".to_owned(), c.lines_read.to_string()],
            vec!["accepted".to_owned(), c.accepted.to_string()],
            vec!["duplicates (dropped)".to_owned(), c.duplicates.to_string()],
            vec![
                "conflicts (quarantined)".to_owned(),
                c.conflicts.to_string(),
            ],
            vec!["late (quarantined)".to_owned(), c.late.to_string()],
            vec!["future (quarantined)".to_owned(), c.future.to_string()],
            vec![
                "malformed (quarantined)".to_owned(),
                c.malformed.to_string(),
            ],
        ];
        html::table(&["", "records"], &rows)
            + &html::para(&format!(
                "{} recording hours touched; {} earlier readings of those hours read from the \
                 dedup state. Dedup plan (optimized):",
                self.hours_touched, self.prior_rows
            ))
            + &html::pre(&self.plan)
    }
}

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
    /// Polars' optimized plan of the aggregation, when there is one to show.
    pub plan: Option<String>,
}

impl TableReport {
    /// A table step that wrote `rows` rows hour by hour; `head` holds the first few.
    pub(crate) fn streamed(
        table: &'static str,
        committed: Committed,
        rows: usize,
        head: Option<DataFrame>,
        partitions: usize,
    ) -> Self {
        Self {
            table,
            committed,
            rows,
            partitions,
            head: head.map(|h| readable(&h)).unwrap_or_default(),
            plan: None,
        }
    }

    /// A table step skipped because the batch already committed to the table.
    pub(crate) fn skipped(table: &'static str) -> Self {
        Self::streamed(table, Committed::AlreadyCommitted, 0, None, 0)
    }

    /// With the aggregation's plan.
    pub(crate) fn with_plan(mut self, plan: String) -> Self {
        self.plan = Some(plan);
        self
    }

    fn summary(&self) -> String {
        let what = match self.committed {
            Committed::Version(v) => format!("committed version {v}"),
            Committed::AlreadyCommitted => {
                "already committed by an earlier attempt of this batch: skipped".to_owned()
            }
            Committed::Nothing => "nothing to change".to_owned(),
        };
        format!(
            "{}: {what}; {} rows in {} hour partitions",
            self.table, self.rows, self.partitions
        )
    }
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        write_head(f, &self.head)
    }
}

impl Shown for TableReport {
    fn html(&self) -> String {
        let mut out = html::para(&self.summary());
        if let Some(plan) = &self.plan {
            out += &html::para("Aggregation plan (optimized):");
            out += &html::pre(plan);
        }
        out + &head_html("First rows written:", &self.head)
    }
}

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
    /// Version and data-file count of `hourly_usage` and `cumulative_usage` after the run.
    pub tables: Vec<(&'static str, i64, u64)>,
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
        // Field 1: the table's version, 2: its data files.
        let table = |name: &str, field: usize| {
            let t = self.tables.iter().find(|t| t.0 == name);
            let (suffix, value) = match field {
                1 => ("version", t.map_or(-1, |t| t.1)),
                _ => ("files", t.map_or(0, |t| t.2 as i64)),
            };
            Column::new(format!("{name}_{suffix}").into(), [value])
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
                table("hourly_usage", 1),
                table("hourly_usage", 2),
                table("cumulative_usage", 1),
                table("cumulative_usage", 2),
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
        write!(f, "  {} ms: {}", self.duration_ms, steps.join(", "))?;
        for (name, version, files) in &self.tables {
            write!(f, "\n  {name}: version {version}, {files} data files")?;
        }
        Ok(())
    }
}

impl Shown for RunMetrics {
    fn html(&self) -> String {
        let frame = match self.frame() {
            Ok(frame) => frame,
            Err(e) => return html::para(&e.to_string()),
        };
        // One row per metric reads better than a 20-column row.
        let rows: Vec<Vec<String>> = frame
            .columns()
            .iter()
            .map(|c| {
                let value = match c.get(0) {
                    Ok(AnyValue::String(s)) => s.to_owned(),
                    Ok(v) => v.to_string(),
                    Err(_) => String::new(),
                };
                vec![c.name().to_string(), value]
            })
            .collect();
        let text = self.to_string();
        let summary = html::para(text.lines().next().unwrap_or_default());
        if self.files == 0 {
            return summary;
        }
        summary + &html::table(&["metric", "value"], &rows)
    }
}

/// The first rows of a frame under a caption, or nothing when it is empty.
fn head_html(caption: &str, head: &DataFrame) -> String {
    if head.height() == 0 {
        return String::new();
    }
    html::para(caption) + &html::frame(head)
}

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
