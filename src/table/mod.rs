//! Delta tables: opening them with their fixed layout, reading hour partitions into Polars,
//! writing data files and committing them idempotently, keeping them compact, and scanning
//! them lazily for people's queries.
//!
//! This is the only module that talks to `deltalake`. Every commit carries the application
//! transaction `(APP_ID, batch id)`; before committing, a table's last committed batch id is
//! read back and a batch that already committed is skipped, so a rerun after a crash finishes
//! exactly what is missing. Replacing partitions is one commit that removes the partitions'
//! files and adds the new ones, so readers see either the old or the new hour, never a mix.
//!
//! Hours are Polars `Int64` hour indexes in memory and `YYYY-MM-DDTHH` strings in the tables.
//! An open [`Table`] lists its active files once per table version, not once per read.

mod commit;
mod convert;
mod days;
mod maintain;
mod read;
mod scan;
pub mod schema;
mod stores;
mod write;

use deltalake::DeltaTable;
use deltalake::kernel::{DataType, LogicalFileView, StructField};
use deltalake::protocol::SaveMode;
use futures::TryStreamExt as _;

pub use crate::storage::block_on;
pub use commit::Committed;
pub use convert::long_values;
pub use scan::Shape;
pub use schema::{
    ALERT_METERS, ALERT_TABLES, ALL, CUMULATIVE_USAGE, DAY_TABLES, DEDUP_KEYS, DEDUP_METERS,
    DEDUP_STATE, HOURLY_USAGE, METER_ALERTS, MONTHLY_BILLS, QUARANTINE, RUN_METRICS,
};
pub use schema::{Kind, Pin, Spec, Values, col, long_column, output_tables, pins};
pub use write::{Role, split_by_hour};

use crate::error::{Error, Result};
use crate::hours::parse_hour;
use crate::storage::Location;

/// An open table and its active files.
pub struct Table {
    spec: &'static Spec,
    /// The table's folder or URL, for messages.
    location: String,
    table: DeltaTable,
    /// The data-file uploads still in flight (a table on S3; see `storage::uploads`).
    uploads: Option<std::sync::Arc<crate::storage::Uploads>>,
    files: Vec<FileEntry>,
    /// Properties a table of an earlier version lacks (pinned parameters, with the values it
    /// was opened with, and the log retention): stored by [`Table::upgrade`].
    missing_pins: std::collections::HashMap<String, String>,
    /// Columns a later version added that the table lacks (a table of an earlier version):
    /// added by [`Table::upgrade`].
    missing_columns: Vec<StructField>,
    /// The last batch committed, as read at a version of the table (reading it replays the
    /// log: a few round trips on S3): read again once the version changed.
    last_batch: std::sync::Mutex<Option<KnownBatch>>,
    /// Row groups decoded by this table's reads, for tests of what a read reads.
    row_groups_read: std::sync::atomic::AtomicUsize,
    /// Its day table, attached for reads by customer ([`Table::with_days`]).
    days: Option<Box<Table>>,
}

/// A table's last batch (`.1`) as read at its version `.0` (-1: no version).
type KnownBatch = (i64, Option<i64>);

/// One active data file.
#[derive(Clone)]
struct FileEntry {
    view: LogicalFileView,
    path: String,
    /// Its hour partition (partitioned tables only).
    hour: Option<i64>,
    rows: Option<usize>,
    role: Role,
    /// The day and the source files it copies (a day table's files only).
    covers: Option<days::Covers>,
}

/// The Delta protocol versions of the tables this version creates and writes.
const READER_VERSION: i64 = 1;
const WRITER_VERSION: i64 = 2;

