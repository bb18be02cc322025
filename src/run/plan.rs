//! The first step: take the run lock, then resume the planned batch of a run that did not finish,
//! or plan the files no run committed yet (up to the batch cap) and save that plan.

use std::time::Instant;

use super::{Batch, Clock, Ledger, PlanReport, Run, Stage};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, format_hour};
use crate::input::{PlannedFile, list_new_files};
use crate::state::{Plan, RunLock, Store, marker};

impl Run {
    /// Plans the batch: resumes the planned batch of a run that did not finish, or takes the
    /// files no run committed yet (up to the batch cap, one chunk's bytes).
    pub fn start(config: &Config) -> Result<Self> {
        Self::start_within(config, config.batch_cap)
    }

    /// [`Run::start`], taking at most `files_left` new files.
    pub(super) fn start_within(config: &Config, files_left: Option<usize>) -> Result<Self> {
        let started = Instant::now();
        let lock = RunLock::acquire(&config.checkpoint_dir)?;
        if marker::in_progress(&config.output_root) {
            return Err(Error::RebuildUnfinished);
        }
        let store = Store::new(&config.checkpoint_dir);
        let checkpoint = store.load()?;
        let (plan, resumed, ignored) = match store.load_plan(checkpoint.next_batch)? {
            Some(plan) => (plan, true, Vec::new()),
            None => {
                let listing = list_new_files(&config.input_root, &checkpoint.files)?;
                let files = batch_of(listing.new_files, files_left, config.chunk_bytes);
                let plan = Plan {
                    batch_id: checkpoint.next_batch,
                    watermark_before: checkpoint.watermark_hour,
                    files,
                };
                if !plan.files.is_empty() {
                    store.save_plan(&plan)?;
                }
                (plan, false, listing.ignored)
            }
        };
        let latest_ingest_after = plan
            .files
            .iter()
            .map(|f| f.ingest_hour)
            .chain(checkpoint.latest_ingest_hour)
            .max();
        let watermark_after = latest_ingest_after
            .map(|h| h - WATERMARK_HOURS)
            .into_iter()
            .chain(checkpoint.watermark_hour)
            .max();
        let mut run = Self {
            config: config.clone(),
            _lock: lock,
            store,
            checkpoint,
            batch: Batch {
                plan,
                resumed,
                ignored,
                watermark_after,
                latest_ingest_after,
            },
            clock: Clock {
                started,
                started_at_us: chrono::Utc::now().timestamp_micros(),
                steps: Vec::new(),
            },
            ledger: Ledger::default(),
            stage: Stage::Planned,
            tables: Default::default(),
        };
        run.step_done("plan", started);
        Ok(run)
    }

    /// Whether the run has files to process.
    pub fn has_files(&self) -> bool {
        !self.batch.plan.files.is_empty()
    }

    /// What the run will process.
    pub fn plan_report(&self) -> PlanReport {
        let plan = &self.batch.plan;
        PlanReport {
            batch_id: plan.batch_id,
            resumed: self.batch.resumed,
            files: plan
                .files
                .iter()
                .map(|f| (f.rel_path.clone(), f.size))
                .collect(),
            ignored: self.batch.ignored.clone(),
            watermark_before: plan.watermark_before.map(format_hour),
        }
    }
}

/// The first new files, in ingestion order, up to `cap` files and `max_bytes` bytes (at least
/// one file, however large).
fn batch_of(
    files: Vec<PlannedFile>,
    cap: Option<usize>,
    max_bytes: Option<u64>,
) -> Vec<PlannedFile> {
    let mut bytes = 0u64;
    let mut batch = Vec::new();
    for file in files {
        bytes = bytes.saturating_add(file.size);
        let full = cap.is_some_and(|c| batch.len() >= c)
            || max_bytes.is_some_and(|m| bytes > m && !batch.is_empty());
        if full {
            break;
        }
        batch.push(file);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sizes: &[u64]) -> Vec<PlannedFile> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| PlannedFile {
                rel_path: format!("ingest_hour=2026-03-01T00/{i}.jsonl"),
                path: format!("/log/{i}.jsonl").into(),
                size,
                ingest_hour: 0,
            })
            .collect()
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let sizes = |b: Vec<PlannedFile>| b.iter().map(|f| f.size).collect::<Vec<_>>();
        assert_eq!(sizes(batch_of(files(&[5, 5, 5]), None, None)), [5, 5, 5]);
        assert_eq!(sizes(batch_of(files(&[5, 5, 5]), Some(2), None)), [5, 5]);
        assert_eq!(sizes(batch_of(files(&[5, 5, 5]), None, Some(10))), [5, 5]);
        assert_eq!(sizes(batch_of(files(&[5, 5, 5]), None, Some(9))), [5]);
        // One file larger than the bound is a batch of its own.
        assert_eq!(sizes(batch_of(files(&[50, 5]), None, Some(10))), [50]);
        assert_eq!(sizes(batch_of(files(&[5, 50]), Some(3), Some(10))), [5]);
    }
}
