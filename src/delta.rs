//! Delta tables: their schemas, reading hour partitions into Polars, and idempotent commits.
//!
//! This is the only module that talks to `deltalake`. Every commit carries the application
//! transaction `(APP_ID, batch id)`; before committing, a table's last committed batch id is
//! read back and a batch that already committed is skipped, so a rerun after a crash finishes
//! exactly what is missing. Replacing partitions is one commit that removes the partitions'
//! files and adds the new ones, so readers see either the old or the new hour, never a mix.
//!
//! Hours are Polars `Int64` hour indexes in memory and `YYYY-MM-DDTHH` strings in the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, DataType, StructField, Transaction};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use polars::prelude::{Column, DataFrame, IdxCa, IdxSize, IntoColumn, NamedFrom, Series};

use crate::error::{Error, Result};
use crate::hours::{format_hour, parse_hour};

/// Application id of every transaction the pipeline commits.
pub const APP_ID: &str = "aquabill";

/// How a column is typed in Delta and in Polars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Delta `string`, Polars `String`.
    Str,
    /// Delta `long`, Polars `Int64`.
    Long,
    /// Delta `boolean`, Polars `Boolean`.
    Bool,
    /// Delta `string` `YYYY-MM-DDTHH` (UTC), Polars `Int64` hour index.
    Hour,
    /// Delta `timestamp` (UTC, µs), Polars `Int64` µs since the epoch.
    Timestamp,
}

/// The fixed layout of one table.
#[derive(Debug)]
pub struct Spec {
    /// Folder name under the output root (or checkpoint folder).
    pub name: &'static str,
    /// Columns in order; none is nullable.
    pub columns: &'static [(&'static str, Kind)],
    /// Partition column (of kind [`Kind::Hour`]), if any.
    pub partition: Option<&'static str>,
    /// Rows per parquet row group, where readers skip row groups by their statistics.
    pub row_group_rows: Option<usize>,
}

/// `hourly_usage`: usage per customer and recording hour.
pub const HOURLY_USAGE: Spec = Spec {
    name: "hourly_usage",
    columns: &[
        ("customer_id", Kind::Str),
        ("usage_hour", Kind::Hour),
        ("usage_ml", Kind::Long),
        ("reading_count", Kind::Long),
        ("meter_count", Kind::Long),
    ],
    partition: Some("usage_hour"),
    row_group_rows: None,
};

/// `cumulative_usage`: dense running total per customer over the billing month.
pub const CUMULATIVE_USAGE: Spec = Spec {
    name: "cumulative_usage",
    columns: &[
        ("customer_id", Kind::Str),
        ("usage_hour", Kind::Hour),
        ("billing_month", Kind::Str),
        ("usage_ml", Kind::Long),
        ("cumulative_ml", Kind::Long),
        ("is_final", Kind::Bool),
    ],
    partition: Some("usage_hour"),
    row_group_rows: None,
};

/// `quarantine`: every line or record kept out of the totals, with its reason.
pub const QUARANTINE: Spec = Spec {
    name: "quarantine",
    columns: &[
        ("batch_id", Kind::Long),
        ("source_file", Kind::Str),
        ("line_number", Kind::Long),
        ("reason", Kind::Str),
        ("detail", Kind::Str),
        ("raw_line", Kind::Str),
    ],
    partition: None,
    row_group_rows: None,
};

/// `run_metrics`: one row per run.
pub const RUN_METRICS: Spec = Spec {
    name: "run_metrics",
    columns: &[
        ("batch_id", Kind::Long),
        ("started_at", Kind::Timestamp),
        ("files", Kind::Long),
        ("lines_read", Kind::Long),
        ("accepted", Kind::Long),
        ("duplicates", Kind::Long),
        ("conflicts", Kind::Long),
        ("late", Kind::Long),
        ("future", Kind::Long),
        ("malformed", Kind::Long),
        ("hours_touched", Kind::Long),
        ("state_rows_read", Kind::Long),
        ("watermark_hour", Kind::Str),
        ("duration_ms", Kind::Long),
        ("plan_ms", Kind::Long),
        ("parse_ms", Kind::Long),
        ("dedup_ms", Kind::Long),
        ("hourly_usage_ms", Kind::Long),
        ("cumulative_usage_ms", Kind::Long),
        ("finish_ms", Kind::Long),
        ("hourly_usage_version", Kind::Long),
        ("hourly_usage_files", Kind::Long),
        ("cumulative_usage_version", Kind::Long),
        ("cumulative_usage_files", Kind::Long),
    ],
    partition: None,
    row_group_rows: None,
};

