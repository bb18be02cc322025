//! Writing data files: each frame a producer emits becomes one parquet file, encoded on one
//! thread per core while the producer makes the next frames. Nothing is committed here.

use std::collections::BTreeMap;

use deltalake::kernel::Add;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use polars::prelude::{DataFrame, IdxCa, IdxSize, SortMultipleOptions};

use super::schema::{Kind, Spec};
use super::{Table, block_on, convert, delta_error};
use crate::error::{Error, Result};

/// Data files a batch wrote to a table, not committed yet.
#[derive(Debug, Default)]
pub struct Written(pub(super) Vec<Add>);

/// The part of an hour partition a data file holds (see [`Role`]'s variants); recorded as the
/// file's Delta tag [`ROLE_TAG`], which every reader ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The rows late data is not expected to change: rewritten only when the whole hour is.
    Main,
    /// The rows late data may still change (customers with a meter gone quiet or just back,
    /// customers new to a month): small, rewritten on their own.
    Side,
    /// A file without the tag: written by another engine (an `OPTIMIZE` that merged an hour's
    /// main and side files) or by a version before main files were tagged. Which customers it
    /// holds is unknown, so a run rewrites its hour whole.
    Foreign,
}

/// The Delta `tags` key naming a file's [`Role`]; a file without it is [`Role::Foreign`].
pub const ROLE_TAG: &str = "aquabill.role";
const MAIN: &str = "main";
const SIDE: &str = "side";

impl Role {
    /// The role recorded in a file's tags.
    pub(super) fn of_tags(
        tags: Option<&std::collections::HashMap<String, Option<String>>>,
    ) -> Self {
        match tags
            .and_then(|t| t.get(ROLE_TAG))
            .and_then(Option::as_deref)
        {
            Some(MAIN) => Role::Main,
            Some(SIDE) => Role::Side,
            _ => Role::Foreign,
        }
    }
}

