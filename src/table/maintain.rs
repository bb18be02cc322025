//! Keeping tables compact: which small files a compaction would rewrite, and the vacuum that
//! deletes files no recent version needs.

use std::collections::{BTreeMap, BTreeSet};

use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::checkpoints::cleanup_expired_logs_for;
use deltalake::table::config::TablePropertiesExt as _;

use super::{Table, delta_error};
use crate::error::Result;

impl Table {
    /// The paths of every data file of an unpartitioned table, when there are at least
    /// `min_files` of them (what a compaction of an append-only table would rewrite); none for
    /// a partitioned table.
    pub fn appended_files(&self, min_files: usize) -> BTreeSet<String> {
        if self.spec.partition.is_some() || self.files.len() < min_files {
            return BTreeSet::new();
        }
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// The hour partitions among `hours` holding at least `min_files` files of fewer than
    /// `max_rows` rows each, with those files' paths: what a compaction would rewrite.
    pub fn small_files(
        &self,
        hours: &BTreeSet<i64>,
        max_rows: usize,
        min_files: usize,
    ) -> BTreeMap<i64, BTreeSet<String>> {
        let mut by_hour: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for file in &self.files {
            let Some(hour) = file.hour.filter(|h| hours.contains(h)) else {
                continue;
            };
            if file.rows.is_some_and(|n| n < max_rows) {
                by_hour.entry(hour).or_default().insert(file.path.clone());
            }
        }
        by_hour.retain(|_, files| files.len() >= min_files);
        by_hour
    }

    /// Deletes data files no version younger than `retention_hours` refers to, and files no
    /// commit refers to at all (left by a run that crashed before committing) once they are
    /// that old; then the log's entries older than the table's log retention (the commits do
    /// not, see `commit_written`), up to the latest checkpoint before them. Returns how many data
    /// files were deleted.
    pub async fn vacuum(&mut self, retention_hours: i64) -> Result<usize> {
        let err = delta_error(self.spec.name);
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::hours(retention_hours))
            .with_mode(VacuumMode::Full)
            .await
            .map_err(err)?;
        self.table = table;
        let snapshot = self.table.snapshot().map_err(err)?;
        let retention = snapshot.table_config().log_retention_duration().as_millis();
        let version = snapshot.version();
        let cutoff = chrono::Utc::now().timestamp_millis() - retention as i64;
        cleanup_expired_logs_for(version, self.table.log_store().as_ref(), cutoff, None)
            .await
            .map_err(err)?;
        self.list_files().await?;
        Ok(metrics.files_deleted.len())
    }
}