/// What of a table's protocol (as its JSON action) goes beyond what this version writes, if
/// anything: higher versions, or table features.
fn upgraded_protocol(protocol: &serde_json::Value) -> Option<String> {
    let version = |key: &str| protocol.get(key).and_then(serde_json::Value::as_i64);
    let (reader, writer) = (version("minReaderVersion"), version("minWriterVersion"));
    let features: std::collections::BTreeSet<String> = ["readerFeatures", "writerFeatures"]
        .iter()
        .filter_map(|key| protocol.get(key)?.as_array())
        .flatten()
        .map(|f| f.as_str().map_or_else(|| f.to_string(), str::to_owned))
        .collect();
    let within = reader.is_some_and(|r| r <= READER_VERSION)
        && writer.is_some_and(|w| w <= WRITER_VERSION)
        && features.is_empty();
    (!within).then(|| {
        let mut text = format!(
            "reader version {}, writer version {}",
            reader.map_or_else(|| "?".to_owned(), |r| r.to_string()),
            writer.map_or_else(|| "?".to_owned(), |w| w.to_string())
        );
        if !features.is_empty() {
            let names: Vec<&str> = features.iter().map(String::as_str).collect();
            text += &format!(", features {}", names.join(", "));
        }
        text
    })
}

/// The Delta field of column `name` of `spec`: nullable only if a later version added it.
fn delta_field(spec: &Spec, name: &str, kind: Kind) -> Result<StructField> {
    let dtype = match kind {
        Kind::Str | Kind::Hour => DataType::STRING,
        Kind::Long => DataType::LONG,
        Kind::Bool => DataType::BOOLEAN,
        Kind::Binary => DataType::BINARY,
        Kind::Timestamp => DataType::TIMESTAMP,
        Kind::CubicMeters => {
            let (precision, scale) = schema::CUBIC_METERS_DECIMAL;
            DataType::decimal(precision, scale)
                .map_err(|e| Error::table_data(spec.name, name, e.to_string()))?
        }
    };
    Ok(StructField::new(name, dtype, spec.is_added(name)))
}

/// A `deltalake` (or object store) error of table `table`, wrapped: the library's callers never
/// see `deltalake`'s types.
pub(crate) fn delta_error(table: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + Copy + '_ {
    move |source| Error::Delta {
        table: table.to_owned(),
        source: Box::new(source),
    }
}

impl Table {
    /// Opens the table in `dir` (a local folder or an S3 prefix), creating it if it does not
    /// exist, without pins: for tests. Runs open their tables with [`Table::open_pinned`],
    /// views and checks with [`Table::open_existing`].
    #[cfg(test)]
    pub async fn open_or_create(dir: &Location, spec: &'static Spec) -> Result<Self> {
        Self::open_pinned(dir, spec, &[]).await
    }

    /// The table in `dir`, opened as [`Table::open_pinned`] opens it, or `None` if there is no
    /// table there: nothing is created (a view, a check, a run that must not start tables
    /// beside a checkpoint that says they exist).
    pub async fn open_existing(
        dir: &Location,
        spec: &'static Spec,
        pins: &[Pin],
    ) -> Result<Option<Self>> {
        if !dir.join("_delta_log").exists_async().await? {
            return Ok(None);
        }
        Self::open(dir, spec, pins, true).await.map(Some)
    }

    /// Opens the table in `dir`, creating it with `pins` stored as its properties if it does not
    /// exist; fails, before anything is written, if an existing table has another layout, a
    /// protocol another engine upgraded, or another value of a pinned parameter. A table of an
    /// earlier version that stores no value, or lacks columns added since, is noted
    /// ([`Table::upgrade`]).
    pub async fn open_pinned(dir: &Location, spec: &'static Spec, pins: &[Pin]) -> Result<Self> {
        let existed = dir.join("_delta_log").exists_async().await?;
        Self::open(dir, spec, pins, existed).await
    }

