//! The first step: take the run lock, then resume the planned batch of a run that did not finish,
//! or plan the files no run committed yet (up to the batch cap) and save that plan, once the
//! tables are found to agree with the checkpoint. Folders dated after the current hour are held
//! back: a clock ahead of this one wrote them.

use std::time::Instant;

use super::agree::checked_tables;
use super::{Batch, Clock, Ledger, PlanReport, Run, Stage};
use crate::clock::{self, latest_ingest_hour};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, format_hour};
use crate::input::{Committed as _, HeldBack, PlannedFile, list_new_files};
use crate::state::{Checkpoint, Plan, RunLock, Store, marker};

/// The files a batch may take, and what the listing reports beside them.
struct Found {
    /// Not committed, nor in the plan being resumed, in ingestion order.
    files: Vec<PlannedFile>,
    /// Paths that do not fit the log's layout, with the reason.
    ignored: Vec<(String, &'static str)>,
    /// Folders dated after the current hour.
    held_back: Vec<HeldBack>,
}

/// The files a batch may take: listed now (up to `batch_cap` with the resumed plan's), or left
/// by the run's first listing; those committed since (another run may have taken some between
/// two batches of this one) and those in the resumed plan `saved` left out.
fn find(
    config: &Config,
    store: &Store,
    checkpoint: &Checkpoint,
    saved: Option<&Plan>,
    candidates: Candidates<'_>,
) -> Result<Found> {
    let committed = store.committed(checkpoint);
    let (files, ignored, held_back) = match candidates {
        Candidates::Listed => {
            let latest = latest_ingest_hour(clock::now()?, config.clock_skew_minutes);
            let listing = list_new_files(
                &config.input_root,
                &committed,
                checkpoint.watermark_hour,
                checkpoint.next_batch,
                latest,
            )?;
            let mut files = listing.new_files;
            if let Some(cap) = config.batch_cap {
                files.truncate(cap.saturating_sub(saved.map_or(0, |p| p.files.len())));
            }
            (files, listing.ignored, listing.held_back)
        }
        Candidates::Later(files) => (files.to_vec(), Vec::new(), Vec::new()),
    };
    let in_saved =
        |f: &PlannedFile| saved.is_some_and(|p| p.files.iter().any(|s| s.rel_path == f.rel_path));
    let mut taken = Vec::with_capacity(files.len());
    for file in files {
        if !in_saved(&file) && committed.size_of(&file.rel_path)?.is_none() {
            taken.push(file);
        }
    }
    let files = taken;
    Ok(Found {
        files,
        ignored,
        held_back,
    })
}

/// The latest ingestion hour and the watermark once `plan`'s batch is done.
fn after(plan: &Plan, checkpoint: &Checkpoint) -> (Option<i64>, Option<i64>) {
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
    (latest_ingest_after, watermark_after)
}

/// Where a run's batch comes from.
enum Candidates<'a> {
    /// The files of the log that no run committed, listed now (a run's first batch).
    Listed,
    /// What the run's first listing left for later batches.
    Later(&'a [PlannedFile]),
}

impl Run {
    /// Plans the batch: resumes the planned batch of a run that did not finish, or takes the
    /// files no run committed yet, in ingestion order, up to one chunk (`chunk_mb`). The files
    /// present now beyond it, up to `batch_cap` files in all, are the run's later batches
    /// ([`Run::later_files`], for [`super::catch_up`]); files that arrive after this listing
    /// wait for the next run.
    pub fn start(config: &Config) -> Result<Self> {
        Self::plan(config, Candidates::Listed)
    }

    /// The next batch of a run from the files its first listing left (`later`): the unfinished
    /// plan of a batch that crashed, or the next chunk of `later` not committed since.
    pub(crate) fn start_next(config: &Config, later: &[PlannedFile]) -> Result<Self> {
        Self::plan(config, Candidates::Later(later))
    }

    fn plan(config: &Config, candidates: Candidates<'_>) -> Result<Self> {
        let started = Instant::now();
        crate::memory::limit_arenas();
        let lock = RunLock::acquire(&config.checkpoint_dir)?;
        if marker::in_progress(&config.output_root)? {
            return Err(Error::RebuildUnfinished);
        }
        let store = Store::new(&config.checkpoint_dir);
        let checkpoint = store.load()?;
        let saved = store.load_plan(checkpoint.next_batch)?;
        let Found {
            files: candidates,
            ignored,
            held_back,
        } = find(config, &store, &checkpoint, saved.as_ref(), candidates)?;
        let (plan, resumed, later) = match saved {
            Some(plan) => (plan, true, candidates),
            None => {
                let (files, later) = batch_of(candidates, config.chunk_bytes);
                let plan = Plan {
                    batch_id: checkpoint.next_batch,
                    watermark_before: checkpoint.watermark_hour,
                    files,
                    clock_skew_minutes: Some(config.clock_skew_minutes),
                    rebuild: false,
                };
                (plan, false, later)
            }
        };
        if plan.rebuild {
            return Err(Error::RebuildUnfinished);
        }
        let (latest_ingest_after, watermark_after) = after(&plan, &checkpoint);
        // Before anything is written: the archive this batch's checkpoint will extend is
        // readable, and the tables agree with the checkpoint (a run with no files writes
        // nothing and opens no table).
        store.check_archive_before(&checkpoint, &plan.files, watermark_after)?;
        let tables = if plan.files.is_empty() {
            Default::default()
        } else {
            checked_tables(config, &checkpoint, resumed.then_some(plan.batch_id), true)?
        };
        if !resumed && !plan.files.is_empty() {
            store.save_plan(&plan)?;
        }
        let mut run = Self {
            config: config.clone(),
            lock,
            store,
            checkpoint,
            batch: Batch {
                plan,
                resumed,
                ignored,
                held_back,
                watermark_after,
                latest_ingest_after,
                later,
            },
            clock: Clock {
                started,
                started_at_us: chrono::Utc::now().timestamp_micros(),
                steps: Vec::new(),
            },
            ledger: Ledger::default(),
            stage: Stage::Planned,
            tables,
        };
        run.step_done("plan", started);
        Ok(run)
    }