impl Table {
    /// Writes each frame that `produce` emits (rows of one hour partition, or any rows of an
    /// unpartitioned table) as one data file of the given role, without committing. Frames are
    /// converted and encoded on one thread per core while `produce` makes the next ones, so a
    /// producer going hour by hour holds only a few hours in memory. Emitting fails once a
    /// writer failed; the writer's error is returned.
    pub fn write_frames(
        &self,
        produce: impl FnOnce(&mut dyn FnMut(DataFrame, Role) -> Result<()>) -> Result<()>,
    ) -> Result<Written> {
        let name = self.spec.name;
        if !self.missing_columns.is_empty() {
            // Rows written now would lose the added columns' values without a word.
            return Err(Error::TableLayout {
                table: name.to_owned(),
                reason: "a table of an earlier version, not upgraded to this version's columns \
                         before a write (a bug: every run upgrades its tables first)"
                    .to_owned(),
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut writers = Vec::with_capacity(threads);
        // Columns without a dictionary. The sort column: in the customer tables a value appears
        // once in a file (a dictionary would hold every value again), in the dedup state a
        // meter's readings lie together (runs that compress as well without one). At 100,000
        // meters: files 3-5% smaller, the dedup state's write of an hourly run 480-560 ms ->
        // 350-380 ms. Packed values: each is one of a kind, and they get no statistics either
        // (a packed value's minimum and maximum select nothing) nor compression: varints of
        // differences, which snappy made 11% smaller (the alerts' histories at 100,000 meters:
        // 15.3 MB, 17.3 MB without) for 25-45 ms of an hourly run's 50-100 ms write.
        let packed: Vec<&str> = (self.spec.columns.iter())
            .filter(|c| c.1 == Kind::Binary)
            .map(|c| c.0)
            .collect();
        let properties = (self.spec.row_group_rows.is_some()
            || self.spec.sorted_by.is_some()
            || !packed.is_empty())
        .then(|| {
            let mut properties = WriterProperties::builder().set_compression(Compression::SNAPPY);
            if let Some(rows) = self.spec.row_group_rows {
                properties = properties.set_max_row_group_row_count(Some(rows));
            }
            if let Some(sorted_by) = self.spec.sorted_by {
                properties =
                    properties.set_column_dictionary_enabled(ColumnPath::from(sorted_by), false);
            }
            for &column in &packed {
                let path = || ColumnPath::from(column);
                properties = properties
                    .set_column_dictionary_enabled(path(), false)
                    .set_column_statistics_enabled(path(), EnabledStatistics::None)
                    .set_column_compression(path(), Compression::UNCOMPRESSED);
            }
            properties.build()
        });
        for _ in 0..threads {
            let mut writer =
                RecordBatchWriter::for_table(&self.table).map_err(delta_error(name))?;
            if let Some(properties) = &properties {
                writer = writer.with_writer_properties(properties.clone());
            }
            writers.push(writer);
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(DataFrame, Role)>(threads);
        let receiver = std::sync::Mutex::new(receiver);
        let spec = self.spec;
        let location = self.location.as_str();
        let (produced, written) = std::thread::scope(|scope| {
            let workers: Vec<_> = writers
                .into_iter()
                .map(|writer| {
                    let receiver = &receiver;
                    scope.spawn(move || write_worker(spec, location, writer, receiver))
                })
                .collect();
            let mut emit = |frame: DataFrame, role: Role| {
                if frame.height() == 0 {
                    return Ok(());
                }
                sender.send((frame, role)).map_err(|_| Error::Panicked {
                    what: format!("every writer of {name}"),
                })
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
                        let e = Error::Panicked {
                            what: format!("a writer of {name}"),
                        };
                        failed = failed.or(Some(e));
                    }
                }
            }
            (produced, failed.map_or(Ok(adds), Err))
        });
        let adds = written?;
        produced?;
        self.wait_for_uploads()?;
        if !adds.is_empty() {
            crate::faults::durable(&format!("{name}: data files written"));
        }
        Ok(Written(adds))
    }
}

impl Table {
    /// Waits for the data files still uploading (a table on S3, `storage::uploads`); the first
    /// that failed fails the write. On a thread of its own: the caller may be on the runtime.
    fn wait_for_uploads(&self) -> Result<()> {
        let Some(uploads) = &self.uploads else {
            return Ok(());
        };
        let finished = std::thread::scope(|scope| {
            scope
                .spawn(|| block_on(uploads.finish()))
                .join()
                .map_err(|_| Error::Panicked {
                    what: format!("waiting for the uploads of {}", self.spec.name),
                })
        })??;
        finished.map(drop).map_err(|failed| Error::WriteData {
            table: self.spec.name.to_owned(),
            location: format!("{} (object {})", self.location, failed.key),
            source: Box::new(failed.source),
        })
    }
}

/// `rows` split by the hour index in `column`, in hour order (rows keep their order): one frame
/// per hour partition.
pub fn split_by_hour(rows: &DataFrame, column: &str) -> Result<BTreeMap<i64, DataFrame>> {
    split_by_hour_sorted(rows, column, None)
}

/// [`split_by_hour`], each hour's rows ordered by the integer column `sorted_by` too (stable),
/// in the same gather: what a table sorted by that column writes without sorting again.
pub(super) fn split_by_hour_sorted(
    rows: &DataFrame,
    column: &str,
    sorted_by: Option<&str>,
) -> Result<BTreeMap<i64, DataFrame>> {
    let err = Error::polars("splitting rows by hour");
    // Only an integer column without nulls is ordered here (the writer sorts any other).
    let keys: Option<Vec<i64>> = sorted_by
        .and_then(|name| rows.column(name).ok())
        .and_then(|c| c.i64().ok())
        .filter(|c| c.null_count() == 0)
        .map(|c| c.into_no_null_iter().collect());
    let hours = rows
        .column(column)
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    if hours.null_count() > 0 {
        return Err(Error::table_data("(rows to write)", column, "null hours"));
    }
    // Rows of one hour mostly come together: the last hour's list is kept at hand.
    let mut groups: BTreeMap<i64, Vec<IdxSize>> = BTreeMap::new();
    let mut current: Option<(i64, Vec<IdxSize>)> = None;
    for (i, hour) in hours.into_no_null_iter().enumerate() {
        match &mut current {
            Some((h, rows)) if *h == hour => rows.push(i as IdxSize),
            _ => {
                if let Some((h, rows)) = current.take() {
                    groups.insert(h, rows);
                }
                let mut rows = groups.remove(&hour).unwrap_or_default();
                rows.push(i as IdxSize);
                current = Some((hour, rows));
            }
        }
    }
    if let Some((h, rows)) = current {
        groups.insert(h, rows);
    }
    groups
        .into_iter()
        .map(|(hour, mut rows_of_hour)| {
            if let Some(keys) = &keys {
                order_by_key(&mut rows_of_hour, keys);
            }
            let taken = rows
                .take(&IdxCa::from_vec("".into(), rows_of_hour))
                .map_err(err)?;
            Ok((hour, taken))
        })
        .collect()
}

/// Orders the row indexes `rows` by `keys[row]`, stably: a counting sort when the keys' range is
/// narrow (meter keys are dense), a merge sort otherwise.
fn order_by_key(rows: &mut [IdxSize], keys: &[i64]) {
    let key = |row: IdxSize| keys[row as usize];
    let (min, max) = rows.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &r| {
        (lo.min(key(r)), hi.max(key(r)))
    });
    let span = max
        .checked_sub(min)
        .and_then(|span| usize::try_from(span).ok());
    match span {
        Some(span) if rows.len() > 1 && span <= rows.len().saturating_mul(4) => {
            // Where each key's rows start, then each row placed in its key's next slot.
            let mut next = vec![0usize; span + 2];
            for &r in rows.iter() {
                next[(key(r) - min) as usize + 1] += 1;
            }
            for k in 1..next.len() {
                next[k] += next[k - 1];
            }
            let mut ordered = vec![0 as IdxSize; rows.len()];
            for &r in rows.iter() {
                let slot = &mut next[(key(r) - min) as usize];
                ordered[*slot] = r;
                *slot += 1;
            }
            rows.copy_from_slice(&ordered);
        }
        _ => rows.sort_by_key(|&r| key(r)),
    }
}

/// Whether `frame`'s `column` is in ascending order already (no nulls): what the writer need
/// not sort.
fn is_sorted(frame: &DataFrame, column: &str) -> bool {
    let Ok(values) = frame.column(column) else {
        return false;
    };
    if values.null_count() > 0 {
        return false;
    }
    if let Ok(longs) = values.i64() {
        let mut last = i64::MIN;
        return longs.into_no_null_iter().all(|v| {
            let ok = v >= last;
            last = v;
            ok
        });
    }
    if let Ok(texts) = values.str() {
        let mut iter = texts.iter().flatten();
        let Some(mut last) = iter.next() else {
            return true;
        };
        return iter.all(|v| {
            let ok = v >= last;
            last = v;
            ok
        });
    }
    false
}

/// One writer thread of [`Table::write_frames`]: each frame it receives becomes one file.
///
/// A worker whose write fails (the store refused a file, the disk is full) goes on taking
/// frames without writing them until the producer stops, so that the producer is never left
/// waiting on a full channel, and returns the error.
fn write_worker(
    spec: &'static Spec,
    location: &str,
    writer: RecordBatchWriter,
    frames: &std::sync::Mutex<std::sync::mpsc::Receiver<(DataFrame, Role)>>,
) -> Result<Vec<Add>> {
    let next = || match frames.lock() {
        Ok(frames) => frames.recv().ok(),
        Err(_) => None,
    };
    let written = write_frames_from(spec, location, writer, next);
    if written.is_err() {
        while next().is_some() {}
    }
    written
}

fn write_frames_from(
    spec: &'static Spec,
    location: &str,
    mut writer: RecordBatchWriter,
    mut next: impl FnMut() -> Option<(DataFrame, Role)>,
) -> Result<Vec<Add>> {
    let err = |source: deltalake::DeltaTableError| Error::WriteData {
        table: spec.name.to_owned(),
        location: location.to_owned(),
        source: Box::new(source),
    };
    let schema = writer.arrow_schema();
    let mut adds = Vec::new();
    while let Some((frame, role)) = next() {
        let frame = match spec.sorted_by {
            Some(column) if !is_sorted(&frame, column) => frame
                .sort(
                    [column],
                    SortMultipleOptions::default().with_maintain_order(true),
                )
                .map_err(Error::polars("sorting rows to write"))?,
            _ => frame,
        };
        let batch = convert::to_record_batch(spec, &frame, &schema)?;
        drop(frame);
        let mut written = block_on(async {
            writer.write(batch).await.map_err(err)?;
            writer.flush().await.map_err(err)
        })??;
        let tag = match role {
            Role::Main => Some(MAIN),
            Role::Side => Some(SIDE),
            Role::Foreign => None,
        };
        if let Some(tag) = tag {
            for add in &mut written {
                add.tags
                    .get_or_insert_with(Default::default)
                    .insert(ROLE_TAG.to_owned(), Some(tag.to_owned()));
            }
        }
        adds.extend(written);
    }
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Location;
    use crate::table::HOURLY_USAGE;
    use crate::table::schema::Values;
    use polars::prelude::Column;

    #[test]
    fn hours_are_split_and_ordered_by_the_sort_key_stably() -> Result<()> {
        let err = Error::polars("test");
        // (hour, key, position): keys dense (a counting sort) and then sparse (a merge sort).
        for keys in [
            vec![3i64, 1, 2, 1, 3, 0, 1],
            vec![900i64, 5, 70_000, 5, 900, -4, 5],
        ] {
            let hours = [7i64, 7, 8, 7, 8, 7, 7];
            let rows = DataFrame::new(
                keys.len(),
                vec![
                    Column::new("hour".into(), hours.to_vec()),
                    Column::new("key".into(), keys.clone()),
                    Column::new(
                        "position".into(),
                        (0..keys.len() as i64).collect::<Vec<_>>(),
                    ),
                ],
            )
            .map_err(err)?;
            let split = split_by_hour_sorted(&rows, "hour", Some("key"))?;
            assert_eq!(split.keys().copied().collect::<Vec<_>>(), [7, 8]);
            for (hour, frame) in &split {
                let positions: Vec<i64> = frame
                    .column("position")
                    .and_then(|c| c.i64().cloned())
                    .map_err(err)?
                    .into_no_null_iter()
                    .collect();
                // By hand: the rows of the hour, by key, equal keys in their order.
                let mut expected: Vec<i64> = (0..keys.len() as i64)
                    .filter(|&i| hours[i as usize] == *hour)
                    .collect();
                expected.sort_by_key(|&i| keys[i as usize]);
                assert_eq!(positions, expected, "hour {hour}, keys {keys:?}");
                assert!(is_sorted(frame, "key"));
            }
            // Without a sort column the rows keep their order.
            let plain = split_by_hour(&rows, "hour")?;
            let first: Vec<i64> = plain[&7]
                .column("position")
                .and_then(|c| c.i64().cloned())
                .map_err(err)?
                .into_no_null_iter()
                .collect();
            assert_eq!(first, [0, 1, 3, 5, 6]);
        }
        let texts = DataFrame::new(
            3,
            vec![Column::new("id".into(), ["C1", "C2", "C10"].to_vec())],
        )
        .map_err(err)?;
        assert!(!is_sorted(&texts, "id"), "C10 sorts before C2");
        assert!(!is_sorted(&texts, "no such column"));
        Ok(())
    }

    /// A store that refuses every data file (here: a plain file where the hour's partition
    /// folder must go) fails the write with an error, however many frames are still to come;
    /// it never leaves the producer waiting on writers that stopped.
    #[test]
    fn a_refused_write_fails_instead_of_waiting() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("refused");
        let dir = temp_dir.path().to_path_buf();
        let table = block_on(Table::open_or_create(
            &Location::Local(dir.clone()),
            &HOURLY_USAGE,
        ))??;
        let hour = crate::hours::parse_hour("2026-03-01T00").ok_or(Error::Hour { hour: 0 })?;
        let blocked = dir.join("usage_hour=2026-03-01T00");
        std::fs::write(&blocked, b"not a folder").map_err(|e| Error::io("w", &blocked, e))?;
        let frame = HOURLY_USAGE.frame(vec![
            Values::Str(vec!["C1".into()]),
            Values::Long(vec![hour]),
            Values::Long(vec![1500]),
            Values::Long(vec![2]),
            Values::Long(vec![1]),
        ])?;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let written = table
                .write_frames(|emit| (0..50).try_for_each(|_| emit(frame.clone(), Role::Main)));
            let _ = done.send(written.map(|w| w.0.len()));
        });
        match finished.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Err(Error::WriteData {
                table, location, ..
            })) => {
                assert_eq!(table, "hourly_usage");
                assert_eq!(location, dir.display().to_string());
            }
            Ok(other) => panic!("the refused write must fail, got {other:?}"),
            Err(_) => panic!("the write waited for a minute instead of failing"),
        }
        Ok(())
    }
}