    /// [`Table::open_pinned`], where `existed` says whether the table's log folder was there.
    async fn open(
        dir: &Location,
        spec: &'static Spec,
        pins: &[Pin],
        existed: bool,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let err = delta_error(spec.name);
        if let Some(path) = dir.as_local() {
            std::fs::create_dir_all(path).map_err(|e| Error::io("creating", path, e))?;
        }
        let url = stores::table_url(dir)?;
        let fields = spec
            .columns
            .iter()
            .map(|&(name, kind)| delta_field(spec, name, kind))
            .collect::<Result<Vec<_>>>()?;
        let (table, uploads) = stores::load(dir, url).await.map_err(err)?;
        // A table whose log loaded is opened as it is; the create below would load it again.
        let table = if table.version().is_some() {
            table
        } else {
            table
                .create()
                .with_table_name(spec.name)
                .with_columns(fields)
                .with_partition_columns(spec.partition)
                .with_configuration(
                    schema::PROPERTIES
                        .iter()
                        .map(|(key, value, _)| (key.as_ref(), Some(*value))),
                )
                .with_raise_if_key_not_exists(false)
                .with_configuration(pins.iter().map(|p| (p.property(), Some(p.value.clone()))))
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(err)?
        };
        if !existed {
            crate::faults::durable(&format!("{}: created", spec.name));
        }
        let mut table = Self {
            spec,
            location: dir.to_string(),
            table,
            uploads,
            files: Vec::new(),
            missing_pins: Default::default(),
            missing_columns: Vec::new(),
            last_batch: Default::default(),
            row_groups_read: Default::default(),
            days: None,
        };
        table.check_layout()?;
        table.check_pins(pins)?;
        let listed = crate::trace::phase(&format!("table/{} open", spec.name), started);
        table.list_files().await?;
        crate::trace::phase(&format!("table/{} list files", spec.name), listed);
        Ok(table)
    }

    fn check_layout(&mut self) -> Result<()> {
        let snapshot = self.table.snapshot().map_err(delta_error(self.spec.name))?;
        let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
        let expected: Vec<String> = self.spec.partition.iter().map(|p| p.to_string()).collect();
        let columns: Vec<String> = snapshot
            .schema()
            .fields()
            .map(|f| f.name().clone())
            .collect();
        let names = |columns: &[(&str, Kind)]| -> Vec<String> {
            columns.iter().map(|c| c.0.to_owned()).collect()
        };
        let expected_columns = names(self.spec.columns);
        if partitions == expected && columns != expected_columns {
            // A table of an earlier version, without the columns added since, gets them.
            if columns == names(self.spec.first_columns()) {
                self.missing_columns = self
                    .spec
                    .added_columns()
                    .iter()
                    .map(|&(name, kind)| delta_field(self.spec, name, kind))
                    .collect::<Result<_>>()?;
            }
        }
        if partitions != expected
            || (columns != expected_columns && self.missing_columns.is_empty())
        {
            let mut reason = format!(
                "found columns {columns:?} partitioned by {partitions:?}, expected \
                 {expected_columns:?} partitioned by {expected:?}"
            );
            if ALERT_TABLES.iter().any(|a| a.name == self.spec.name) {
                reason += ". The alert tables of another version's layout can be moved aside \
                           together (`meter_alerts` and `_checkpoint/alert_meters`): the next run \
                           creates both and judges alerts from its batch on; a run with \
                           `rebuild=true` after moving them judges the whole log \
                           (docs/OPERATIONS.md, \"Changing a parameter\")";
            }
            return Err(Error::TableLayout {
                table: self.spec.name.to_owned(),
                reason,
            });
        }
        let protocol = serde_json::to_value(snapshot.protocol()).unwrap_or_default();
        if let Some(upgraded) = upgraded_protocol(&protocol) {
            return Err(Error::TableLayout {
                table: self.spec.name.to_owned(),
                reason: format!(
                    "another engine upgraded its Delta protocol ({upgraded}); this version \
                     writes tables of reader version {READER_VERSION} and writer version \
                     {WRITER_VERSION} only, without table features (deletion vectors, column \
                     mapping, constraints...), and changed nothing. Leave these tables to that \
                     engine and compute new ones under a new output_root (see \
                     docs/OPERATIONS.md, \"Maintenance by other engines\")"
                ),
            });
        }
        Ok(())
    }

