//! Reading a table's hour partitions into Polars: whole partitions, chosen files, or only the row
//! groups whose statistics admit some wanted keys (the dedup state, sorted by meter).

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::error::ArrowError;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use polars::prelude::DataFrame;

use super::{Table, convert, delta_error};
use crate::error::{Error, Result};
use crate::storage::IN_FLIGHT;

/// The keys wanted from one hour partition, in a column of strings or of integers.
#[derive(Clone, Copy)]
pub(super) enum Wanted<'a> {
    /// Every row.
    All,
    Text(&'a BTreeSet<String>),
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

    /// [`Table::read_hours_matching`] for a column of strings.
    pub async fn read_hours_matching_text(
        &self,
        column: &str,
        keys: &BTreeMap<i64, BTreeSet<String>>,
    ) -> Result<DataFrame> {
        let keys: BTreeMap<i64, Wanted<'_>> =
            keys.iter().map(|(&h, k)| (h, Wanted::Text(k))).collect();
        self.read(&keys, column, None).await
    }

    /// Reads the hour partitions `hours` (every file of an unpartitioned table), skipping the
    /// row groups whose statistics of text `column` rule out `wanted`; the rows of the row
    /// groups read are not filtered.
    pub(super) async fn read_row_groups(
        &self,
        hours: &BTreeSet<i64>,
        column: &str,
        wanted: Wanted<'_>,
    ) -> Result<DataFrame> {
        let keys: BTreeMap<i64, Wanted<'_>> = hours.iter().map(|&h| (h, wanted)).collect();
        self.read_with(&keys, column, None, wanted).await
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
        // Many files are fetched at once (each a round trip on S3), each on the runtime, so
        // they arrive while the earlier ones are decoded here in the table's order.
        let fetches = futures::stream::iter(chosen.iter().map(|(file, _)| {
            let store = std::sync::Arc::clone(&store);
            let key = file.view.object_store_path();
            tokio::spawn(async move { store.get(&key).await?.bytes().await })
        }))
        .buffered(IN_FLIGHT);
        futures::pin_mut!(fetches);
        for (file, wanted) in chosen.iter().copied() {
            let bytes = match fetches.next().await {
                Some(Ok(fetched)) => fetched.map_err(|e| err(e.into()))?,
                Some(Err(joined)) => {
                    return Err(Error::Panicked {
                        what: format!("reading {} of {name}: {joined}", file.path),
                    });
                }
                None => {
                    return Err(Error::Panicked {
                        what: format!("reading {} of {name}: no fetch", file.path),
                    });
                }
            };
            // The columns' types come from the parquet schema alone, not from an Arrow schema
            // a writer embedded: another engine's file (an `UPDATE` or `OPTIMIZE` elsewhere)
            // may ask for string views or large strings, which hold the same values.
            let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
            let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
                .map_err(|e| err(e.into()))?;
            let builder = match wanted {
                Wanted::All => builder,
                wanted => {
                    let groups = matching_row_groups(builder.metadata(), column, wanted);
                    builder.with_row_groups(groups)
                }
            };
            let reader = builder.build().map_err(|e| err(e.into()))?;
            for batch in reader {
                let batch = batch.map_err(|e| err(e.into()))?;
                let batch = match wanted {
                    Wanted::Long(keys) => only_keys(&batch, column, keys)
                        .map_err(|e| Error::table_data(name, column, e.to_string()))?,
                    _ => batch,
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

/// The rows of `batch` whose integer `column` holds one of `keys`.
fn only_keys(
    batch: &RecordBatch,
    column: &str,
    keys: &BTreeSet<i64>,
) -> std::result::Result<RecordBatch, ArrowError> {
    let values = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| ArrowError::SchemaError(format!("no integer column {column}")))?;
    let mask: BooleanArray = values
        .iter()
        .map(|v| Some(v.is_some_and(|v| keys.contains(&v))))
        .collect();
    filter_record_batch(batch, &mask)
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
