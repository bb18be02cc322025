//! How the steps of a run show what they did: text for logs and papermill (`Display`) and HTML
//! for Jupyter (counts, a few rows as a table, query plans).

use std::fmt;

use polars::prelude::*;

use super::{Shown, html};
use crate::hours::format_hour;
use crate::input::HeldBack;
use crate::input::{INGEST_HOUR, SEQ};
use crate::run::{
    BacklogReport, DedupReport, ParseReport, PlanReport, QueryPlans, RunMetrics, TableReport,
};
use crate::table::{Committed, MONTHLY_BILLS, col};
use crate::view::cubic_meters;

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
        for held in &self.held_back {
            writeln!(f, "  {}", held_back(held))?;
        }
        if self.later > 0 {
            writeln!(f, "{}", later_files(self.later))?;
        }
        Ok(())
    }
}

/// What the plan says of a folder dated in the future.
fn held_back(held: &HeldBack) -> String {
    format!(
        "held back {} ({} files): dated after the current hour (plus clock_skew_minutes), so a \
         clock ahead of this one named it. Its files are not taken and the watermark does not \
         move for them; move them into the folder of the hour they really arrived in (see \
         docs/OPERATIONS.md, \"A folder from the future\")",
        held.folder, held.files
    )
}

/// What the plan says of the files beyond its batch.
fn later_files(n: usize) -> String {
    format!("{n} more new files wait for this run's later batches (the \"Catch up\" cell)")
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
        if self.later > 0 {
            out += &html::para(&later_files(self.later));
        }
        for held in &self.held_back {
            out += &html::para(&held_back(held));
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
        write_head(f, &readable(&self.head))
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
        out + &head_html("First records:", &readable(&self.head))
    }
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
        write!(f, "  {EXPLAIN}")
    }
}

/// Where a step's report points for its query plan.
const EXPLAIN: &str = "pipeline.explain() shows how dedup ran and Polars' plan of the aggregation";

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
                 dedup state. {EXPLAIN}.",
                self.hours_touched, self.prior_rows,
            ))
    }
}

impl fmt::Display for QueryPlans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dedup.is_none() && self.aggregation.is_none() {
            return write!(f, "{NO_PLANS}");
        }
        if let Some(method) = &self.dedup {
            writeln!(f, "{DEDUP_HEADING}:\n{method}")?;
        }
        if let Some(plan) = &self.aggregation {
            writeln!(f, "Aggregation plan (optimized):\n{plan}")?;
        }
        Ok(())
    }
}

impl Shown for QueryPlans {
    fn html(&self) -> String {
        let mut out = String::new();
        if let Some(method) = &self.dedup {
            out += &html::para(&format!("{DEDUP_HEADING}:"));
            out += &html::pre(method);
        }
        if let Some(plan) = &self.aggregation {
            out += &html::para("Aggregation plan (optimized):");
            out += &html::pre(plan);
        }
        if out.is_empty() {
            out = html::para(NO_PLANS);
        }
        out
    }
}

/// What `explain` says before the batch's dedup ran.
const NO_PLANS: &str = "no query plan yet: the batch's dedup and hourly steps make them";

/// The heading of how dedup ran (a pass in plain Rust, not a Polars query).
const DEDUP_HEADING: &str = "Dedup (one pass over the batch)";

/// One line: what the table step committed.
fn summary(report: &TableReport) -> String {
    let what = match report.committed {
        Committed::Version(v) => format!("committed version {v}"),
        Committed::AlreadyCommitted => {
            "already committed by an earlier attempt of this batch: skipped".to_owned()
        }
        Committed::Nothing => "nothing to change".to_owned(),
    };
    let side = match report.side_only {
        0 => String::new(),
        n => format!(" ({n} of them only their side files, late data of quiet meters)"),
    };
    format!(
        "{}: {what}; {} rows in {} hour partitions{side}",
        report.table, report.rows, report.partitions
    )
}