    /// Checks the pinned parameters' stored values against `pins`; notes the missing ones.
    fn check_pins(&mut self, pins: &[Pin]) -> Result<()> {
        let err = delta_error(self.spec.name);
        let snapshot = self.table.snapshot().map_err(err)?;
        let stored = snapshot.metadata().configuration();
        let mut missing = std::collections::HashMap::new();
        for pin in pins {
            match stored.get(&pin.property()) {
                Some(value) if *value == pin.value => {}
                Some(value) => {
                    return Err(Error::Pinned {
                        table: self.spec.name,
                        location: self.location.clone(),
                        parameter: pin.parameter,
                        stored: value.clone(),
                        given: pin.value.clone(),
                    });
                }
                None => {
                    missing.insert(pin.property(), pin.value.clone());
                }
            }
        }
        // A table of an earlier version may keep a month of its log (this version: a week), or
        // write log checkpoints less often, or without the statistics as a struct.
        // A value an operator chose (not this version's, not an earlier version's) is left.
        for (key, value, earlier) in schema::PROPERTIES {
            let found = stored.get(key.as_ref()).map(String::as_str);
            if found.is_none() || found == earlier {
                missing.insert(key.as_ref().to_owned(), value.to_owned());
            }
        }
        self.missing_pins = missing;
        Ok(())
    }

    /// The value of pinned parameter `parameter` the table stores, if any.
    pub fn stored_pin(&self, parameter: &str) -> Result<Option<String>> {
        let snapshot = self.table.snapshot().map_err(delta_error(self.spec.name))?;
        let property = Pin::property_of(parameter);
        Ok(snapshot.metadata().configuration().get(&property).cloned())
    }

    /// Stores `pins` as the table's properties where it stores another value or none (one
    /// property commit, none if all are stored): a rebuild that recomputed the table with them.
    pub async fn store_pins(&mut self, pins: &[Pin]) -> Result<()> {
        let err = delta_error(self.spec.name);
        let stored = self
            .table
            .snapshot()
            .map_err(err)?
            .metadata()
            .configuration()
            .clone();
        let changed: std::collections::HashMap<String, String> = pins
            .iter()
            .filter(|pin| stored.get(&pin.property()) != Some(&pin.value))
            .map(|pin| (pin.property(), pin.value.clone()))
            .collect();
        self.set_properties(changed).await
    }

    /// Sets `properties` on the table (one property commit; none when there are none).
    async fn set_properties(
        &mut self,
        properties: std::collections::HashMap<String, String>,
    ) -> Result<()> {
        if properties.is_empty() {
            return Ok(());
        }
        self.table = self
            .table
            .clone()
            .set_tbl_properties()
            .with_properties(properties)
            .with_raise_if_not_exists(false)
            .await
            .map_err(delta_error(self.spec.name))?;
        Ok(())
    }