/// The dedup state: readings accepted within the watermark, by recording hour.
pub const DEDUP_STATE: Spec = Spec {
    name: "dedup_state",
    columns: &[
        ("meter_id", Kind::Str),
        ("recorded_at", Kind::Long),
        ("customer_id", Kind::Str),
        ("usage_ml", Kind::Long),
        ("usage_hour", Kind::Hour),
    ],
    partition: Some("usage_hour"),
    // Files are sorted by meter: a run reading a few meters' readings decodes a few row groups.
    row_group_rows: Some(1024),
};

/// Every table the pipeline writes, in commit order.
pub const ALL: [&Spec; 5] = [
    &HOURLY_USAGE,
    &CUMULATIVE_USAGE,
    &QUARANTINE,
    &RUN_METRICS,
    &DEDUP_STATE,
];

/// Commits between Delta log checkpoints (written by each table's commit hook).
pub const CHECKPOINT_INTERVAL: &str = "24";

/// An open table.
pub struct Table {
    spec: &'static Spec,
    table: DeltaTable,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The batch's change is in the table as this version.
    Version(u64),
    /// The batch had already committed to this table (a rerun); nothing was written.
    AlreadyCommitted,
    /// The batch had nothing to change in this table.
    Nothing,
}

impl Table {
    /// Opens the table in `dir`, creating it if it does not exist; fails if an existing table
    /// has another layout.
    pub async fn open_or_create(dir: &Path, spec: &'static Spec) -> Result<Self> {
        let err = |e: DeltaTableError| Error::delta(spec.name, e);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let existed = dir.join("_delta_log").is_dir();
        let url = deltalake::ensure_table_uri(dir.to_string_lossy()).map_err(err)?;
        let fields = spec.columns.iter().map(|&(name, kind)| {
            let dtype = match kind {
                Kind::Str | Kind::Hour => DataType::STRING,
                Kind::Long => DataType::LONG,
                Kind::Bool => DataType::BOOLEAN,
                Kind::Timestamp => DataType::TIMESTAMP,
            };
            StructField::new(name, dtype, false)
        });
        let table = DeltaTable::try_from_url(url)
            .await
            .map_err(err)?
            .create()
            .with_table_name(spec.name)
            .with_columns(fields)
            .with_partition_columns(spec.partition)
            // About one commit per hourly run: a log checkpoint a day keeps opening the table
            // (the latest checkpoint plus at most a day of commits) flat as history grows.
            .with_configuration_property(
                TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL),
            )
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(err)?;
        if !existed {
            crate::faults::durable(&format!("{}: created", spec.name));
        }
        let table = Self { spec, table };
        table.check_layout()?;
        Ok(table)
    }

    fn check_layout(&self) -> Result<()> {
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| Error::delta(self.spec.name, e))?;
        let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        let expected: Vec<String> = self.spec.partition.iter().map(|p| p.to_string()).collect();
        let columns: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().clone())
            .collect();
        let expected_columns: Vec<String> =
            self.spec.columns.iter().map(|c| c.0.to_owned()).collect();
        if partitions != expected || columns != expected_columns {
            return Err(Error::TableLayout {
                table: self.spec.name.to_owned(),
                reason: format!(
                    "found columns {columns:?} partitioned by {partitions:?}, expected \
                     {expected_columns:?} partitioned by {expected:?}"
                ),
            });
        }
        Ok(())
    }

    /// The last batch id committed to this table.
    pub async fn last_batch(&self) -> Result<Option<i64>> {
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| Error::delta(self.spec.name, e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), APP_ID)
            .await
            .map_err(|e| Error::delta(self.spec.name, e))
    }

    async fn files(&self) -> Result<Vec<deltalake::kernel::LogicalFileView>> {
        self.table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| Error::delta(self.spec.name, e))
    }

    /// The table's version and how many data files it has now.
    pub async fn version_and_files(&self) -> Result<(i64, usize)> {
        Ok((
            self.table.version().map_or(-1, |v| v as i64),
            self.files().await?.len(),
        ))
    }

    /// The paths of every data file of an unpartitioned table, when there are at least
    /// `min_files` of them (what a compaction of an append-only table would rewrite); none for
    /// a partitioned table.
    pub async fn appended_files(&self, min_files: usize) -> Result<BTreeSet<String>> {
        let files = self.files().await?;
        if self.spec.partition.is_some() || files.len() < min_files {
            return Ok(BTreeSet::new());
        }
        Ok(files.iter().map(|f| f.path().into_owned()).collect())
    }

    /// Deletes data files no version younger than `retention_hours` refers to, and files no
    /// commit refers to at all (left by a run that crashed before committing) once they are
    /// that old. Returns how many files were deleted.
    pub async fn vacuum(&mut self, retention_hours: i64) -> Result<usize> {
        let name = self.spec.name;
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::hours(retention_hours))
            .with_mode(VacuumMode::Full)
            .await
            .map_err(|e| Error::delta(name, e))?;
        self.table = table;
        Ok(metrics.files_deleted.len())
    }

    /// Hour partitions present in the table.
    pub async fn partitions(&self) -> Result<BTreeSet<i64>> {
        let Some(part) = self.spec.partition else {
            return Ok(BTreeSet::new());
        };
        Ok(self
            .files()
            .await?
            .iter()
            .filter_map(|f| partition_hour(f, part))
            .collect())
    }

    /// Reads the rows of the hour partitions `hours` (all rows if the table is unpartitioned).
    pub async fn read_hours(&self, hours: &BTreeSet<i64>) -> Result<DataFrame> {
        let all: BTreeMap<i64, Option<&BTreeSet<String>>> =
            hours.iter().map(|&h| (h, None)).collect();
        self.read(&all, "", None).await
    }

    /// Reads the rows of the hour partitions in `keys` whose `column` may hold one of that
    /// hour's keys: row groups whose min/max statistics rule out every key are not decoded, so
    /// the result is the matching rows plus at most their row groups' neighbors.
    pub async fn read_hours_matching(
        &self,
        column: &str,
        keys: &BTreeMap<i64, BTreeSet<String>>,
    ) -> Result<DataFrame> {
        let keys: BTreeMap<i64, Option<&BTreeSet<String>>> =
            keys.iter().map(|(&h, k)| (h, Some(k))).collect();
        self.read(&keys, column, None).await
    }

    /// The hour partitions among `hours` holding at least `min_files` files of fewer than
    /// `max_rows` rows each, with those files' paths: what a compaction would rewrite.
    pub async fn small_files(
        &self,
        hours: &BTreeSet<i64>,
        max_rows: usize,
        min_files: usize,
    ) -> Result<BTreeMap<i64, BTreeSet<String>>> {
        let Some(part) = self.spec.partition else {
            return Ok(BTreeMap::new());
        };
        let mut by_hour: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for file in self.files().await? {
            let Some(hour) = partition_hour(&file, part).filter(|h| hours.contains(h)) else {
                continue;
            };
            if file.num_records().is_some_and(|n| n < max_rows) {
                by_hour
                    .entry(hour)
                    .or_default()
                    .insert(file.path().into_owned());
            }
        }
        by_hour.retain(|_, files| files.len() >= min_files);
        Ok(by_hour)
    }

    /// Reads the rows of the files `paths`, which lie in the hour partitions `hours`.
    pub async fn read_files(
        &self,
        hours: &BTreeSet<i64>,
        paths: &BTreeSet<String>,
    ) -> Result<DataFrame> {
        let all: BTreeMap<i64, Option<&BTreeSet<String>>> =
            hours.iter().map(|&h| (h, None)).collect();
        self.read(&all, "", Some(paths)).await
    }

    async fn read(
        &self,
        hours: &BTreeMap<i64, Option<&BTreeSet<String>>>,
        column: &str,
        paths: Option<&BTreeSet<String>>,
    ) -> Result<DataFrame> {
        let store = self.table.log_store().object_store(None);
        let mut frames = Vec::new();
        for file in self.files().await? {
            if paths.is_some_and(|p| !p.contains(file.path().as_ref())) {
                continue;
            }
            let (hour, keys) = match self.spec.partition {
                Some(part) => {
                    match partition_hour(&file, part).and_then(|h| hours.get(&h).map(|k| (h, *k))) {
                        Some((h, keys)) => (Some(h), keys),
                        None => continue,
                    }
                }
                None => (None, None),
            };
            let bytes = store
                .get(&file.object_store_path())
                .await
                .map_err(|e| Error::delta(self.spec.name, e.into()))?
                .bytes()
                .await
                .map_err(|e| Error::delta(self.spec.name, e.into()))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| Error::delta(self.spec.name, e.into()))?;
            let builder = match keys {
                Some(keys) => {
                    let groups = matching_row_groups(builder.metadata(), column, keys);
                    builder.with_row_groups(groups)
                }
                None => builder,
            };
            let reader = builder
                .build()
                .map_err(|e| Error::delta(self.spec.name, e.into()))?;
            for batch in reader {
                let batch = batch.map_err(|e| Error::delta(self.spec.name, e.into()))?;
                frames.push(self.to_frame(&batch, hour)?);
            }
        }
        let mut out = self.empty_frame()?;
        for frame in frames {
            out.vstack_mut(&frame)
                .map_err(Error::polars("reading a table"))?;
        }
        Ok(out)
    }

    /// Commits batch `batch_id`: removes the files of the hour partitions in `replace` and adds
    /// `rows` (which must lie in those partitions, or anywhere if `replace` is empty: an append).
    pub async fn commit(
        &mut self,
        batch_id: i64,
        rows: Option<&DataFrame>,
        replace: &BTreeSet<i64>,
    ) -> Result<Committed> {
        self.commit_removing(batch_id, rows, replace, &BTreeSet::new())
            .await
    }

    /// [`Table::commit`] that also removes the files `paths` (rows read from them must be in
    /// `rows`): how small files are compacted in the same commit as the batch's change.
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
            Some(rows) => match self.spec.partition {
                Some(part) => by_hour(rows, part)?.into_values().collect(),
                None => vec![rows.clone()],
            },
            None => Vec::new(),
        };
        let written = self.write_frames(|emit| frames.into_iter().try_for_each(emit))?;
        self.commit_written(batch_id, written, replace, paths).await
    }

    /// Whether batch `batch_id` (or a later one) already committed to this table, as read from
    /// the table's latest version.
    pub async fn has_batch(&mut self, batch_id: i64) -> Result<bool> {
        self.table
            .update_state()
            .await
            .map_err(|e| Error::delta(self.spec.name, e))?;
        Ok(self.last_batch().await?.is_some_and(|b| b >= batch_id))
    }

    /// Writes each frame that `produce` emits (rows of one hour partition, or any rows of an
    /// unpartitioned table) as one data file, without committing. Frames are converted and
    /// encoded on one thread per core while `produce` makes the next ones, so a producer going
    /// hour by hour holds only a few hours in memory. Emitting fails once a writer failed; the
    /// writer's error is returned.
    pub fn write_frames(
        &self,
        produce: impl FnOnce(&mut dyn FnMut(DataFrame) -> Result<()>) -> Result<()>,
    ) -> Result<Written> {
        let name = self.spec.name;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut writers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut writer =
                RecordBatchWriter::for_table(&self.table).map_err(|e| Error::delta(name, e))?;
            if let Some(rows) = self.spec.row_group_rows {
                writer = writer.with_writer_properties(
                    WriterProperties::builder()
                        .set_compression(Compression::SNAPPY)
                        .set_max_row_group_row_count(Some(rows))
                        .build(),
                );
            }
            writers.push(writer);
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel::<DataFrame>(threads);
        let receiver = std::sync::Mutex::new(receiver);
        let spec = self.spec;
        let (produced, written) = std::thread::scope(|scope| {
            let workers: Vec<_> = writers
                .into_iter()
                .map(|writer| {
                    let receiver = &receiver;
                    scope.spawn(move || write_worker(spec, writer, receiver))
                })
                .collect();
            let mut emit = |frame: DataFrame| {
                if frame.height() == 0 {
                    return Ok(());
                }
                sender
                    .send(frame)
                    .map_err(|_| Error::Protocol(format!("the writers of {name} stopped")))
            };
            let produced = produce(&mut emit);
            drop(sender);
            let mut adds = Vec::new();
            let mut failed = None;
            for worker in workers {
                match worker.join() {
                    Ok(Ok(written)) => adds.extend(written),
                    Ok(Err(e)) => failed = failed.or(Some(e)),
                    Err(_) => {
                        let e = Error::Protocol(format!("a writer of {name} panicked"));
                        failed = failed.or(Some(e));
                    }
                }
            }
            (produced, failed.map_or(Ok(adds), Err))
        });
        let adds = written?;
        produced?;
        if !adds.is_empty() {
            crate::faults::durable(&format!("{name}: data files written"));
        }
        Ok(Written(adds))
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
        let err = |e: DeltaTableError| Error::delta(name, e);
        if self.has_batch(batch_id).await? {
            return Ok(Committed::AlreadyCommitted);
        }
        let mut actions = Vec::new();
        for file in self.files().await? {
            let in_replaced_hour = self
                .spec
                .partition
                .and_then(|part| partition_hour(&file, part))
                .is_some_and(|h| replace.contains(&h));
            if in_replaced_hour || paths.contains(file.path().as_ref()) {
                actions.push(Action::Remove(file.remove_action(true)));
            }
        }
        actions.extend(written.0.into_iter().map(Action::Add));
        if actions.is_empty() {
            return Ok(Committed::Nothing);
        }
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
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(APP_ID, batch_id));
        let snapshot = self.table.snapshot().map_err(err)?;
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(err)?;
        let version = finalized.version();
        crate::faults::durable(&format!("{name}: committed"));
        self.table.update_state().await.map_err(err)?;
        Ok(Committed::Version(version))
    }

    fn empty_frame(&self) -> Result<DataFrame> {
        let columns = self
            .spec
            .columns
            .iter()
            .map(|&(name, kind)| match kind {
                Kind::Str => Series::new(name.into(), Vec::<String>::new()).into_column(),
                Kind::Bool => Series::new(name.into(), Vec::<bool>::new()).into_column(),
                Kind::Long | Kind::Hour | Kind::Timestamp => {
                    Series::new(name.into(), Vec::<i64>::new()).into_column()
                }
            })
            .collect();
        DataFrame::new(0, columns).map_err(Error::polars("reading a table"))
    }

    /// Polars columns from a parquet batch; the partition column comes from the file's path.
    fn to_frame(&self, batch: &RecordBatch, hour: Option<i64>) -> Result<DataFrame> {
        let n = batch.num_rows();
        let mut columns: Vec<Column> = Vec::new();
        for &(name, kind) in self.spec.columns {
            if Some(name) == self.spec.partition {
                columns.push(
                    Series::new(name.into(), vec![hour.unwrap_or_default(); n]).into_column(),
                );
                continue;
            }
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| arrow_err(self.spec, format!("file lacks column {name}")))?;
            let column = match kind {
                Kind::Str => {
                    let a = downcast::<StringArray>(array, name, self.spec.name)?;
                    Series::new(
                        name.into(),
                        a.iter().map(|v| v.unwrap_or_default()).collect::<Vec<_>>(),
                    )
                }
                Kind::Long => {
                    let a = downcast::<Int64Array>(array, name, self.spec.name)?;
                    Series::new(name.into(), a.values().to_vec())
                }
                Kind::Timestamp => {
                    let a = downcast::<TimestampMicrosecondArray>(array, name, self.spec.name)?;
                    Series::new(name.into(), a.values().to_vec())
                }
                Kind::Bool => {
                    let a = downcast::<BooleanArray>(array, name, self.spec.name)?;
                    Series::new(
                        name.into(),
                        a.iter().map(|v| v.unwrap_or_default()).collect::<Vec<_>>(),
                    )
                }
                Kind::Hour => {
                    let a = downcast::<StringArray>(array, name, self.spec.name)?;
                    let hours: Option<Vec<i64>> =
                        a.iter().map(|v| v.and_then(parse_hour)).collect();
                    Series::new(
                        name.into(),
                        hours.ok_or_else(|| arrow_err(self.spec, format!("bad hour in {name}")))?,
                    )
                }
            };
            columns.push(column.into_column());
        }
        DataFrame::new(n, columns).map_err(Error::polars("reading a table"))
    }
}

