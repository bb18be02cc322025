//! `hourly_usage` rows, as Polars: what a batch's accepted readings add to each customer's hours,
//! and an hour partition's stored rows merged with those additions.
//!
//! All sums are over `Int64` milliliters: exact, and the same however the input was split.

use polars::prelude::*;

use super::merge::sum_by_customer;
use crate::table::{HOURLY_USAGE, Values, col};

/// What newly accepted readings add to each customer's hour: `usage_ml`, `reading_count` and
/// `meter_count`, the meters new to that customer and hour; by `customer_id` and `usage_hour`.
///
/// Meters and customers are keys. `accepted` holds the new readings (`customer`, `meter`,
/// `usage_hour`, `usage_ml`); `new_meters` the `(customer, usage_hour, meter)` of the batch
/// that no earlier run counted (a meter counts once per customer and hour); `names` gives each
/// customer key its `customer_id`.
pub fn hourly_additions(
    accepted: LazyFrame,
    new_meters: LazyFrame,
    names: LazyFrame,
) -> PolarsResult<LazyFrame> {
    let key = || [col(col::CUSTOMER), col(col::USAGE_HOUR)];
    let new_meters = new_meters
        .group_by(key())
        .agg([len().cast(DataType::Int64).alias(col::METER_COUNT)]);
    Ok(accepted
        .group_by(key())
        .agg([
            col(col::USAGE_ML).sum(),
            len().cast(DataType::Int64).alias(col::READING_COUNT),
        ])
        .join(new_meters, key(), key(), JoinArgs::new(JoinType::Left))
        .with_column(col(col::METER_COUNT).fill_null(lit(0i64)))
        .join(
            names,
            [col(col::CUSTOMER)],
            [col(col::CUSTOMER)],
            JoinArgs::new(JoinType::Left),
        )
        .select([
            col(col::CUSTOMER_ID),
            col(col::USAGE_HOUR),
            col(col::USAGE_ML),
            col(col::READING_COUNT),
            col(col::METER_COUNT),
        ]))
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
    fn additions_count_readings_and_new_meters() -> PolarsResult<()> {
        // Customer 1: meters 10 and 11 in hour 5, meter 10 counted by an earlier run already.
        let accepted = df!(
            "customer" => [1i64, 1, 1, 2],
            "meter" => [10i64, 10, 11, 20],
            "usage_hour" => [5i64, 5, 5, 5],
            "usage_ml" => [100i64, 50, 7, 1],
        )?;
        let new_meters = df!(
            "customer" => [1i64, 2],
            "usage_hour" => [5i64, 5],
            "meter" => [11i64, 20],
        )?;
        let names = df!("customer" => [1i64, 2], "customer_id" => ["C1", "C2"])?;
        let out = hourly_additions(accepted.lazy(), new_meters.lazy(), names.lazy())?
            .sort(["customer_id"], Default::default())
            .collect()?;
        let expected = df!(
            "customer_id" => ["C1", "C2"],
            "usage_hour" => [5i64, 5],
            "usage_ml" => [157i64, 1],
            "reading_count" => [3i64, 1],
            "meter_count" => [1i64, 1],
        )?;
        assert!(out.equals(&expected), "{out}");
        Ok(())
    }

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