    /// Brings a table of an earlier version up to this version's layout, once the run found
    /// every table agreeing: stores the pinned parameters it lacks (one property commit) and
    /// adds the columns added since (one schema commit; its earlier rows have no value there).
    pub async fn upgrade(&mut self) -> Result<()> {
        let err = delta_error(self.spec.name);
        let missing = std::mem::take(&mut self.missing_pins);
        self.set_properties(missing).await?;
        if !self.missing_columns.is_empty() {
            self.table = self
                .table
                .clone()
                .add_columns()
                .with_fields(std::mem::take(&mut self.missing_columns))
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Lists the active files of the table's current version.
    async fn list_files(&mut self) -> Result<()> {
        let views: Vec<LogicalFileView> = self
            .table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(delta_error(self.spec.name))?;
        let mut files = Vec::with_capacity(views.len());
        for view in views {
            let path = view.path().into_owned();
            let hour = match self.spec.partition {
                Some(part) => {
                    let value = view.partition_values_map().get(part).cloned().flatten();
                    let hour = value.as_deref().and_then(parse_hour).ok_or_else(|| {
                        Error::table_data(
                            self.spec.name,
                            part,
                            format!("file {path} has the partition value {value:?}"),
                        )
                    })?;
                    Some(hour)
                }
                None => None,
            };
            let rows = view.num_records();
            // The file's tags are only public through its `Add` action.
            #[allow(deprecated)]
            let (role, covers) = {
                let tags = view.add_action().tags;
                (
                    Role::of_tags(tags.as_ref()),
                    days::Covers::of_tags(tags.as_ref()),
                )
            };
            files.push(FileEntry {
                view,
                path,
                hour,
                rows,
                role,
                covers,
            });
        }
        self.files = files;
        Ok(())
    }

    /// Reads the table's latest version (another process may have committed) and lists its
    /// files if the version changed.
    async fn refresh(&mut self) -> Result<()> {
        let before = self.table.version();
        self.table
            .update_state()
            .await
            .map_err(delta_error(self.spec.name))?;
        if self.table.version() != before {
            self.list_files().await?;
        }
        Ok(())
    }

    /// The table's name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// The table's version and how many data files it has now.
    pub fn version_and_files(&self) -> (i64, usize) {
        (
            self.table.version().map_or(-1, |v| v as i64),
            self.files.len(),
        )
    }

    /// Rows in the table's current version, from its files' statistics (`None` when a file
    /// has none).
    pub fn rows(&self) -> Option<usize> {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Hour partitions present in the table.
    pub fn partitions(&self) -> std::collections::BTreeSet<i64> {
        self.files.iter().filter_map(|f| f.hour).collect()
    }

    /// No rows, with the table's columns.
    pub fn empty_frame(&self) -> Result<polars::prelude::DataFrame> {
        self.spec.empty_frame()
    }

    /// The hours that have a file of role `role`.
    pub fn hours_with(&self, role: Role) -> std::collections::BTreeSet<i64> {
        self.files
            .iter()
            .filter(|f| f.role == role)
            .filter_map(|f| f.hour)
            .collect()
    }

    /// The paths of hour `hour`'s files of role `role`.
    pub fn files_of(&self, hour: i64, role: Role) -> std::collections::BTreeSet<String> {
        self.files
            .iter()
            .filter(|f| f.hour == Some(hour) && f.role == role)
            .map(|f| f.path.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::{Home, Values};

    /// A table's layout in an earlier version, and in this one, which added a column.
    static EARLIER: Spec = Spec {
        name: "layouts",
        columns: &[("id", Kind::Str), ("ml", Kind::Long)],
        partition: None,
        added: 0,
        row_group_rows: None,
        sorted_by: None,
        home: Home::Output,
        days: None,
    };
    static LATER: Spec = Spec {
        columns: &[("id", Kind::Str), ("ml", Kind::Long), ("by", Kind::Str)],
        added: 1,
        ..EARLIER
    };

    /// A table rewritten whole, with packed values.
    static PACKED: Spec = Spec {
        name: "packed",
        columns: &[("key", Kind::Long), ("packed", Kind::Binary)],
        ..EARLIER
    };

    #[test]
    fn rows_rewritten_whole_split_over_the_cores_and_read_back_whole() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("packed");
        let dir = Location::Local(temp_dir.path().to_path_buf());
        let mut table = block_on(Table::open_or_create(&dir, &PACKED))??;
        let n: i64 = 70_000;
        let rows = PACKED.frame(vec![
            Values::Long((0..n).collect()),
            Values::Bytes(
                (0..n)
                    .map(|k| k.to_le_bytes()[..(k % 9) as usize].to_vec())
                    .collect(),
            ),
        ])?;
        for batch in 0..2 {
            let old = table.appended_files(0);
            block_on(table.commit_removing(batch, Some(&rows), &Default::default(), &old))??;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(table.appended_files(0).len(), cores);
        let back = block_on(table.read_hours(&Default::default()))??
            .sort(["key"], Default::default())
            .map_err(Error::polars("test"))?;
        assert!(back.equals(&rows), "{back}");
        Ok(())
    }

    #[test]
    fn a_table_of_an_earlier_layout_gets_the_added_columns_before_a_write() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("layouts");
        let dir = temp_dir.path().to_path_buf();
        let dir = Location::Local(dir);
        let mut earlier = block_on(Table::open_or_create(&dir, &EARLIER))??;
        let old = EARLIER.frame(vec![Values::Str(vec!["a".into()]), Values::Long(vec![1])])?;
        block_on(earlier.commit_removing(
            0,
            Some(&old),
            &Default::default(),
            &Default::default(),
        ))??;
        // An earlier version also wrote log checkpoints once a day; an operator chose to keep
        // a month of log.
        let month = "interval 720 hours";
        let earlier_properties = [
            (deltalake::TableProperty::CheckpointInterval, "24"),
            (deltalake::TableProperty::LogRetentionDuration, month),
        ];
        block_on(
            earlier.set_properties(
                earlier_properties
                    .iter()
                    .map(|(key, value)| (key.as_ref().to_owned(), (*value).to_owned()))
                    .collect(),
            ),
        )??;

        let mut later = block_on(Table::open_or_create(&dir, &LATER))??;
        let new = LATER.frame(vec![
            Values::Str(vec!["b".into()]),
            Values::Long(vec![2]),
            Values::Str(vec!["v2".into()]),
        ])?;
        let before_upgrade = block_on(later.commit_removing(
            1,
            Some(&new),
            &Default::default(),
            &Default::default(),
        ))?;
        assert!(
            matches!(&before_upgrade, Err(Error::TableLayout { table, .. }) if table == "layouts"),
            "a write before the upgrade would drop the added column: {before_upgrade:?}"
        );
        block_on(later.upgrade())??;
        block_on(later.commit_removing(1, Some(&new), &Default::default(), &Default::default()))??;

        let reopened = block_on(Table::open_or_create(&dir, &LATER))??;
        assert!(reopened.missing_columns.is_empty());
        let snapshot = reopened.table.snapshot().map_err(delta_error("layouts"))?;
        let stored = snapshot.metadata().configuration();
        for (key, value, _) in schema::PROPERTIES {
            let expected = match key {
                deltalake::TableProperty::LogRetentionDuration => month,
                _ => value,
            };
            assert_eq!(
                stored.get(key.as_ref()).map(String::as_str),
                Some(expected),
                "{}",
                key.as_ref()
            );
        }
        let rows = block_on(reopened.read_hours(&Default::default()))??
            .sort(["id"], Default::default())
            .map_err(Error::polars("test"))?;
        let by: Vec<Option<String>> = rows
            .column("by")
            .and_then(|c| c.str().cloned())
            .map_err(Error::polars("test"))?
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect();
        assert_eq!(by, [None, Some("v2".to_owned())], "{rows}");
        let fields: Vec<(String, bool)> = reopened
            .table
            .snapshot()
            .map_err(delta_error("layouts"))?
            .schema()
            .fields()
            .map(|f| (f.name().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            fields,
            [
                ("id".to_owned(), false),
                ("ml".to_owned(), false),
                ("by".to_owned(), true)
            ]
        );
        Ok(())
    }

    #[test]
    fn protocols_beyond_the_ones_written_here_are_named() {
        let judge = |text: &str| {
            let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            upgraded_protocol(&value)
        };
        assert_eq!(
            judge(r#"{"minReaderVersion":1,"minWriterVersion":2}"#),
            None
        );
        assert_eq!(
            judge(r#"{"minReaderVersion":1,"minWriterVersion":1}"#),
            None
        );
        assert_eq!(
            judge(r#"{"minReaderVersion":1,"minWriterVersion":4}"#).as_deref(),
            Some("reader version 1, writer version 4")
        );
        assert_eq!(
            judge(
                r#"{"minReaderVersion":3,"minWriterVersion":7,
                    "readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}"#
            )
            .as_deref(),
            Some("reader version 3, writer version 7, features deletionVectors")
        );
        assert!(
            judge("{}").is_some(),
            "an unreadable protocol is not taken as ours"
        );
    }
}
