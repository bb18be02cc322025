//! The pipeline's queries and decisions, Polars and plain functions: no I/O, unit-tested on
//! hand-worked frames.
//!
//! [`watermark`] and [`dedup`] decide which parsed records count, with what [`meters`] knows of
//! each meter; [`hourly`] and [`cumulative`] turn them into the two tables' rows (with
//! [`merge`], and [`month`] for the running totals); [`cumulative::plan_months`] decides which
//! hours of which billing months a run rewrites, and [`layout`] which files of an hour;
//! [`bills`] which months a run closes and their `monthly_bills` rows.

pub mod bills;
pub mod cumulative;
mod dedup;
pub mod hourly;
pub mod layout;
mod merge;
pub mod meters;
pub mod month;
mod watermark;

pub use dedup::{ReadingKey, classify_in_slices, slice_count};
pub use watermark::check_watermark;

/// Column holding each record's outcome.
pub const OUTCOME: &str = "outcome";

/// Outcomes, as stored in [`OUTCOME`].
pub mod outcome {
    /// Within the watermark (before dedup).
    pub const IN_TIME: &str = "in_time";
    /// Recorded too long before its ingestion hour or before the watermark.
    pub const LATE: &str = "late";
    /// Dated after its ingestion hour's end plus the clock-skew tolerance.
    pub const FUTURE: &str = "future";
    /// First copy of its reading: counted.
    pub const ACCEPTED: &str = "accepted";
    /// Later identical copy: dropped and counted.
    pub const DUPLICATE: &str = "duplicate";
    /// Later copy with another payload: quarantined.
    pub const CONFLICT: &str = "conflict";
}
