//! Reading a table's hour partitions into Polars: whole partitions, chosen files, or only the row
//! groups whose statistics admit some wanted keys (the dedup state, sorted by meter).

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::error::ArrowError;
use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowPredicate, ArrowPredicateFn, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter,
};
use deltalake::parquet::arrow::async_reader::AsyncFileReader;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use object_store::ObjectStore;
use object_store::ObjectStoreExt as _;
use object_store::path::Path as Key;
use polars::prelude::DataFrame;

use super::{Table, convert, delta_error};
use crate::error::{Error, Result};
use crate::hashing::FastSet;
use crate::storage::IN_FLIGHT;

/// The keys wanted from one hour partition, in a column of strings or of integers.
#[derive(Clone, Copy)]
pub(super) enum Wanted<'a> {
    /// Every row.
    All,
    /// The rows holding one of these texts.
    Text(&'a BTreeSet<String>),
    /// The rows holding one of these integers.
    Long(&'a BTreeSet<i64>),
    /// Texts from this one on (row groups only: the rows are not filtered).
    TextFrom(&'a str),
}

impl Table {
    /// Reads the rows of the hour partitions `hours` (all rows if the table is unpartitioned).
    pub async fn read_hours(&self, hours: &BTreeSet<i64>) -> Result<DataFrame> {
        let all: BTreeMap<i64, Wanted<'_>> = hours.iter().map(|&h| (h, Wanted::All)).collect();
        self.read(&all, "", None).await
    }

    /// Reads the rows of the hour partitions in `keys` whose integer `column` holds one of that
    /// hour's keys. Row groups whose min/max statistics rule out every key are not decoded.
    pub async fn read_hours_matching(
        &self,
        column: &str,
        keys: &BTreeMap<i64, BTreeSet<i64>>,
    ) -> Result<DataFrame> {
        let keys: BTreeMap<i64, Wanted<'_>> =
            keys.iter().map(|(&h, k)| (h, Wanted::Long(k))).collect();
        self.read(&keys, column, None).await
    }

    /// Reads the hour partitions `hours` (every file of an unpartitioned table), skipping the
    /// row groups whose statistics of text `column` rule out `wanted`: the rows holding the
    /// wanted texts ([`Wanted::Text`]), or every row of the row groups read
    /// ([`Wanted::TextFrom`]).
    ///
    /// Texts wanted in the column the table is sorted by (customers) are read from the day
    /// table, where one is attached and up to date, for the days it holds (`table::days`).
    pub(super) async fn read_row_groups(
        &self,
        hours: &BTreeSet<i64>,
        column: &str,
        wanted: Wanted<'_>,
    ) -> Result<DataFrame> {
        let from_days = match wanted {
            Wanted::Text(values) => self.read_through_days(hours, column, values).await?,
            _ => None,
        };
        let keys: BTreeMap<i64, Wanted<'_>> = hours
            .iter()
            .filter(|h| !from_days.as_ref().is_some_and(|(days, _)| days.contains(h)))
            .map(|&h| (h, wanted))
            .collect();
        let rows = self.read_with(&keys, column, None, wanted).await?;
        let Some((_, mut earlier)) = from_days else {
            return Ok(rows);
        };
        // The days' rows first: they are the earlier hours.
        earlier
            .vstack_mut(&rows)
            .map_err(Error::polars("reading a table"))?;
        earlier.rechunk_mut_par();
        Ok(earlier)
    }

    /// The rows of the hour partitions `hours` that hold one of `values` in text `column`, from
    /// the row groups whose statistics admit them (see [`Table::read_row_groups`]).
    pub async fn read_hours_of(
        &self,
        hours: &BTreeSet<i64>,
        column: &str,
        values: &BTreeSet<String>,
    ) -> Result<DataFrame> {
        self.read_row_groups(hours, column, Wanted::Text(values))
            .await
    }

    /// The rows of the files `paths`, which lie in the hour partitions `hours` (any of an
    /// unpartitioned table's), that hold one of `values` in text `column`, from the row groups
    /// whose statistics admit them.
    pub(super) async fn read_files_matching(
        &self,
        hours: &BTreeSet<i64>,
        paths: &BTreeSet<String>,
        column: &str,
        values: &BTreeSet<String>,
    ) -> Result<DataFrame> {
        let wanted = Wanted::Text(values);
        let keys: BTreeMap<i64, Wanted<'_>> = hours.iter().map(|&h| (h, wanted)).collect();
        self.read_with(&keys, column, Some(paths), wanted).await
    }

    /// Reads the rows of the files `paths`, which lie in the hour partitions `hours`.
    pub async fn read_files(
        &self,
        hours: &BTreeSet<i64>,
        paths: &BTreeSet<String>,
    ) -> Result<DataFrame> {
        let all: BTreeMap<i64, Wanted<'_>> = hours.iter().map(|&h| (h, Wanted::All)).collect();
        self.read(&all, "", Some(paths)).await
    }

    async fn read(
        &self,
        hours: &BTreeMap<i64, Wanted<'_>>,
        column: &str,
        paths: Option<&BTreeSet<String>>,
    ) -> Result<DataFrame> {
        self.read_with(hours, column, paths, Wanted::All).await
    }

    fn note_row_groups(&self, count: usize) {
        self.row_groups_read
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// Row groups this table's reads decoded so far.
    #[cfg(test)]
    pub(super) fn row_groups_read(&self) -> usize {
        self.row_groups_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Table::read`], with what is wanted of the files of an unpartitioned table.
    async fn read_with(
        &self,
        hours: &BTreeMap<i64, Wanted<'_>>,
        column: &str,
        paths: Option<&BTreeSet<String>>,
        unpartitioned: Wanted<'_>,
    ) -> Result<DataFrame> {
        let name = self.spec.name;
        let err = delta_error(name);
        let store = self.table.log_store().object_store(None);
        let mut out = self.spec.empty_frame()?;
        let mut chosen = Vec::new();
        for file in &self.files {
            if paths.is_some_and(|p| !p.contains(&file.path)) {
                continue;
            }
            let wanted = match file.hour {
                Some(h) => match hours.get(&h) {
                    Some(wanted) => *wanted,
                    None => continue,
                },
                None => unpartitioned,
            };
            chosen.push((file, wanted));
        }
        // Many files are fetched at once (each a round trip on S3), so they arrive while the
        // earlier ones are decoded here in the table's order. A whole file is one GET, on the
        // runtime; of a file where a few customers or texts are wanted (a view, a query), only
        // the footer and the row groups that may hold them are fetched, and decoded as they
        // arrive.
        // (Only a table on object storage writes through uploads.)
        let on_object_storage = self.uploads.is_some();
        let whole = |wanted: Wanted<'_>| {
            matches!(wanted, Wanted::All)
                || (on_object_storage && matches!(wanted, Wanted::Long(_)))
        };
        // A file read for a few values of the column its rows are sorted by (a customer's rows)
        // holds little in flight, its footer and a row group or two, and each is two round
        // trips one after the other: more of them at once. (Values of another column may be in
        // every row group.)
        let in_flight = if self.spec.sorted_by == Some(column)
            && chosen
                .iter()
                .all(|&(_, wanted)| matches!(wanted, Wanted::Text(_)))
        {
            TEXT_IN_FLIGHT
        } else {
            IN_FLIGHT
        };
        let fetches = futures::stream::iter(chosen.iter().map(|&(file, wanted)| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let key = file.view.object_store_path();
                match wanted {
                    // The dedup state's reads (keys wanted) fetch whole files from object
                    // storage: fewer round trips (at 100,000 meters ranged reads made an hourly
                    // run 10 s slower at 30 ms a request). On local disk a range is a system
                    // call, not a round trip: the footer and the matching row groups alone
                    // (measured: the state read of an hourly run after a week at 100,000
                    // meters, 76 hours touched, 220 ms whole, 165 ms by ranges, 140 MB less
                    // memory).
                    Wanted::All | Wanted::Long(_) if whole(wanted) => {
                        let get = tokio::spawn(async move { store.get(&key).await?.bytes().await });
                        match get.await {
                            Ok(bytes) => Ok(Fetched::Whole(bytes.map_err(|e| err(e.into()))?)),
                            Err(joined) => Err(Error::Panicked {
                                what: format!("reading {} of {name}: {joined}", file.path),
                            }),
                        }
                    }
                    wanted => {
                        let size = u64::try_from(file.view.size()).map_err(|_| {
                            Error::table_data(
                                name,
                                "size",
                                format!("file {} has the size {}", file.path, file.view.size()),
                            )
                        })?;
                        let reader = Ranges { store, key, size };
                        let builder =
                            ParquetRecordBatchStreamBuilder::new_with_options(reader, options())
                                .await
                                .map_err(|e| err(e.into()))?;
                        let groups = matching_row_groups(builder.metadata(), column, wanted);
                        self.note_row_groups(groups.len());
                        let filter = row_filter(builder.metadata(), column, wanted);
                        let builder = builder.with_row_groups(groups);
                        let builder = match filter {
                            Some(filter) => builder.with_row_filter(filter),
                            None => builder,
                        };
                        let batches = builder
                            .build()
                            .map_err(|e| err(e.into()))?
                            .try_collect::<Vec<_>>()
                            .await
                            .map_err(|e| err(e.into()))?;
                        Ok(Fetched::Groups(batches))
                    }
                }
            }
        }))
        .buffered(in_flight);
        futures::pin_mut!(fetches);
        for (file, wanted) in chosen.iter().copied() {
            let batches = match fetches.next().await {
                Some(Ok(Fetched::Whole(bytes))) => {
                    ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options())
                        .and_then(|builder| {
                            let groups = matching_row_groups(builder.metadata(), column, wanted);
                            self.note_row_groups(groups.len());
                            let builder = builder.with_row_groups(groups);
                            // Wanted keys: the key column is decoded first, the others only
                            // for the rows that hold a wanted key.
                            let filter = row_filter(builder.metadata(), column, wanted);
                            match filter {
                                Some(filter) => builder.with_row_filter(filter).build(),
                                None => builder.build(),
                            }
                        })
                        .map_err(|e| err(e.into()))?
                        .collect::<std::result::Result<Vec<_>, ArrowError>>()
                        .map_err(|e| err(e.into()))?
                }
                Some(Ok(Fetched::Groups(batches))) => batches,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Panicked {
                        what: format!("reading {} of {name}: no fetch", file.path),
                    });
                }
            };
            let keys = match wanted {
                Wanted::Long(keys) => Some(KeySet::new(keys)),
                _ => None,
            };
            for batch in batches {
                let batch = match &keys {
                    Some(keys) => only_keys(&batch, column, keys)
                        .map_err(|e| Error::table_data(name, column, e.to_string()))?,
                    None => batch,
                };
                let frame = convert::to_frame(self.spec, &batch, file.hour)?;
                out.vstack_mut(&frame)
                    .map_err(Error::polars("reading a table"))?;
            }
        }
        // One chunk per column, not one per record batch read: Polars' joins and windows over
        // a frame of thousands of chunks were 20 times slower and took gigabytes more
        // (measured: dedup's classify over 12,669 chunks of stored readings).
        out.rechunk_mut_par();
        Ok(out)
    }
}

/// The most files in flight at once in a read for given values of a table's sort column (a
/// customer's rows, for a view or a query): on a month of the customer tables at 50,000
/// customers, at 30 ms a request, a customer's month took 1.44 s with 32 in flight and 0.69 s
/// with 128 (`bench/month_views.py --remote`). A query joining two tables reads both at once.
const TEXT_IN_FLIGHT: usize = 128;

/// A file as fetched: whole, or the row groups wanted, decoded.
enum Fetched {
    Whole(bytes::Bytes),
    Groups(Vec<RecordBatch>),
}

/// A data file read by ranges: its footer (with the metadata, in one request for all but very
/// wide files), then the row groups wanted.
struct Ranges {
    store: std::sync::Arc<dyn ObjectStore>,
    key: Key,
    size: u64,
}

/// Bytes fetched from a file's end at first: the footer and, for this product's files, all
/// of the metadata.
const FOOTER_HINT: usize = 64 * 1024;

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for Ranges {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.key, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, deltalake::parquet::errors::Result<std::sync::Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_HINT))
                .load_and_finish(self, size)
                .await?;
            Ok(std::sync::Arc::new(metadata))
        }
        .boxed()
    }
}

/// How files are decoded: the columns' types come from the parquet schema alone, not from an
/// Arrow schema a writer embedded (another engine's file, an `UPDATE` or `OPTIMIZE` elsewhere,
/// may ask for string views or large strings, which hold the same values).
fn options() -> ArrowReaderOptions {
    ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// Integer keys to test many values against: a bitmap over their range when it is narrow (meter
/// keys are dense), a hash set otherwise.
enum KeySet {
    Bits { min: i64, words: Vec<u64> },
    Hashed(FastSet<i64>),
}

impl KeySet {
    /// The widest range of keys kept as a bitmap (8 MB).
    const MAX_BITS: i64 = 1 << 26;

    fn new(keys: &BTreeSet<i64>) -> Self {
        let range = match (keys.first(), keys.last()) {
            (Some(&min), Some(&max)) => max.checked_sub(min).map(|span| (min, span)),
            _ => Some((0, 0)),
        };
        match range {
            Some((min, span)) if span < Self::MAX_BITS => {
                let mut words = vec![0u64; (span as usize) / 64 + 1];
                for &key in keys {
                    let bit = (key - min) as usize;
                    words[bit / 64] |= 1 << (bit % 64);
                }
                KeySet::Bits { min, words }
            }
            _ => KeySet::Hashed(keys.iter().copied().collect()),
        }
    }

    fn contains(&self, key: i64) -> bool {
        match self {
            KeySet::Bits { min, words } => key
                .checked_sub(*min)
                .and_then(|bit| usize::try_from(bit).ok())
                .and_then(|bit| words.get(bit / 64).map(|w| w >> (bit % 64) & 1 == 1))
                .unwrap_or(false),
            KeySet::Hashed(set) => set.contains(&key),
        }
    }

    /// Whether each value of an integer column is a key (a null is not).
    fn mask(
        &self,
        column: &dyn Array,
        name: &str,
    ) -> std::result::Result<BooleanArray, ArrowError> {
        let values = column
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| ArrowError::SchemaError(format!("no integer column {name}")))?;
        Ok(values
            .iter()
            .map(|v| Some(v.is_some_and(|v| self.contains(v))))
            .collect())
    }
}

/// The rows of `batch` whose integer `column` holds one of `keys`.
fn only_keys(
    batch: &RecordBatch,
    column: &str,
    keys: &KeySet,
) -> std::result::Result<RecordBatch, ArrowError> {
    let values = batch
        .column_by_name(column)
        .ok_or_else(|| ArrowError::SchemaError(format!("no integer column {column}")))?;
    filter_record_batch(batch, &keys.mask(values, column)?)
}

/// A filter that decodes `column` first and the file's other columns only for the rows whose
/// value is wanted: one of the integer keys or texts (`None` when every row is wanted or the
/// file has no such column: every row is read).
fn row_filter(metadata: &ParquetMetaData, column: &str, wanted: Wanted<'_>) -> Option<RowFilter> {
    let schema = metadata.file_metadata().schema_descr_ptr();
    let index = schema.columns().iter().position(|c| c.name() == column)?;
    let name = column.to_owned();
    let projection = ProjectionMask::leaves(&schema, [index]);
    let predicate: Box<dyn ArrowPredicate> = match wanted {
        Wanted::Long(keys) => {
            let keys = KeySet::new(keys);
            Box::new(ArrowPredicateFn::new(
                projection,
                move |batch: RecordBatch| keys.mask(batch.column(0).as_ref(), &name),
            ))
        }
        Wanted::Text(texts) => {
            let texts = texts.clone();
            Box::new(ArrowPredicateFn::new(
                projection,
                move |batch: RecordBatch| text_mask(batch.column(0).as_ref(), &name, &texts),
            ))
        }
        Wanted::All | Wanted::TextFrom(_) => return None,
    };
    Some(RowFilter::new(vec![predicate]))
}

/// Whether each value of a text column is one of `texts` (a null is not).
fn text_mask(
    column: &dyn Array,
    name: &str,
    texts: &BTreeSet<String>,
) -> std::result::Result<BooleanArray, ArrowError> {
    let values = column
        .as_any()
        .downcast_ref::<deltalake::arrow::array::StringArray>()
        .ok_or_else(|| ArrowError::SchemaError(format!("no text column {name}")))?;
    Ok(values
        .iter()
        .map(|v| Some(v.is_some_and(|v| texts.contains(v))))
        .collect())
}

/// Row groups whose `column` statistics admit at least one of the wanted keys (all row groups
/// when the column or its statistics are missing).
fn matching_row_groups(
    metadata: &deltalake::parquet::file::metadata::ParquetMetaData,
    column: &str,
    wanted: Wanted<'_>,
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
            match wanted {
                Wanted::All => true,
                Wanted::Text(keys) => {
                    let (Ok(min), Ok(max)) = (std::str::from_utf8(min), std::str::from_utf8(max))
                    else {
                        return true;
                    };
                    keys.range(min.to_owned()..)
                        .next()
                        .is_some_and(|k| k.as_str() <= max)
                }
                Wanted::TextFrom(from) => !std::str::from_utf8(max).is_ok_and(|max| max < from),
                Wanted::Long(keys) => {
                    let long = |b: &[u8]| Some(i64::from_le_bytes(b.try_into().ok()?));
                    let (Some(min), Some(max)) = (long(min), long(max)) else {
                        return true;
                    };
                    keys.range(min..=max).next().is_some()
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, StringArray};
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::file::properties::WriterProperties;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// A customer's rows in a table sorted by customer are read from one row group of each
    /// hour file, whatever order the rows were written in.
    #[test]
    fn a_customer_is_read_from_one_row_group_of_each_hour() -> Result<()> {
        use crate::storage::Location;
        use crate::table::schema::Values;
        use crate::table::{CUMULATIVE_USAGE, Role, block_on, col};

        let temp_dir = crate::testing::TempDir::new("customer-groups");
        let dir = Location::Local(temp_dir.path().to_path_buf());
        let mut table = block_on(Table::open_or_create(&dir, &CUMULATIVE_USAGE))??;
        let first = crate::hours::parse_hour("2026-03-01T00").ok_or(Error::Hour { hour: 0 })?;
        let hours: BTreeSet<i64> = (first..first + 3).collect();
        // 10,000 customers (3 row groups an hour) in a scrambled order: 7,919 is prime to
        // 10,000, so `i * 7919 % 10000` visits every id once.
        let n = 10_000;
        let ids: Vec<String> = (0..n).map(|i| format!("C{:06}", i * 7919 % n)).collect();
        let written = table.write_frames(|emit| {
            for &hour in &hours {
                let frame = CUMULATIVE_USAGE.frame(vec![
                    Values::Str(ids.iter().map(|c| c.as_str().into()).collect()),
                    Values::Long(vec![hour; n]),
                    Values::Str(vec!["2026-03".into(); n]),
                    Values::Long(vec![1; n]),
                    Values::Long(vec![1; n]),
                    Values::Bool(vec![false; n]),
                ])?;
                emit(frame, Role::Main)?;
            }
            Ok(())
        })?;
        block_on(table.commit_written(0, written, &hours, &BTreeSet::new()))??;
        let wanted = BTreeSet::from(["C004242".to_owned()]);
        let rows = block_on(table.read_hours_of(&hours, col::CUSTOMER_ID, &wanted))??;
        // The row groups read may hold other customers; the one customer is in each hour.
        let ids = rows
            .column(col::CUSTOMER_ID)
            .and_then(|c| c.str().cloned())
            .map_err(Error::polars("test"))?;
        assert_eq!(ids.iter().filter(|c| *c == Some("C004242")).count(), 3);
        assert_eq!(
            table.row_groups_read(),
            3,
            "one row group of each hour file"
        );
        Ok(())
    }

    #[test]
    fn key_sets_hold_exactly_their_keys() {
        for keys in [
            BTreeSet::from([3i64, 64, 65, 1000]),
            BTreeSet::from([-5i64, 0, 7]),
            // Too wide a range for a bitmap: hashed.
            BTreeSet::from([i64::MIN, 0, i64::MAX]),
            BTreeSet::new(),
        ] {
            let set = KeySet::new(&keys);
            let probes = keys
                .iter()
                .flat_map(|&k| [k.saturating_sub(1), k, k.saturating_add(1)])
                .chain([i64::MIN, -1, 0, 1, 2, 63, 66, 999, 1001, i64::MAX]);
            for probe in probes {
                assert_eq!(
                    set.contains(probe),
                    keys.contains(&probe),
                    "{probe} in {keys:?}"
                );
            }
        }
        assert!(matches!(
            KeySet::new(&BTreeSet::from([1, 2])),
            KeySet::Bits { .. }
        ));
        assert!(matches!(
            KeySet::new(&BTreeSet::from([0, KeySet::MAX_BITS])),
            KeySet::Hashed(_)
        ));
    }

    /// A read of the dedup state's readings for some meters returns exactly their rows, from
    /// the row groups that may hold them.
    #[test]
    fn readings_are_read_for_the_wanted_meters_only() -> Result<()> {
        use crate::storage::Location;
        use crate::table::schema::Values;
        use crate::table::{DEDUP_STATE, Role, block_on, col};

        let temp_dir = crate::testing::TempDir::new("state-keys");
        let dir = Location::Local(temp_dir.path().to_path_buf());
        let mut table = block_on(Table::open_or_create(&dir, &DEDUP_STATE))??;
        let hour = crate::hours::parse_hour("2026-03-01T00").ok_or(Error::Hour { hour: 0 })?;
        // 10,000 meters, 3 readings each (30,000 rows: 8 row groups of 4,096).
        let meters: Vec<i64> = (0..30_000).map(|i| i % 10_000).collect();
        let n = meters.len();
        let written = table.write_frames(|emit| {
            let frame = DEDUP_STATE.frame(vec![
                Values::Long(meters.clone()),
                Values::Long((0..n as i64).collect()),
                Values::Long(meters.iter().map(|m| m / 2).collect()),
                Values::Long(vec![7; n]),
                Values::Long(vec![hour; n]),
            ])?;
            emit(frame, Role::Main)
        })?;
        let hours = BTreeSet::from([hour]);
        block_on(table.commit_written(0, written, &hours, &BTreeSet::new()))??;
        let wanted = BTreeMap::from([(hour, BTreeSet::from([5i64, 4242, 9999]))]);
        let rows = block_on(table.read_hours_matching(col::METER, &wanted))??;
        let mut got: Vec<i64> = rows
            .column(col::METER)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("test"))?
            .into_no_null_iter()
            .collect();
        got.sort_unstable();
        assert_eq!(got, [5, 5, 5, 4242, 4242, 4242, 9999, 9999, 9999]);
        assert_eq!(
            table.row_groups_read(),
            3,
            "the groups of meters 5, 4242 and 9999"
        );
        Ok(())
    }

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
                matching_row_groups(metadata, "meter_id", Wanted::Text(&wanted)),
                groups,
                "{wanted:?}"
            );
        }
        assert_eq!(
            matching_row_groups(metadata, "no_such_column", Wanted::Text(&keys(&["M3"]))),
            vec![0, 1, 2]
        );
        // From a text on: the groups whose largest text is not before it.
        for (from, groups) in [("M4", vec![1, 2]), ("M5", vec![2]), ("M0", vec![0, 1, 2])] {
            assert_eq!(
                matching_row_groups(metadata, "meter_id", Wanted::TextFrom(from)),
                groups,
                "{from}"
            );
        }
        assert!(matching_row_groups(metadata, "meter_id", Wanted::TextFrom("M7")).is_empty());
        Ok(())
    }
}
