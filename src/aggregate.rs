//! Aggregation into the output tables' rows, as Polars lazy queries.
//!
//! All sums are over `Int64` milliliters: exact, and the same however the input was split.

use polars::prelude::*;

/// Usage per customer and recording hour, from deduplicated readings (`customer_id`,
/// `meter_id`, `usage_hour`, `usage_ml`): `usage_ml`, `reading_count`, `meter_count`.
pub fn hourly_usage(readings: LazyFrame) -> LazyFrame {
    readings
        .group_by([col("customer_id"), col("usage_hour")])
        .agg([
            col("usage_ml").sum(),
            len().cast(DataType::Int64).alias("reading_count"),
            col("meter_id")
                .n_unique()
                .cast(DataType::Int64)
                .alias("meter_count"),
        ])
        .sort(
            ["usage_hour", "customer_id"],
            SortMultipleOptions::default(),
        )
}

/// The hourly rows after adding newly accepted readings to the stored ones.
///
/// `stored` holds the table's rows of the affected hours, `accepted` the new readings
/// (`customer_id`, `meter_id`, `usage_hour`, `usage_ml`), `prior` the readings accepted earlier
/// from the same meters in the same hours (the dedup state's rows the batch read). Usage and
/// reading counts add up; a meter counts towards `meter_count` only if it had no earlier reading
/// for that customer and hour.
pub fn add_to_hourly(
    stored: LazyFrame,
    accepted: LazyFrame,
    prior: LazyFrame,
) -> PolarsResult<LazyFrame> {
    let slot = [col("customer_id"), col("usage_hour"), col("meter_id")];
    let seen = prior
        .select(slot.clone())
        .unique(None, UniqueKeepStrategy::Any);
    let new_meters = accepted
        .clone()
        .select(slot.clone())
        .unique(None, UniqueKeepStrategy::Any)
        .join(seen, slot.clone(), slot, JoinArgs::new(JoinType::Anti))
        .group_by([col("customer_id"), col("usage_hour")])
        .agg([len().cast(DataType::Int64).alias("meter_count")]);
    let key = [col("customer_id"), col("usage_hour")];
    let added = hourly_usage(accepted)
        .drop(by_name(["meter_count"], true, false))
        .join(new_meters, key.clone(), key, JoinArgs::new(JoinType::Left))
        .with_column(col("meter_count").fill_null(lit(0i64)));
    let columns = [
        col("customer_id"),
        col("usage_hour"),
        col("usage_ml"),
        col("reading_count"),
        col("meter_count"),
    ];
    Ok(concat(
        [stored.select(columns.clone()), added.select(columns)],
        UnionArgs::default(),
    )?
    .group_by([col("customer_id"), col("usage_hour")])
    .agg([
        col("usage_ml").sum(),
        col("reading_count").sum(),
        col("meter_count").sum(),
    ])
    .sort(
        ["usage_hour", "customer_id"],
        SortMultipleOptions::default(),
    ))
}

/// The dense running total of part of one billing month, continuing from stored totals.
///
/// `hourly` holds the hourly usage (`customer_id`, `usage_hour`, `usage_ml`) of `hours`, a run of
/// consecutive hours of the month; `base` holds each customer's total before the first of them
/// (`customer_id`, `base_ml`; empty when `hours` starts the month). Every customer in either gets
/// a row for every hour (usage 0 where none) with `cumulative_ml = base_ml + ` the usage so far,
/// that is `total(h) = total(h-1) + usage(h)`, and `is_final`, true for hours that end at or
/// before `watermark_hour`.
pub fn cumulative_usage(
    hourly: LazyFrame,
    base: LazyFrame,
    hours: &[i64],
    billing_month: &str,
    watermark_hour: Option<i64>,
) -> PolarsResult<LazyFrame> {
    let hours = DataFrame::new(hours.len(), vec![Column::new("usage_hour".into(), hours)])?;
    let customers = concat(
        [
            hourly.clone().select([col("customer_id")]),
            base.clone().select([col("customer_id")]),
        ],
        UnionArgs::default(),
    )?
    .unique(None, UniqueKeepStrategy::Any);
    // A cross join written as an equi-join on a constant keeps Polars' feature set small.
    let grid = customers.with_column(lit(1i32).alias("grid")).join(
        hours.lazy().with_column(lit(1i32).alias("grid")),
        [col("grid")],
        [col("grid")],
        JoinArgs::new(JoinType::Inner),
    );
    let is_final = match watermark_hour {
        Some(w) => (col("usage_hour") + lit(1i64)).lt_eq(lit(w)),
        None => lit(false),
    };
    let key = [col("customer_id"), col("usage_hour")];
    let running_total = col("usage_ml").cum_sum(false).over([col("customer_id")])?;
    Ok(grid
        .join(
            hourly.select([col("customer_id"), col("usage_hour"), col("usage_ml")]),
            key.clone(),
            key,
            JoinArgs::new(JoinType::Left),
        )
        .join(
            base.select([col("customer_id"), col("base_ml")]),
            [col("customer_id")],
            [col("customer_id")],
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([
            col("usage_ml").fill_null(lit(0i64)),
            col("base_ml").fill_null(lit(0i64)),
        ])
        .sort(
            ["customer_id", "usage_hour"],
            SortMultipleOptions::default(),
        )
        .with_columns([
            (col("base_ml") + running_total).alias("cumulative_ml"),
            lit(billing_month).alias("billing_month"),
            is_final.alias("is_final"),
        ])
        .select([
            col("customer_id"),
            col("usage_hour"),
            col("billing_month"),
            col("usage_ml"),
            col("cumulative_ml"),
            col("is_final"),
        ]))
}
