//! `hourly_usage` rows, as Polars: what a batch's accepted readings add to each customer's hours,
//! and an hour partition's stored rows merged with those additions.
//!
//! All sums are over `Int64` milliliters: exact, and the same however the input was split.

use polars::prelude::*;

use super::merge::sum_by_customer;
use crate::table::{HOURLY_USAGE, Values, col};

/// Usage per customer and recording hour, from deduplicated readings (`customer_id`,
/// `meter_id`, `usage_hour`, `usage_ml`): `usage_ml`, `reading_count`, `meter_count`.
pub fn hourly_usage(readings: LazyFrame) -> LazyFrame {
    readings
        .group_by([col(col::CUSTOMER_ID), col(col::USAGE_HOUR)])
        .agg([
            col(col::USAGE_ML).sum(),
            len().cast(DataType::Int64).alias(col::READING_COUNT),
            col(col::METER_ID)
                .n_unique()
                .cast(DataType::Int64)
                .alias(col::METER_COUNT),
        ])
        .sort(
            [col::USAGE_HOUR, col::CUSTOMER_ID],
            SortMultipleOptions::default(),
        )
}

/// What newly accepted readings add to each customer's hour: `usage_ml`, `reading_count` and
/// `meter_count`, the meters new to that customer and hour.
///
/// `accepted` holds the new readings (`customer_id`, `meter_id`, `usage_hour`, `usage_ml`),
/// `prior` the readings accepted earlier from the same meters in the same hours (the dedup
/// state's rows the batch read): a meter counts only if it had no earlier reading for that
/// customer and hour.
pub fn hourly_additions(accepted: LazyFrame, prior: LazyFrame) -> PolarsResult<LazyFrame> {
    let slot = [
        col(col::CUSTOMER_ID),
        col(col::USAGE_HOUR),
        col(col::METER_ID),
    ];
    let seen = prior
        .select(slot.clone())
        .unique(None, UniqueKeepStrategy::Any);
    let new_meters = accepted
        .clone()
        .select(slot.clone())
        .unique(None, UniqueKeepStrategy::Any)
        .join(seen, slot.clone(), slot, JoinArgs::new(JoinType::Anti))
        .group_by([col(col::CUSTOMER_ID), col(col::USAGE_HOUR)])
        .agg([len().cast(DataType::Int64).alias(col::METER_COUNT)]);
    let key = [col(col::CUSTOMER_ID), col(col::USAGE_HOUR)];
    Ok(hourly_usage(accepted)
        .drop(by_name([col::METER_COUNT], true, false))
        .join(new_meters, key.clone(), key, JoinArgs::new(JoinType::Left))
        .with_column(col(col::METER_COUNT).fill_null(lit(0i64))))
}

/// One hour partition's rows after adding `added` (from [`hourly_additions`]) to its `stored`
/// rows: usage, reading and meter counts add up per customer. Sorted by customer.
pub fn merge_hourly(stored: &DataFrame, added: &DataFrame, hour: i64) -> crate::Result<DataFrame> {
    let counts = [col::USAGE_ML, col::READING_COUNT, col::METER_COUNT];
    let (customers, [usage_ml, reading_count, meter_count]) =
        sum_by_customer([(stored, &counts), (added, &counts)])
            .map_err(crate::Error::polars("hourly"))?;
    let n = customers.len();
    HOURLY_USAGE.frame(vec![
        Values::Built(customers),
        Values::Long(vec![hour; n]),
        Values::Long(usage_ml),
        Values::Long(reading_count),
        Values::Long(meter_count),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_added_counts_add_up() -> PolarsResult<()> {
        let stored = df!(
            "customer_id" => ["A", "C"],
            "usage_ml" => [100i64, 5],
            "reading_count" => [2i64, 1],
            "meter_count" => [1i64, 1],
        )?;
        // Unsorted, as additions may come.
        let added = df!(
            "customer_id" => ["B", "A"],
            "usage_ml" => [7i64, 10],
            "reading_count" => [1i64, 1],
            "meter_count" => [1i64, 0],
        )?;
        let rows =
            merge_hourly(&stored, &added, 42).map_err(|e| polars_err!(ComputeError: "{e}"))?;
        let expected = df!(
            "customer_id" => ["A", "B", "C"],
            "usage_hour" => [42i64, 42, 42],
            "usage_ml" => [110i64, 7, 5],
            "reading_count" => [3i64, 1, 1],
            "meter_count" => [1i64, 1, 1],
        )?;
        assert!(rows.equals(&expected), "{rows}");
        Ok(())
    }
}
