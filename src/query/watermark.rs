//! The watermark, as a Polars lazy query: a record is *late* when it was recorded more than 7
//! days before its ingestion hour (or before the tables' watermark), *future* when it is dated
//! after its ingestion hour's end plus the clock-skew tolerance.

use polars::prelude::*;

use super::{OUTCOME, outcome};
use crate::hours::{HOUR_MICROS, WATERMARK_HOURS};
use crate::input::INGEST_HOUR;
use crate::table::col;

/// Adds [`OUTCOME`]: `late`, `future` or `in_time`, from each record's own ingestion hour and the
/// watermark before the run (hour index).
pub fn check_watermark(
    records: LazyFrame,
    watermark_before: Option<i64>,
    skew_minutes: i64,
) -> LazyFrame {
    let own_limit = (col(INGEST_HOUR) - lit(WATERMARK_HOURS)) * lit(HOUR_MICROS);
    let earliest = match watermark_before {
        Some(w) => {
            let w = lit(w * HOUR_MICROS);
            when(own_limit.clone().gt(w.clone()))
                .then(own_limit)
                .otherwise(w)
        }
        None => own_limit,
    };
    let latest = (col(INGEST_HOUR) + lit(1i64)) * lit(HOUR_MICROS) + lit(skew_minutes * 60_000_000);
    records.with_column(
        when(col(col::RECORDED_AT).lt(earliest))
            .then(lit(outcome::LATE))
            .when(col(col::RECORDED_AT).gt(latest))
            .then(lit(outcome::FUTURE))
            .otherwise(lit(outcome::IN_TIME))
            .alias(OUTCOME),
    )
}
