//! Converting rows between Polars (how the pipeline computes) and Arrow (how `deltalake` reads
//! and writes parquet), column by column as the table's schema types them. Every column but the
//! ones a later version added is non-nullable: a null there, or a value of another type, is an
//! error naming the table and column, never a default. An added column is null in the rows
//! written before it (a file may lack it). [`long_values`] reads an integer column of any frame the
//! same way: nulls refused by name.

use std::borrow::Cow;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, Decimal128Array, Int64Array,
    PrimitiveArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{
    Decimal128Type, Int64Type, Schema as ArrowSchema, TimestampMicrosecondType,
};
use polars::prelude::{
    Column, DataFrame, Int64Chunked, IntoColumn, NamedFrom, NewChunkedArray, Series, StringChunked,
};

use super::schema::{CUBIC_METERS_DECIMAL, Kind, Spec, long_column};
use crate::error::{Error, Result};
use crate::hashing::FastMap;
use crate::hours::{format_hour, parse_hour};

/// The values of an `Int64` column without nulls: borrowed when the column is one chunk.
pub fn long_values<'a>(
    frame: &'a DataFrame,
    name: &str,
    step: &'static str,
) -> Result<Cow<'a, [i64]>> {
    let values = frame
        .column(name)
        .and_then(|c| c.i64())
        .map_err(Error::polars(step))?;
    if values.null_count() > 0 {
        return Err(Error::table_data(step, name, "a null"));
    }
    Ok(match values.cont_slice() {
        Ok(slice) => Cow::Borrowed(slice),
        Err(_) => Cow::Owned(values.into_no_null_iter().collect()),
    })
}

/// Polars columns from a parquet batch of `spec`'s table; the partition column comes from the
/// file's partition value `hour`.
pub(super) fn to_frame(spec: &Spec, batch: &RecordBatch, hour: Option<i64>) -> Result<DataFrame> {
    let n = batch.num_rows();
    let mut columns: Vec<Column> = Vec::with_capacity(spec.columns.len());
    for &(name, kind) in spec.columns {
        let bad = |reason: String| Error::table_data(spec.name, name, reason);
        if Some(name) == spec.partition {
            let hour = hour.ok_or_else(|| bad("a file has no partition value".to_owned()))?;
            columns.push(long_column(name, vec![hour; n]));
            continue;
        }
        if spec.is_added(name) {
            columns.push(added_column(spec, name, kind, batch)?);
            continue;
        }
        let array = batch
            .column_by_name(name)
            .ok_or_else(|| bad("a data file lacks the column".to_owned()))?;
        if array.null_count() > 0 {
            return Err(bad(format!("{} nulls in a data file", array.null_count())));
        }
        let column: Column = match kind {
            Kind::Str => {
                let a = downcast::<StringArray>(array, spec, name)?;
                Series::new(name.into(), a.iter().flatten().collect::<Vec<_>>()).into_column()
            }
            Kind::Long => {
                let a = downcast::<Int64Array>(array, spec, name)?;
                Int64Chunked::from_slice(name.into(), a.values()).into_column()
            }
            Kind::Timestamp => {
                let a = downcast::<TimestampMicrosecondArray>(array, spec, name)?;
                Int64Chunked::from_slice(name.into(), a.values()).into_column()
            }
            Kind::Bool => {
                let a = downcast::<BooleanArray>(array, spec, name)?;
                Series::new(name.into(), a.iter().flatten().collect::<Vec<_>>()).into_column()
            }
            Kind::Binary => {
                let a = downcast::<BinaryArray>(array, spec, name)?;
                Series::new(name.into(), a.iter().flatten().collect::<Vec<&[u8]>>()).into_column()
            }
            Kind::CubicMeters => {
                let a = downcast::<Decimal128Array>(array, spec, name)?;
                let (_, scale) = CUBIC_METERS_DECIMAL;
                if a.scale() != scale as i8 {
                    return Err(bad(format!("has scale {} in a data file", a.scale())));
                }
                let ml = a
                    .values()
                    .iter()
                    .map(|&v| i64::try_from(v).map_err(|_| bad(format!("{v} ml is out of range"))))
                    .collect::<Result<Vec<i64>>>()?;
                long_column(name, ml)
            }
            Kind::Hour => {
                let a = downcast::<StringArray>(array, spec, name)?;
                let hours = a
                    .iter()
                    .flatten()
                    .map(|v| parse_hour(v).ok_or_else(|| bad(format!("`{v}` is not an hour"))))
                    .collect::<Result<Vec<i64>>>()?;
                long_column(name, hours)
            }
        };
        columns.push(column);
    }
    DataFrame::new(n, columns).map_err(Error::polars("reading a table"))
}