/// What the step wrote to `monthly_bills`, when it closed a month or skipped the table.
fn bills_summary(report: &TableReport) -> Vec<String> {
    let Some(bills) = &report.bills else {
        return Vec::new();
    };
    let version = match bills.committed {
        Committed::Version(v) => format!("committed version {v}"),
        Committed::AlreadyCommitted => {
            return vec![format!(
                "{}: already committed by an earlier attempt of this batch: skipped",
                MONTHLY_BILLS.name
            )];
        }
        Committed::Nothing => return Vec::new(),
    };
    bills
        .months
        .iter()
        .map(|m| {
            format!(
                "{}: {version}; closed {}: {} bills, {} m³ in all, {} with an hour without \
                 readings since the customer's first",
                MONTHLY_BILLS.name,
                m.month,
                m.customers,
                cubic_meters(m.total_ml),
                m.with_gaps
            )
        })
        .collect()
}

impl fmt::Display for TableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", summary(self))?;
        for line in bills_summary(self) {
            writeln!(f, "{line}")?;
        }
        write_head(f, &readable(&self.head))
    }
}

impl Shown for TableReport {
    fn html(&self) -> String {
        let mut out = html::para(&summary(self));
        for line in bills_summary(self) {
            out += &html::para(&line);
        }
        out + &head_html("First rows written:", &readable(&self.head))
    }
}

/// The first line of a run's metrics.
fn headline(m: &RunMetrics) -> String {
    if m.files == 0 {
        return "no new files: nothing changed".to_owned();
    }
    let mut line = format!(
        "batch {}: {} files, {} lines",
        m.batch_id, m.files, m.counts.lines_read
    );
    if m.held_back_files > 0 {
        line += &format!(
            "; {} files held back in folders dated in the future (see the plan)",
            m.held_back_files
        );
    }
    line
}

impl fmt::Display for RunMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        if self.files == 0 {
            return write!(f, "{}", headline(self));
        }
        writeln!(f, "{}", headline(self))?;
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
        let summary = html::para(&headline(self));
        if self.files == 0 {
            return summary;
        }
        let frame = match self.frame() {
            Ok(frame) => frame,
            Err(e) => return summary + &html::para(&e.to_string()),
        };
        // One row per metric reads better than a 20-column row.
        let rows: Vec<Vec<String>> = frame
            .columns()
            .iter()
            .map(|c| {
                let value = match c.get(0) {
                    Ok(AnyValue::String(s)) => s.to_owned(),
                    Ok(v) if c.name().as_str() == "started_at" => v
                        .extract::<i64>()
                        .and_then(chrono::DateTime::from_timestamp_micros)
                        .map_or_else(
                            || v.to_string(),
                            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        ),
                    Ok(v) => v.to_string(),
                    Err(_) => String::new(),
                };
                vec![c.name().to_string(), value]
            })
            .collect();
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
            SEQ => continue,
            col::USAGE_HOUR | INGEST_HOUR => text(&format_hour),
            col::RECORDED_AT => text(&|us| {
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

impl BacklogReport {
    fn headline(&self) -> String {
        let lines: u64 = self.batches.iter().map(|b| b.lines_read).sum();
        let ms: u128 = self.batches.iter().map(|b| b.duration_ms).sum();
        match self.batches.len() {
            0 => "nothing left: the first batch took every file of this run".to_owned(),
            n => format!("{n} more batches, {lines} lines in {ms} ms"),
        }
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.batches
            .iter()
            .map(|b| {
                vec![
                    b.batch_id.to_string(),
                    b.files.to_string(),
                    b.bytes.to_string(),
                    b.lines_read.to_string(),
                    b.accepted.to_string(),
                    b.duration_ms.to_string(),
                    b.closed
                        .iter()
                        .map(|m| format!("{} ({} bills)", m.month, m.customers))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect()
    }
}

const BACKLOG_COLUMNS: [&str; 7] = [
    "batch",
    "files",
    "bytes",
    "lines",
    "accepted",
    "ms",
    "months closed",
];

impl fmt::Display for BacklogReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        if !self.batches.is_empty() {
            writeln!(f, "{}", BACKLOG_COLUMNS.join("\t"))?;
            for row in self.rows() {
                writeln!(f, "{}", row.join("\t"))?;
            }
        }
        Ok(())
    }
}

impl Shown for BacklogReport {
    fn html(&self) -> String {
        let mut out = html::para(&self.headline());
        if !self.batches.is_empty() {
            out += &html::table(&BACKLOG_COLUMNS, &self.rows());
        }
        out
    }
}
