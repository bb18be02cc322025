//! A run's counts and metrics, as reported and as stored in `run_metrics`.

use polars::prelude::DataFrame;

use crate::error::Result;
use crate::table::{RUN_METRICS, Values};

/// Record counts of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Lines read.
    pub lines_read: u64,
    /// Records counted in the totals.
    pub accepted: u64,
    /// Identical later copies, dropped.
    pub duplicates: u64,
    /// Later copies with another payload, quarantined.
    pub conflicts: u64,
    /// Quarantined as late (or in a file behind the watermark).
    pub late: u64,
    /// Quarantined as future-dated.
    pub future: u64,
    /// Quarantined as malformed.
    pub malformed: u64,
}

impl Counts {
    /// Lines kept out of the totals.
    pub fn quarantined(&self) -> u64 {
        self.conflicts + self.late + self.future + self.malformed
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
    /// Watermark after the run (`YYYY-MM-DDTHH`; empty before the first file).
    pub watermark_hour: String,
    /// Wall time so far.
    pub duration_ms: i64,
    /// Wall time per step.
    pub steps: Vec<(&'static str, u128)>,
    /// Version and data-file count of `hourly_usage` and `cumulative_usage` after the run.
    pub tables: Vec<(&'static str, i64, u64)>,
    /// Files in ingestion-hour folders dated after the current hour, not taken (see
    /// `docs/OPERATIONS.md`, "A folder from the future").
    pub held_back_files: u64,
}

/// The steps whose wall time `run_metrics` stores, as `<step>_ms`.
pub const STEPS: [&str; 6] = [
    "plan",
    "parse",
    "dedup",
    "hourly_usage",
    "cumulative_usage",
    "finish",
];

impl RunMetrics {
    /// Total wall time of `step`, ms.
    pub fn step_ms(&self, step: &str) -> i64 {
        self.steps
            .iter()
            .filter(|s| s.0 == step)
            .map(|s| s.1 as i64)
            .sum()
    }

    /// Version and data-file count of `table` after the run (`-1` and 0 when not read).
    pub fn table(&self, table: &str) -> (i64, i64) {
        self.tables
            .iter()
            .find(|t| t.0 == table)
            .map_or((-1, 0), |t| (t.1, t.2 as i64))
    }

    /// The metrics as the `run_metrics` table's row (its columns, in the schema's order).
    pub fn frame(&self) -> Result<DataFrame> {
        let c = &self.counts;
        let long = |v: u64| Values::Long(vec![v as i64]);
        let mut values = vec![
            Values::Long(vec![self.batch_id]),
            Values::Long(vec![self.started_at_us]),
            long(self.files),
            long(c.lines_read),
            long(c.accepted),
            long(c.duplicates),
            long(c.conflicts),
            long(c.late),
            long(c.future),
            long(c.malformed),
            long(self.hours_touched),
            long(self.state_rows_read),
            Values::Str(vec![self.watermark_hour.as_str().into()]),
            Values::Long(vec![self.duration_ms]),
        ];
        values.extend(STEPS.iter().map(|s| Values::Long(vec![self.step_ms(s)])));
        for table in ["hourly_usage", "cumulative_usage"] {
            let (version, files) = self.table(table);
            values.push(Values::Long(vec![version]));
            values.push(Values::Long(vec![files]));
        }
        values.push(long(self.held_back_files));
        RUN_METRICS.frame(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_follows_the_table_schema() -> Result<()> {
        let metrics = RunMetrics {
            batch_id: 4,
            started_at_us: 9,
            files: 2,
            counts: Counts {
                lines_read: 10,
                accepted: 7,
                duplicates: 1,
                conflicts: 1,
                late: 0,
                future: 0,
                malformed: 1,
            },
            hours_touched: 3,
            state_rows_read: 5,
            watermark_hour: "2026-03-01T00".into(),
            duration_ms: 100,
            steps: vec![("parse", 11), ("dedup", 12), ("parse", 1)],
            tables: vec![("cumulative_usage", 6, 8)],
            held_back_files: 3,
        };
        let row = metrics.frame()?;
        let value = |name: &str| {
            row.column(name)
                .and_then(|c| c.get(0).map(|v| v.to_string()))
        };
        let got = |name: &str| value(name).map_err(crate::Error::polars("test"));
        assert_eq!(got("parse_ms")?, "12");
        assert_eq!(got("dedup_ms")?, "12");
        assert_eq!(got("finish_ms")?, "0");
        assert_eq!(got("cumulative_usage_files")?, "8");
        assert_eq!(got("hourly_usage_version")?, "-1");
        assert_eq!(got("malformed")?, "1");
        assert_eq!(got("held_back_files")?, "3");
        Ok(())
    }
}