/// Column `name`, which a later version added, from `batch`: null where a row has no value,
/// all null in a file written before it. Added columns are text or integers.
fn added_column(spec: &Spec, name: &str, kind: Kind, batch: &RecordBatch) -> Result<Column> {
    let n = batch.num_rows();
    let column = match (batch.column_by_name(name), kind) {
        (None, Kind::Str) => Series::new(name.into(), vec![None::<&str>; n]),
        (None, Kind::Long) => Series::new(name.into(), vec![None::<i64>; n]),
        (Some(array), Kind::Str) => {
            let a = downcast::<StringArray>(array, spec, name)?;
            Series::new(name.into(), a.iter().collect::<Vec<_>>())
        }
        (Some(array), Kind::Long) => {
            let a = downcast::<Int64Array>(array, spec, name)?;
            Series::new(name.into(), a.iter().collect::<Vec<_>>())
        }
        (_, kind) => {
            return Err(Error::table_data(
                spec.name,
                name,
                format!("an added column of kind {kind:?} (only text and integers are)"),
            ));
        }
    };
    Ok(column.into_column())
}

/// Hours as their text. Formatting one costs about 100 ns, and a frame holds few distinct hours:
/// an hour partition's file one, mostly; a day file 24, a different one from row to row (rows by
/// customer, then hour). Each distinct hour is formatted once.
fn hour_texts(hours: impl Iterator<Item = Option<i64>>) -> StringArray {
    let (size, _) = hours.size_hint();
    let mut built = StringBuilder::with_capacity(size, size * 13);
    let mut texts: Vec<String> = Vec::new();
    let mut index: FastMap<i64, usize> = FastMap::default();
    let mut last: Option<(i64, usize)> = None;
    for hour in hours {
        let Some(h) = hour else {
            built.append_null();
            continue;
        };
        let at = match last {
            // The same hour as the row before: a partition's file, row after row.
            Some((l, at)) if l == h => at,
            _ => *index.entry(h).or_insert_with(|| {
                texts.push(format_hour(h));
                texts.len() - 1
            }),
        };
        last = Some((h, at));
        match texts.get(at) {
            Some(text) => built.append_value(text),
            None => built.append_value(format_hour(h)),
        }
    }
    built.finish()
}

/// An Arrow batch in the writer's schema from the Polars columns of `rows`.
pub(super) fn to_record_batch(
    spec: &Spec,
    rows: &DataFrame,
    schema: &ArrowSchema,
) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let bad = |reason: String| Error::table_data(spec.name, name, reason);
        let kind = spec
            .kind(name)
            .ok_or_else(|| bad("the table has a column its schema lacks".to_owned()))?;
        let column = rows
            .column(name)
            .map_err(|e| bad(format!("the rows lack the column: {e}")))?;
        let wrong_type = |e: polars::prelude::PolarsError| bad(e.to_string());
        let array: ArrayRef = match kind {
            Kind::Str => Arc::new(texts(column.str().map_err(wrong_type)?)),
            Kind::Hour => Arc::new(hour_texts(column.i64().map_err(wrong_type)?.iter())),
            Kind::Long => Arc::new(longs::<Int64Type>(column.i64().map_err(wrong_type)?, |v| v)),
            Kind::Timestamp => Arc::new(
                longs::<TimestampMicrosecondType>(column.i64().map_err(wrong_type)?, |v| v)
                    .with_timezone("UTC"),
            ),
            Kind::Bool => Arc::new(
                column
                    .bool()
                    .map_err(wrong_type)?
                    .iter()
                    .collect::<BooleanArray>(),
            ),
            Kind::Binary => Arc::new(
                column
                    .binary()
                    .map_err(wrong_type)?
                    .iter()
                    .collect::<BinaryArray>(),
            ),
            Kind::CubicMeters => {
                let (precision, scale) = CUBIC_METERS_DECIMAL;
                let ml = longs::<Decimal128Type>(column.i64().map_err(wrong_type)?, i128::from)
                    .with_precision_and_scale(precision, scale as i8)
                    .map_err(|e| bad(e.to_string()))?;
                Arc::new(ml)
            }
        };
        if array.null_count() > 0 && !spec.is_added(name) {
            return Err(bad(format!(
                "{} nulls among the rows to write",
                array.null_count()
            )));
        }
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(schema.clone()), arrays)
        .map_err(|e| Error::table_data(spec.name, "*", e.to_string()))
}