    /// Whether the run has files to process.
    pub fn has_files(&self) -> bool {
        !self.batch.plan.files.is_empty()
    }

    /// The files the run's listing found beyond this batch, for its later batches.
    pub fn later_files(&self) -> Vec<PlannedFile> {
        self.batch.later.clone()
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
            held_back: self.batch.held_back.clone(),
            watermark_before: plan.watermark_before.map(format_hour),
            later: self.batch.later.len(),
        }
    }
}

/// How many chunks an ingestion hour larger than one chunk may be and still be a batch of its
/// own. Each batch that holds part of an hour rewrites that hour's table files whole (at 1 M
/// meters, a 1.7 GB hour in 4 batches of 512 MB took 40-45 s, in one batch 25 s); a larger
/// hour is split in chunks.
const WHOLE_HOUR_CHUNKS: u64 = 4;

/// The first files of `files` (in ingestion order) up to `max_bytes` bytes, at least one
/// however large, and the rest. An ingestion hour whose files are more than `max_bytes` and at
/// most [`WHOLE_HOUR_CHUNKS`] times it is a batch of its own, whole.
fn batch_of(
    mut files: Vec<PlannedFile>,
    max_bytes: Option<u64>,
) -> (Vec<PlannedFile>, Vec<PlannedFile>) {
    let take = max_bytes.map_or(files.len(), |max| batch_len(&files, max));
    let later = files.split_off(take);
    (files, later)
}

/// How many of `files` the batch of at most `max` bytes takes (see [`batch_of`]).
fn batch_len(files: &[PlannedFile], max: u64) -> usize {
    let whole_batch = |bytes: u64| bytes > max && bytes <= max.saturating_mul(WHOLE_HOUR_CHUNKS);
    let (mut bytes, mut take) = (0u64, 0);
    for hour in files.chunk_by(|a, b| a.ingest_hour == b.ingest_hour) {
        let hour_bytes = hour.iter().fold(0u64, |sum, f| sum.saturating_add(f.size));
        if whole_batch(hour_bytes) {
            return if take == 0 { hour.len() } else { take };
        }
        for file in hour {
            bytes = bytes.saturating_add(file.size);
            if bytes > max && take > 0 {
                return take;
            }
            take += 1;
        }
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of the given sizes, each in the ingestion hour given beside it.
    fn files(sizes: &[(i64, u64)]) -> Vec<PlannedFile> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &(hour, size))| PlannedFile {
                rel_path: format!("ingest_hour={}/{i}.jsonl", format_hour(hour)),
                path: format!("/log/{i}.jsonl").into(),
                size,
                ingest_hour: hour,
            })
            .collect()
    }

    /// The sizes of the batch and of the rest, `files` split by `batch_of`.
    fn split(files_: &[(i64, u64)], max: Option<u64>) -> (Vec<u64>, Vec<u64>) {
        let sizes = |b: &[PlannedFile]| b.iter().map(|f| f.size).collect::<Vec<_>>();
        let (batch, later) = batch_of(files(files_), max);
        (sizes(&batch), sizes(&later))
    }

    #[test]
    fn batches_are_bounded_by_bytes() {
        // Each file an hour of its own.
        let hours = |s: &[u64]| (0..).zip(s.iter().copied()).collect::<Vec<_>>();
        assert_eq!(split(&hours(&[5, 5, 5]), None), (vec![5, 5, 5], vec![]));
        assert_eq!(split(&hours(&[5, 5, 5]), Some(10)), (vec![5, 5], vec![5]));
        assert_eq!(split(&hours(&[5, 5, 5]), Some(9)), (vec![5], vec![5, 5]));
        // One file larger than the bound is a batch of its own.
        assert_eq!(split(&hours(&[50, 5]), Some(10)), (vec![50], vec![5]));
        assert_eq!(split(&hours(&[5, 50]), Some(10)), (vec![5], vec![50]));
        assert_eq!(split(&[], Some(10)), (vec![], vec![]));
    }

    #[test]
    fn an_hour_of_up_to_four_chunks_is_a_batch_of_its_own() {
        let hour = |h: i64, n: usize| vec![(h, 5u64); n];
        // The first hour's 40 bytes are 4 chunks of 10: one batch, the next hour after it.
        let four_chunks = [hour(0, 8), hour(1, 2)].concat();
        assert_eq!(split(&four_chunks, Some(10)), (vec![5; 8], vec![5; 2]));
        // 45 bytes are more than 4 chunks: split in chunks.
        let larger = [hour(0, 9), hour(1, 2)].concat();
        assert_eq!(split(&larger, Some(10)), (vec![5; 2], vec![5; 9]));
        // A batch ends before such an hour, which is the next batch whole.
        let later_large = [hour(0, 1), hour(1, 8)].concat();
        assert_eq!(split(&later_large, Some(10)), (vec![5], vec![5; 8]));
        assert_eq!(split(&later_large[1..], Some(10)), (vec![5; 8], vec![]));
        // An hour within one chunk leaves room for the next.
        let small = [hour(0, 1), hour(1, 1), hour(2, 1)].concat();
        assert_eq!(split(&small, Some(10)), (vec![5; 2], vec![5]));
    }
}