/// `rows` split by the hour index in `column`, in hour order (rows keep their order).
pub fn by_hour(rows: &DataFrame, column: &str) -> Result<BTreeMap<i64, DataFrame>> {
    let err = Error::polars("splitting rows by hour");
    let hours = rows
        .column(column)
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    let mut groups: BTreeMap<i64, Vec<IdxSize>> = BTreeMap::new();
    for (i, hour) in hours.into_no_null_iter().enumerate() {
        groups.entry(hour).or_default().push(i as IdxSize);
    }
    groups
        .into_iter()
        .map(|(hour, rows_of_hour)| {
            let taken = rows
                .take(&IdxCa::from_vec("".into(), rows_of_hour))
                .map_err(err)?;
            Ok((hour, taken))
        })
        .collect()
}

/// Data files a batch wrote to a table, not committed yet.
#[derive(Debug, Default)]
pub struct Written(Vec<Add>);

/// One writer thread of [`Table::write_frames`]: each frame it receives becomes one file.
fn write_worker(
    spec: &'static Spec,
    mut writer: RecordBatchWriter,
    frames: &std::sync::Mutex<std::sync::mpsc::Receiver<DataFrame>>,
) -> Result<Vec<Add>> {
    let err = |e: DeltaTableError| Error::delta(spec.name, e);
    let runtime = crate::run::runtime()?;
    let schema = writer.arrow_schema();
    let mut adds = Vec::new();
    loop {
        let next = match frames.lock() {
            Ok(frames) => frames.recv(),
            Err(_) => break,
        };
        let Ok(frame) = next else { break };
        let batch = to_record_batch(spec, &frame, &schema)?;
        drop(frame);
        runtime.block_on(async {
            writer.write(batch).await.map_err(err)?;
            adds.extend(writer.flush().await.map_err(err)?);
            Ok::<_, Error>(())
        })?;
    }
    Ok(adds)
}

