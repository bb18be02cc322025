//! Idempotent commits: each carries the application transaction `(APP_ID, batch id)`, and a batch
//! the table already holds is skipped. Replacing hour partitions removes their files and adds
//! the new ones in the same commit, so readers see the old hour or the new one, never a mix.

use std::collections::BTreeSet;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use polars::prelude::DataFrame;

use super::schema::APP_ID;
use super::write::Written;
use super::{Table, block_on, delta_error};
use crate::error::Result;
use crate::hours::format_hour;

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The batch's change is in the table as this version.
    Version(u64),
    /// The batch had already committed to this table (a rerun); nothing was written.
    AlreadyCommitted,
    /// The batch had nothing to change in this table (its transaction alone was committed,
    /// recording it as done).
    Nothing,
}

/// Rows from which a commit writes a file's rows as several files, on one core each: 100,000
/// meters' rows (the dedup state's index, the alerts' histories) take two files on two cores.
const PARALLEL_FILE_ROWS: usize = 32_768;

/// Cores to encode files on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The files a commit writes `frames` as (rows of one hour partition each, or an unpartitioned
/// table's rows): a frame that holds more than its share of the rows for one core
/// (`rows / cores`) is cut into that many slices of equal size, at most one per core and none
/// smaller than [`PARALLEL_FILE_ROWS`], each its own file encoded on its own core; the others
/// stay whole, as many of them already keep the cores busy. An hourly run's dedup state is one
/// hour of 1.1 M readings (at 100,000 meters) and a few late ones: two files written at once.
/// Slices keep the rows' order, so each covers a range of the sort column. 100,000 rows of an
/// unpartitioned table take 2 files on 2 cores, 3 on 8.
fn file_frames(frames: Vec<DataFrame>, cores: usize) -> Vec<DataFrame> {
    let cores = cores.max(1);
    let rows: usize = frames.iter().map(DataFrame::height).sum();
    let share = rows.div_ceil(cores).max(PARALLEL_FILE_ROWS);
    let mut files = Vec::with_capacity(frames.len());
    for frame in frames {
        let height = frame.height();
        let slices = height
            .div_ceil(share)
            .min(height / PARALLEL_FILE_ROWS)
            .clamp(1, cores);
        if slices == 1 {
            files.push(frame);
            continue;
        }
        files.extend((0..slices).map(|i| {
            let (from, to) = (i * height / slices, (i + 1) * height / slices);
            frame.slice(from as i64, to - from)
        }));
    }
    files
}

impl Table {
    /// The last batch id committed to this table.
    pub async fn last_batch(&self) -> Result<Option<i64>> {
        let version = self.version_and_files().0;
        if let Some((at, batch)) = *self.known_last_batch()
            && at == version
        {
            return Ok(batch);
        }
        let err = delta_error(self.spec.name);
        let snapshot = self.table.snapshot().map_err(err)?;
        let batch = snapshot
            .transaction_version(self.table.log_store().as_ref(), APP_ID)
            .await
            .map_err(err)?;
        *self.known_last_batch() = Some((version, batch));
        Ok(batch)
    }

    fn known_last_batch(&self) -> std::sync::MutexGuard<'_, Option<super::KnownBatch>> {
        self.last_batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether batch `batch_id` (or a later one) already committed to this table, as read from
    /// the table's latest version.
    pub async fn has_batch(&mut self, batch_id: i64) -> Result<bool> {
        self.refresh().await?;
        Ok(self.last_batch().await?.is_some_and(|b| b >= batch_id))
    }

    /// Commits batch `batch_id`: removes the files of the hour partitions in `replace` and the
    /// files `paths` (rows read from them must be in `rows`: how small files are compacted in
    /// the same commit as the batch's change), and adds `rows`, which must lie in those
    /// partitions, or anywhere if `replace` is empty: an append.
    pub async fn commit_removing(
        &mut self,
        batch_id: i64,
        rows: Option<&DataFrame>,
        replace: &BTreeSet<i64>,
        paths: &BTreeSet<String>,
    ) -> Result<Committed> {
        if self.has_batch(batch_id).await? {
            return Ok(Committed::AlreadyCommitted);
        }
        let frames = match rows.filter(|r| r.height() > 0) {
            Some(rows) => file_frames(
                match self.spec.partition {
                    Some(part) => {
                        super::write::split_by_hour_sorted(rows, part, self.spec.sorted_by)?
                            .into_values()
                            .collect()
                    }
                    None => vec![rows.clone()],
                },
                cores(),
            ),
            None => Vec::new(),
        };
        let written = self.write_frames(|emit| {
            frames
                .into_iter()
                .try_for_each(|frame| emit(frame, super::Role::Main))
        })?;
        self.commit_written(batch_id, written, replace, paths).await
    }

    /// Replaces every row of this table by the rows of `source` (a table of the same layout),
    /// in one commit of batch `batch_id`: each of `source`'s files is written again with its
    /// role, one at a time. Returns the rows written and the commit.
    pub fn replace_with(&mut self, source: &Table, batch_id: i64) -> Result<(usize, Committed)> {
        if block_on(self.has_batch(batch_id))?? {
            return Ok((0, Committed::AlreadyCommitted));
        }
        let mut rows = 0;
        let written = self.write_frames(|emit| {
            for file in &source.files {
                let hours: BTreeSet<i64> = file.hour.into_iter().collect();
                let paths = BTreeSet::from([file.path.clone()]);
                let frame = block_on(source.read_files(&hours, &paths))??;
                rows += frame.height();
                emit(frame, file.role)?;
            }
            Ok(())
        })?;
        let replace: BTreeSet<i64> = self
            .partitions()
            .union(&source.partitions())
            .copied()
            .collect();
        let every = self.appended_files(0);
        // Empty before and after, the commit still records the batch: every table holds the
        // checkpoint's last batch, which the next run checks.
        let committed = block_on(self.commit_written(batch_id, written, &replace, &every))??;
        Ok((rows, committed))
    }

