//! The pipeline's queries and decisions, Polars and plain functions: no I/O, unit-tested on
//! hand-worked frames.
//!
//! [`watermark`] and [`dedup`] decide which parsed records count, with what [`meters`] knows of
//! each meter; [`hourly`] and [`cumulative`] turn them into the two tables' rows (with
//! [`merge`], and [`month`] for the running totals); [`cumulative::plan_months`] decides which
//! hours of which billing months a run rewrites, and [`layout`] which files of an hour;
//! [`bills`] which months a run closes and their `monthly_bills` rows.

pub mod alerts;
pub mod bills;
pub mod cumulative;
mod dedup;
pub mod hourly;
pub mod layout;
mod merge;
pub mod meters;
pub mod month;
mod watermark;

pub use dedup::{Outcome, ReadingKey, Readings, classify, slice_count};
pub use watermark::{Timing, timing};
