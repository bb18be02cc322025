//! Dedup, as a Polars lazy query: of the in-time records, the first copy of each
//! `(meter_id, recorded_at)` by ingestion order wins. Copies already accepted by earlier runs
//! (the dedup state) come first, then the batch in file and line order. A later copy with the
//! same payload is a *duplicate*, one with another payload a *conflict*.

use polars::prelude::*;

use super::{OUTCOME, outcome};
use crate::input::SEQ;
use crate::table::col;

/// Sets [`OUTCOME`] of in-time records to `accepted`, `duplicate` or `conflict`.
///
/// `prior` holds the readings earlier runs accepted for the recording hours the batch touches
/// (`meter_id`, `recorded_at`, `customer_id`, `usage_ml`). The output has the in-time records
/// with their outcome plus `first_customer_id` and `first_usage_ml`, the payload that won.
pub fn classify(in_time: LazyFrame, prior: LazyFrame) -> PolarsResult<LazyFrame> {
    let key = || [col(col::METER_ID), col(col::RECORDED_AT)];
    let prior = prior.select([
        col(col::METER_ID),
        col(col::RECORDED_AT),
        col(col::CUSTOMER_ID).alias("prior_customer_id"),
        col(col::USAGE_ML).alias("prior_usage_ml"),
    ]);
    let from_prior = col("prior_usage_ml").is_not_null();
    let first = |name: &str| -> PolarsResult<Expr> {
        Ok(col(name)
            .first()
            .over(key())?
            .alias(format!("first_{name}")))
    };
    Ok(in_time
        .sort([SEQ], SortMultipleOptions::default())
        // The batch's first copy of each reading...
        .with_columns([first(SEQ)?, first(col::CUSTOMER_ID)?, first(col::USAGE_ML)?])
        // ...unless an earlier run accepted one.
        .join(prior, key(), key(), JoinArgs::new(JoinType::Left))
        .with_columns([
            when(from_prior.clone())
                .then(lit(-1i64))
                .otherwise(col("first_seq"))
                .alias("first_seq"),
            when(from_prior.clone())
                .then(col("prior_customer_id"))
                .otherwise(col("first_customer_id"))
                .alias("first_customer_id"),
            when(from_prior)
                .then(col("prior_usage_ml"))
                .otherwise(col("first_usage_ml"))
                .alias("first_usage_ml"),
        ])
        .with_column(
            when(col(SEQ).eq(col("first_seq")))
                .then(lit(outcome::ACCEPTED))
                .when(
                    col(col::CUSTOMER_ID)
                        .eq(col("first_customer_id"))
                        .and(col(col::USAGE_ML).eq(col("first_usage_ml"))),
                )
                .then(lit(outcome::DUPLICATE))
                .otherwise(lit(outcome::CONFLICT))
                .alias(OUTCOME),
        )
        .drop(by_name(
            ["first_seq", "prior_customer_id", "prior_usage_ml"],
            true,
            false,
        ))
        .sort([SEQ], SortMultipleOptions::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_copy_wins_earlier_runs_first() -> PolarsResult<()> {
        let prior = df!(
            "meter_id" => ["M1"],
            "recorded_at" => [10i64],
            "customer_id" => ["C1"],
            "usage_ml" => [100i64],
        )?;
        // Out of order on purpose: `seq` is the ingestion order.
        let in_time = df!(
            "seq" => [3i64, 0, 5, 2, 4, 1],
            "meter_id" => ["M2", "M1", "M3", "M2", "M2", "M1"],
            "recorded_at" => [10i64, 10, 20, 10, 10, 10],
            "customer_id" => ["C2", "C1", "C3", "C2", "C2", "C1"],
            "usage_ml" => [5i64, 100, 1, 5, 6, 999],
        )?;
        let out = classify(in_time.lazy(), prior.lazy())?.collect()?;
        let seqs: Vec<i64> = out.column("seq")?.i64()?.into_no_null_iter().collect();
        let outcomes: Vec<&str> = out.column(OUTCOME)?.str()?.iter().flatten().collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
        assert_eq!(
            outcomes,
            [
                outcome::DUPLICATE, // M1 as an earlier run accepted it
                outcome::CONFLICT,  // M1 with another usage
                outcome::ACCEPTED,  // M2's first copy
                outcome::DUPLICATE, // M2 again
                outcome::CONFLICT,  // M2 with another usage
                outcome::ACCEPTED,  // M3
            ]
        );
        Ok(())
    }
}