/// An Arrow batch in the writer's schema from Polars columns.
fn to_record_batch(spec: &Spec, rows: &DataFrame, schema: &ArrowSchema) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let kind = spec
            .columns
            .iter()
            .find(|c| c.0 == name)
            .map(|c| c.1)
            .ok_or_else(|| arrow_err(spec, format!("table has unexpected column {name}")))?;
        let column = rows
            .column(name)
            .map_err(Error::polars("writing a table"))?;
        let array: ArrayRef = match kind {
            Kind::Str => {
                let ca = column.str().map_err(Error::polars("writing a table"))?;
                Arc::new(
                    ca.iter()
                        .map(|v| Some(v.unwrap_or_default()))
                        .collect::<StringArray>(),
                )
            }
            Kind::Hour => {
                let ca = column.i64().map_err(Error::polars("writing a table"))?;
                // Formatting is costly and a frame is mostly one hour: each run of equal hours
                // is formatted once.
                let mut built = StringBuilder::with_capacity(ca.len(), ca.len() * 13);
                let mut last: Option<(i64, String)> = None;
                for hour in ca.iter() {
                    match (hour, &last) {
                        (None, _) => built.append_null(),
                        (Some(h), Some((l, text))) if h == *l => built.append_value(text),
                        (Some(h), _) => {
                            let text = format_hour(h);
                            built.append_value(&text);
                            last = Some((h, text));
                        }
                    }
                }
                Arc::new(built.finish())
            }
            Kind::Long => {
                let ca = column.i64().map_err(Error::polars("writing a table"))?;
                Arc::new(ca.iter().collect::<Int64Array>())
            }
            Kind::Timestamp => {
                let ca = column.i64().map_err(Error::polars("writing a table"))?;
                Arc::new(
                    ca.iter()
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                )
            }
            Kind::Bool => {
                let ca = column.bool().map_err(Error::polars("writing a table"))?;
                Arc::new(ca.iter().collect::<BooleanArray>())
            }
        };
        if array.null_count() > 0 {
            return Err(arrow_err(spec, format!("column {name} has nulls")));
        }
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(schema.clone()), arrays)
        .map_err(|e| arrow_err(spec, e.to_string()))
}

