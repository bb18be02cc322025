//! The first step: take the run lock, then resume the planned batch of a run that did not finish,
//! or plan the files no run committed yet (up to the batch cap) and save that plan.

use std::time::Instant;

use super::{Batch, Clock, Ledger, PlanReport, Run, Stage};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, format_hour};
use crate::input::list_new_files;
use crate::state::{Plan, RunLock, Store, marker};

impl Run {
    /// Plans the batch: resumes the planned batch of a run that did not finish, or takes the
    /// files no run committed yet (up to the batch cap).
    pub fn start(config: &Config) -> Result<Self> {
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
                let mut files = listing.new_files;
                if let Some(cap) = config.batch_cap {
                    files.truncate(cap);
                }
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
        };
        run.step_done("plan", started);
        Ok(run)
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
