//! A backlog: the files left after a run's first batch (the first deployment over an existing
//! log, a day the schedule was down) are processed in further batches of one chunk each, one
//! after another, until none is left. Each batch is planned, saved and committed like the first,
//! so memory is bounded by a chunk, not by the backlog, and a crash resumes at the chunk it was
//! in.

use std::time::Instant;

use super::{ClosedMonth, Run};
use crate::config::Config;
use crate::error::Result;
use crate::input::PlannedFile;
use crate::memory;

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
    /// The billing months it closed (their bills written to `monthly_bills`).
    pub closed: Vec<ClosedMonth>,
}

/// The batches a catch-up processed.
#[derive(Debug, Clone, Default)]
pub struct BacklogReport {
    /// One entry per batch, in order.
    pub batches: Vec<BacklogBatch>,
}

/// Processes `later`, the files a run's first batch left (see [`Run::later_files`]), batch
/// after batch, until none is left. Files that arrived after the run listed the log wait for
/// the next run.
pub fn catch_up(config: &Config, later: Vec<PlannedFile>) -> Result<BacklogReport> {
    let report = batches(config, later);
    // What the last batch freed goes back to the system too: in the notebook the views run in
    // this process next, and would otherwise start from the largest batch's resident floor.
    memory::release_freed();
    report
}

/// [`catch_up`]'s batches.
fn batches(config: &Config, mut later: Vec<PlannedFile>) -> Result<BacklogReport> {
    let mut report = BacklogReport::default();
    // Nothing left: no batch to plan (and no lock to take, a few round trips on S3). The batch
    // before finished any saved plan, and its listing found nothing more.
    while !later.is_empty() {
        // What the previous batch freed goes back to the system first, so that every batch
        // starts from about the same resident floor.
        memory::release_freed();
        let started = Instant::now();
        let run = Run::start_next(config, &later)?;
        if !run.has_files() {
            return Ok(report);
        }
        later = run.later_files();
        let plan = run.plan_report();
        let (cumulative, metrics) = run.run_steps()?;
        report.batches.push(BacklogBatch {
            batch_id: plan.batch_id,
            files: plan.files.len(),
            bytes: plan.files.iter().map(|f| f.1).sum(),
            lines_read: metrics.counts.lines_read,
            accepted: metrics.counts.accepted,
            duration_ms: started.elapsed().as_millis(),
            closed: cumulative.bills.map(|b| b.months).unwrap_or_default(),
        });
    }
    Ok(report)
}