fn arrow_err(spec: &Spec, reason: String) -> Error {
    Error::Arrow {
        table: spec.name.to_owned(),
        reason,
    }
}

fn partition_hour(file: &deltalake::kernel::LogicalFileView, part: &str) -> Option<i64> {
    file.partition_values_map()
        .get(part)
        .cloned()
        .flatten()
        .as_deref()
        .and_then(parse_hour)
}

fn downcast<'a, T: 'static>(array: &'a ArrayRef, column: &str, table: &str) -> Result<&'a T> {
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Arrow {
            table: table.to_owned(),
            reason: format!("column {column} has type {}", array.data_type()),
        })
}

/// Row groups whose `column` statistics admit at least one of `keys` (all row groups when the
/// column or its statistics are missing).
fn matching_row_groups(
    metadata: &deltalake::parquet::file::metadata::ParquetMetaData,
    column: &str,
    keys: &BTreeSet<String>,
) -> Vec<usize> {
    let index = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == column);
    (0..metadata.num_row_groups())
        .filter(|&i| {
            let stats = index.and_then(|c| metadata.row_group(i).column(c).statistics());
            let bounds = stats.and_then(|s| Some((s.min_bytes_opt()?, s.max_bytes_opt()?)));
            let Some((min, max)) = bounds else {
                return true;
            };
            let (Ok(min), Ok(max)) = (std::str::from_utf8(min), std::str::from_utf8(max)) else {
                return true;
            };
            keys.range(min.to_owned()..)
                .next()
                .is_some_and(|k| k.as_str() <= max)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    #[test]
    fn row_groups_are_chosen_by_their_key_range() -> Result<(), Box<dyn std::error::Error>> {
        let meters = StringArray::from(vec!["M1", "M2", "M3", "M4", "M5", "M6"]);
        let batch = RecordBatch::try_from_iter([("meter_id", Arc::new(meters) as ArrayRef)])?;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let path = std::env::temp_dir().join(format!("aquabill-rg-{}.parquet", std::process::id()));
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path)?, batch.schema(), Some(props))?;
        writer.write(&batch)?;
        writer.close()?;
        let reader = SerializedFileReader::new(std::fs::File::open(&path)?)?;
        std::fs::remove_file(&path)?;
        let metadata = reader.metadata();
        assert_eq!(metadata.num_row_groups(), 3);
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        for (wanted, groups) in [
            (keys(&["M3"]), vec![1]),
            (keys(&["M2", "M6"]), vec![0, 2]),
            (keys(&["M0", "M7"]), vec![]),
            (keys(&["M35"]), vec![1]), // within M3..M4: read, and filtered later by the join
        ] {
            assert_eq!(
                matching_row_groups(metadata, "meter_id", &wanted),
                groups,
                "{wanted:?}"
            );
        }
        assert_eq!(
            matching_row_groups(metadata, "no_such_column", &keys(&["M3"])),
            vec![0, 1, 2]
        );
        Ok(())
    }
}
