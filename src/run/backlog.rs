//! A backlog: the files left after a run's first batch (the first deployment over an existing
//! log, a day the schedule was down) are processed in further batches of one chunk each, one
//! after another, until none is left. Each batch is planned, saved and committed like the first,
//! so memory is bounded by a chunk, not by the backlog, and a crash resumes at the chunk it was
//! in.

use std::time::Instant;

use super::Run;
use crate::config::Config;
use crate::error::Result;

/// What one batch of a backlog did.
#[derive(Debug, Clone)]
pub struct BacklogBatch {
    /// Batch id.
    pub batch_id: i64,
    /// Files taken.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Lines read.
    pub lines_read: u64,
    /// Records counted.
    pub accepted: u64,
    /// Wall time, ms.
    pub duration_ms: u128,
}

/// The batches a catch-up processed.
#[derive(Debug, Clone, Default)]
pub struct BacklogReport {
    /// One entry per batch, in order.
    pub batches: Vec<BacklogBatch>,
    /// Whether it stopped at the run's cap on files (`batch_cap`) with files left.
    pub capped: bool,
}

/// Processes the new files left, batch after batch, until none is left or the run has taken
/// `batch_cap` files in all (`taken` by its batches so far).
pub fn catch_up(config: &Config, mut taken: usize) -> Result<BacklogReport> {
    let mut report = BacklogReport::default();
    loop {
        let left = config.batch_cap.map(|cap| cap.saturating_sub(taken));
        if left == Some(0) {
            report.capped = true;
            return Ok(report);
        }
        let started = Instant::now();
        let mut run = Run::start_within(config, left)?;
        if !run.has_files() {
            return Ok(report);
        }
        let plan = run.plan_report();
        run.parse()?;
        run.dedup()?;
        run.write_hourly()?;
        run.write_cumulative()?;
        let metrics = run.finish()?;
        taken += plan.files.len();
        report.batches.push(BacklogBatch {
            batch_id: plan.batch_id,
            files: plan.files.len(),
            bytes: plan.files.iter().map(|f| f.1).sum(),
            lines_read: metrics.counts.lines_read,
            accepted: metrics.counts.accepted,
            duration_ms: started.elapsed().as_millis(),
        });
    }
}