/// A text column as Arrow strings, its value buffer allocated once at its full size (collecting
/// grows it from a kilobyte, copying it a dozen times for a state file's meter ids).
fn texts(values: &StringChunked) -> StringArray {
    let bytes = values
        .downcast_iter()
        .map(|chunk| chunk.total_bytes_len())
        .sum();
    let mut built = StringBuilder::with_capacity(values.len(), bytes);
    for value in values.iter() {
        built.append_option(value);
    }
    built.finish()
}

/// A 64-bit integer column as an Arrow array of type `T`, each value as `native` gives it: one
/// pass over the values when they have no null and one chunk (the rows a step writes), with no
/// validity to build.
fn longs<T: ArrowPrimitiveType>(
    values: &Int64Chunked,
    native: impl Fn(i64) -> T::Native,
) -> PrimitiveArray<T> {
    match values.cont_slice() {
        Ok(slice) => PrimitiveArray::new(slice.iter().map(|&v| native(v)).collect(), None),
        Err(_) => values.iter().map(|v| v.map(&native)).collect(),
    }
}

fn downcast<'a, T: 'static>(array: &'a ArrayRef, spec: &Spec, column: &str) -> Result<&'a T> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::table_data(
            spec.name,
            column,
            format!("has type {} in a data file", array.data_type()),
        )
    })
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::datatypes::{DataType, Field};
    use polars::df;

    use super::*;
    use crate::table::schema::{ALERT_METERS, DEDUP_STATE, HOURLY_USAGE, Values};

    fn arrow_schema(spec: &Spec) -> ArrowSchema {
        ArrowSchema::new(
            spec.columns
                .iter()
                .filter(|c| Some(c.0) != spec.partition)
                .map(|&(name, kind)| {
                    let dtype = match kind {
                        Kind::Str | Kind::Hour => DataType::Utf8,
                        Kind::Long => DataType::Int64,
                        Kind::Bool => DataType::Boolean,
                        Kind::Timestamp => DataType::Int64,
                        Kind::CubicMeters => DataType::Decimal128(19, 6),
                        Kind::Binary => DataType::Binary,
                    };
                    Field::new(name, dtype, false)
                })
                .collect::<Vec<_>>(),
        )
    }

    /// Hours alternating row by row (a day file's rows, by customer and then hour) keep their
    /// own text each.
    #[test]
    fn hours_are_written_as_their_text_row_by_row() {
        let hours = [Some(0), Some(25), Some(0), None, Some(25), Some(492_312)];
        let texts = hour_texts(hours.into_iter());
        let got: Vec<Option<&str>> = texts.iter().collect();
        assert_eq!(
            got,
            [
                Some("1970-01-01T00"),
                Some("1970-01-02T01"),
                Some("1970-01-01T00"),
                None,
                Some("1970-01-02T01"),
                Some("2026-03-01T00"),
            ]
        );
    }

    /// `rows` written as `hourly_usage` rows and read back.
    fn hourly_round_trip(rows: &DataFrame) -> Result<DataFrame> {
        let batch = to_record_batch(&HOURLY_USAGE, rows, &arrow_schema(&HOURLY_USAGE))?;
        to_frame(&HOURLY_USAGE, &batch, Some(1))
    }

    /// The table and column that the refusal to write `rows` as `hourly_usage` rows names.
    fn hourly_refusal(rows: &DataFrame) -> (String, String) {
        match to_record_batch(&HOURLY_USAGE, rows, &arrow_schema(&HOURLY_USAGE)) {
            Err(Error::TableData { table, column, .. }) => (table, column),
            other => panic!("rows with a null must be refused, got {other:?}"),
        }
    }

    #[test]
    fn nulls_are_refused_by_name() -> Result<(), Box<dyn std::error::Error>> {
        let rows = df!(
            "customer_id" => [Some("C1"), None],
            "usage_hour" => [1i64, 1],
            "usage_ml" => [5i64, 6],
            "reading_count" => [1i64, 1],
            "meter_count" => [1i64, 1],
        )?;
        assert_eq!(
            hourly_refusal(&rows),
            ("hourly_usage".to_owned(), "customer_id".to_owned())
        );
        let good = rows.filter(
            &rows
                .column("customer_id")?
                .as_materialized_series()
                .is_not_null(),
        )?;
        let back = hourly_round_trip(&good)?;
        assert!(back.equals(&good), "{back}");
        Ok(())
    }

    /// Rows gathered from several reads (columns of several chunks) are converted value by
    /// value, and a null among numbers is refused by name as among texts.
    #[test]
    fn chunked_columns_convert_and_null_numbers_are_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        let rows = |customers: &[&str], ml: &[Option<i64>]| {
            let ones = vec![1i64; customers.len()];
            df!(
                "customer_id" => customers,
                "usage_hour" => &ones,
                "usage_ml" => ml,
                "reading_count" => &ones,
                "meter_count" => &ones,
            )
        };
        let mut chunked = rows(&["C1"], &[Some(5)])?;
        chunked.vstack_mut(&rows(&["C2", "C3"], &[Some(6), Some(7)])?)?;
        assert!(chunked.column("usage_ml")?.n_chunks() > 1);
        let back = hourly_round_trip(&chunked)?;
        assert!(back.equals(&chunked), "{back}");
        // One chunk that starts inside its buffers: the values from its offset on.
        let sliced = chunked.rechunk_mut().clone().slice(1, 2);
        let back = hourly_round_trip(&sliced)?;
        assert!(back.equals(&sliced), "{back}");
        assert_eq!(long_values(&back, "usage_ml", "test")?.as_ref(), [6, 7]);
        let null = rows(&["C1", "C2"], &[Some(5), None])?;
        assert_eq!(
            hourly_refusal(&null),
            ("hourly_usage".to_owned(), "usage_ml".to_owned())
        );
        Ok(())
    }

    #[test]
    fn a_file_without_its_partition_value_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let schema = arrow_schema(&DEDUP_STATE);
        let rows = df!(
            "meter" => [1i64],
            "recorded_at" => [7i64],
            "customer" => [2i64],
            "usage_ml" => [5i64],
            "usage_hour" => [3i64],
        )?;
        let batch = to_record_batch(&DEDUP_STATE, &rows, &schema)?;
        assert!(matches!(
            to_frame(&DEDUP_STATE, &batch, None),
            Err(Error::TableData { column, .. }) if column == "usage_hour"
        ));
        Ok(())
    }

    #[test]
    fn packed_values_read_back_as_written() -> Result<(), Box<dyn std::error::Error>> {
        let schema = arrow_schema(&ALERT_METERS);
        let rows = ALERT_METERS.frame(vec![
            Values::Long(vec![1, 2]),
            Values::Long(vec![7, 7]),
            Values::Bytes(vec![vec![1, 0, 255], Vec::new()]),
        ])?;
        let batch = to_record_batch(&ALERT_METERS, &rows, &schema)?;
        let back = to_frame(&ALERT_METERS, &batch, None)?;
        assert!(back.equals(&rows), "{back}");
        Ok(())
    }
}