    /// Commits batch `batch_id`: removes the files of the hour partitions in `replace` and the
    /// files `paths`, and adds the files `written` (which must lie in those partitions, or
    /// anywhere if `replace` is empty: an append).
    pub async fn commit_written(
        &mut self,
        batch_id: i64,
        written: Written,
        replace: &BTreeSet<i64>,
        paths: &BTreeSet<String>,
    ) -> Result<Committed> {
        let name = self.spec.name;
        let err = delta_error(name);
        // As of the version the step read (its start checked the latest); the commit itself is
        // conditional on that version being the latest.
        if self.last_batch().await?.is_some_and(|b| b >= batch_id) {
            return Ok(Committed::AlreadyCommitted);
        }
        let mut actions: Vec<Action> = self
            .files
            .iter()
            .filter(|f| f.hour.is_some_and(|h| replace.contains(&h)) || paths.contains(&f.path))
            .map(|f| Action::Remove(f.view.remove_action(true)))
            .collect();
        actions.extend(written.0.into_iter().map(Action::Add));
        // A batch with nothing to change here still commits (its application transaction
        // alone), so that a rerun after a crash finds the table done and skips it: a rerun may
        // classify records differently once the dedup state moved on.
        let changed = !actions.is_empty();
        let predicate = (!replace.is_empty()).then(|| {
            let hours: Vec<String> = replace
                .iter()
                .map(|&h| format!("'{}'", format_hour(h)))
                .collect();
            format!(
                "{} IN ({})",
                self.spec.partition.unwrap_or_default(),
                hours.join(", ")
            )
        });
        let operation = DeltaOperation::Write {
            mode: if replace.is_empty() {
                SaveMode::Append
            } else {
                SaveMode::Overwrite
            },
            partition_by: self.spec.partition.map(|p| vec![p.to_owned()]),
            predicate,
        };
        // Expired log entries are removed by the daily vacuum, not after every commit: once a
        // commit has removed any, `deltalake` reloads the whole table (every live file's entry),
        // which after a week of hourly runs cost each commit as much as opening the table.
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(APP_ID, batch_id))
            .with_cleanup_expired_logs(Some(false));
        let snapshot = self.table.snapshot().map_err(err)?;
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(err)?;
        let version = finalized.version();
        crate::faults::durable(&format!("{name}: committed"));
        // The state after the commit, as the commit built it (reading the log again would
        // cost round trips on S3).
        self.table.state = Some(finalized.snapshot());
        self.list_files().await?;
        // The commit is the table's version now (the run holds the lock, so nobody else
        // commits): its last batch is this one.
        if self.table.version() == Some(version) {
            *self.known_last_batch() = Some((self.version_and_files().0, Some(batch_id)));
        }
        Ok(if changed {
            Committed::Version(version)
        } else {
            Committed::Nothing
        })
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    use super::file_frames;

    fn frames(heights: &[i64]) -> PolarsResult<Vec<DataFrame>> {
        heights
            .iter()
            .map(|&n| {
                let rows: Vec<i64> = (0..n).collect();
                DataFrame::new(rows.len(), vec![Column::new("n".into(), rows)])
            })
            .collect()
    }

    fn heights(files: &[DataFrame]) -> Vec<usize> {
        files.iter().map(DataFrame::height).collect()
    }

    /// An hour holding most of a commit's rows is cut into one file per core, in order; hours
    /// that already keep the cores busy, and small rows, stay whole.
    #[test]
    fn a_frame_holding_most_rows_is_cut_into_one_file_per_core() -> PolarsResult<()> {
        // An hourly run's dedup state: the ingestion hour and late readings.
        let files = file_frames(frames(&[1_100_000, 50_000, 50_000])?, 2);
        assert_eq!(heights(&files), [550_000, 550_000, 50_000, 50_000]);
        let second = files[1].column("n")?.i64()?;
        assert_eq!(second.get(0), Some(550_000));
        // An unpartitioned table's 100,000 rows: two files, as before.
        assert_eq!(
            heights(&file_frames(frames(&[100_000])?, 2)),
            [50_000, 50_000]
        );
        // A backlog's batch: hours of a million rows each stay whole.
        assert_eq!(
            heights(&file_frames(frames(&[1_000_000; 8])?, 2)),
            [1_000_000; 8]
        );
        // Below two files' worth of rows, one file.
        assert_eq!(heights(&file_frames(frames(&[60_000])?, 4)), [60_000]);
        // No slice under 32,768 rows: two, not three, of 65,537 rows on 4 cores; three, not
        // four, of 100,000 on 8.
        assert_eq!(
            heights(&file_frames(frames(&[65_537])?, 4)),
            [32_768, 32_769]
        );
        assert_eq!(
            heights(&file_frames(frames(&[100_000])?, 8)),
            [33_333, 33_333, 33_334]
        );
        // Never more files than cores.
        assert_eq!(heights(&file_frames(frames(&[90_000])?, 1)), [90_000]);
        assert_eq!(heights(&file_frames(frames(&[300_000])?, 3)), [100_000; 3]);
        Ok(())
    }
}
