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

/// What newly accepted readings add to each customer's hour: `usage_ml`, `reading_count` and
/// `meter_count`, the meters new to that customer and hour.
///
/// `accepted` holds the new readings (`customer_id`, `meter_id`, `usage_hour`, `usage_ml`),
/// `prior` the readings accepted earlier from the same meters in the same hours (the dedup
/// state's rows the batch read): a meter counts only if it had no earlier reading for that
/// customer and hour.
pub fn hourly_additions(accepted: LazyFrame, prior: LazyFrame) -> PolarsResult<LazyFrame> {
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
    Ok(hourly_usage(accepted)
        .drop(by_name(["meter_count"], true, false))
        .join(new_meters, key.clone(), key, JoinArgs::new(JoinType::Left))
        .with_column(col("meter_count").fill_null(lit(0i64))))
}

/// One hour partition's rows after adding `added` (from [`hourly_additions`]) to its `stored`
/// rows: usage, reading and meter counts add up per customer. Sorted by customer.
pub fn merge_hourly(stored: &DataFrame, added: &DataFrame, hour: i64) -> PolarsResult<DataFrame> {
    let counts = ["usage_ml", "reading_count", "meter_count"];
    let (customers, [usage_ml, reading_count, meter_count]) =
        sum_by_customer([(stored, &counts), (added, &counts)])?;
    let n = customers.len();
    DataFrame::new(
        n,
        vec![
            customers,
            Column::new("usage_hour".into(), vec![hour; n]),
            Column::new("usage_ml".into(), usage_ml),
            Column::new("reading_count".into(), reading_count),
            Column::new("meter_count".into(), meter_count),
        ],
    )
}

/// One hour of a billing month's dense running total.
///
/// `totals` holds each customer's total through the hour before (`customer_id`,
/// `cumulative_ml`; empty before the month's first hour), `usage` the hour's usage
/// (`customer_id`, `usage_ml`). Every customer in either gets a row: `usage_ml` (0 when none)
/// and `cumulative_ml = total(h-1) + usage(h)`, sorted by customer. The output's `customer_id`
/// and `cumulative_ml` are the next hour's `totals`.
pub fn next_cumulative_hour(
    totals: &DataFrame,
    usage: &DataFrame,
    hour: i64,
    billing_month: &str,
    is_final: bool,
) -> PolarsResult<DataFrame> {
    let (customers, [before, usage_ml]) =
        sum_by_customer([(totals, &["cumulative_ml", ""]), (usage, &["", "usage_ml"])])?;
    let cumulative_ml = before
        .iter()
        .zip(&usage_ml)
        .map(|(b, u)| b.checked_add(*u).ok_or_else(overflow))
        .collect::<PolarsResult<Vec<i64>>>()?;
    let n = customers.len();
    DataFrame::new(
        n,
        vec![
            customers,
            Column::new("usage_hour".into(), vec![hour; n]),
            Column::new("billing_month".into(), vec![billing_month; n]),
            Column::new("usage_ml".into(), usage_ml),
            Column::new("cumulative_ml".into(), cumulative_ml),
            Column::new("is_final".into(), vec![is_final; n]),
        ],
    )
}

fn overflow() -> PolarsError {
    polars_err!(ComputeError: "a sum overflows Int64 milliliters")
}

/// Per customer of either frame, in customer order, the sums of `N` `Int64` columns: each
/// frame names the column it contributes to each sum (`""`: none, it adds 0). Returns the
/// `customer_id` column and the sums.
///
/// The per-hour steps run this for every customer of every hour they rewrite. Both frames are
/// normally sorted by customer already (a stored partition, the previous hour's output), so it
/// is one merge pass, exact and overflow-checked, rather than a hash join and a sort.
fn sum_by_customer<const N: usize>(
    frames: [(&DataFrame, &[&str; N]); 2],
) -> PolarsResult<(Column, [Vec<i64>; N])> {
    let mut sorted = Vec::with_capacity(2);
    for (frame, columns) in frames {
        sorted.push((sorted_by_customer(frame)?, columns));
    }
    let mut ids: Vec<Vec<&str>> = Vec::with_capacity(2);
    let mut values: Vec<Vec<Option<Vec<i64>>>> = Vec::with_capacity(2);
    for (frame, columns) in &sorted {
        let customers = frame.column("customer_id")?.str()?;
        if customers.null_count() > 0 {
            polars_bail!(ComputeError: "a customer_id is null");
        }
        ids.push(customers.iter().flatten().collect());
        let mut side = Vec::with_capacity(N);
        for &c in columns.iter() {
            side.push(if c.is_empty() {
                None
            } else {
                Some(
                    frame
                        .column(c)?
                        .i64()?
                        .iter()
                        .map(|v| v.unwrap_or(0))
                        .collect::<Vec<i64>>(),
                )
            });
        }
        values.push(side);
    }
    let capacity = ids[0].len().max(ids[1].len());
    let mut customers: Vec<&str> = Vec::with_capacity(capacity);
    let mut sums: [Vec<i64>; N] = std::array::from_fn(|_| Vec::with_capacity(capacity));
    let mut next = [0usize; 2];
    loop {
        let customer = match (ids[0].get(next[0]), ids[1].get(next[1])) {
            (None, None) => break,
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) | (None, Some(x)) => *x,
        };
        let mut row = [0i64; N];
        for side in 0..2 {
            while ids[side].get(next[side]) == Some(&customer) {
                for (sum, column) in row.iter_mut().zip(&values[side]) {
                    if let Some(column) = column {
                        *sum = sum.checked_add(column[next[side]]).ok_or_else(overflow)?;
                    }
                }
                next[side] += 1;
            }
        }
        customers.push(customer);
        for (sum, out) in row.into_iter().zip(sums.iter_mut()) {
            out.push(sum);
        }
    }
    Ok((Column::new("customer_id".into(), customers), sums))
}

/// `rows` sorted by `customer_id` (borrowed when they already are).
fn sorted_by_customer(rows: &DataFrame) -> PolarsResult<std::borrow::Cow<'_, DataFrame>> {
    let customers = rows.column("customer_id")?.str()?;
    let mut previous: Option<&str> = None;
    for customer in customers.iter() {
        if customer < previous {
            return Ok(std::borrow::Cow::Owned(
                rows.sort(["customer_id"], SortMultipleOptions::default())?,
            ));
        }
        previous = customer;
    }
    Ok(std::borrow::Cow::Borrowed(rows))
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
        let rows = merge_hourly(&stored, &added, 42)?;
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

    #[test]
    fn an_hour_continues_every_total() -> PolarsResult<()> {
        let totals = df!("customer_id" => ["A", "B"], "cumulative_ml" => [100i64, 50])?;
        // Unsorted, and one customer in two rows (as two files of one partition would be).
        let usage = df!("customer_id" => ["C", "B", "B"], "usage_ml" => [3i64, 7, 1])?;
        let rows = next_cumulative_hour(&totals, &usage, 10, "2026-06", true)?;
        let expected = df!(
            "customer_id" => ["A", "B", "C"],
            "usage_hour" => [10i64, 10, 10],
            "billing_month" => ["2026-06", "2026-06", "2026-06"],
            "usage_ml" => [0i64, 8, 3],
            "cumulative_ml" => [100i64, 58, 3],
            "is_final" => [true, true, true],
        )?;
        assert!(rows.equals(&expected), "{rows}");
        let empty =
            next_cumulative_hour(&totals.head(Some(0)), &usage.head(Some(0)), 10, "", false)?;
        assert_eq!(empty.height(), 0);
        Ok(())
    }
}
