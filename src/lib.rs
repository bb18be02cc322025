//! The hourly water-usage billing pipeline behind `notebooks/hourly_billing.ipynb`.
//!
//! Turns the meters' usage log (JSON Lines, one folder per ingestion hour) into Delta tables
//! partitioned by recording hour: `hourly_usage` and `cumulative_usage` (the running total over
//! the billing month, whose last hour is the bill), with every unusable line in `quarantine` and
//! one row per run in `run_metrics`. See `docs/ARCHITECTURE.md` for the map of the code.
//!
//! The notebook drives one [`Run`] step by step (through the C ABI of `ffi` and the
//! dependency-free `aquabill-notebook` facade); in Rust it reads:
//!
//! ```no_run
//! # fn main() -> aquabill::Result<()> {
//! use aquabill::{Config, Params, Run};
//! let config = Config::new(&Params {
//!     input_root: "data/sample",
//!     output_root: "out/tables",
//!     ..Params::default()
//! })?;
//! let mut run = Run::start(&config)?;
//! run.parse()?;
//! run.dedup()?;
//! run.write_hourly()?;
//! run.write_cumulative()?;
//! println!("{}", run.finish()?);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

#[cfg(test)]
mod architecture;
mod clock;
mod config;
pub mod contract;
mod error;
mod faults;
mod ffi;
#[doc(hidden)]
pub mod fixture;
mod hashing;
mod hours;
mod input;
mod memory;
mod present;
mod provenance;
mod quarantine;
mod query;
mod rebuild;
mod run;
mod state;
mod storage;
mod table;
#[cfg(test)]
mod testing;
mod trace;
mod verify;
mod view;

pub use config::Config;
pub use contract::{PARAMETERS, Params};
pub use error::{Error, Result};
pub use ffi::{aquabill_call, aquabill_free};
pub use input::PlannedFile;
pub use present::Shown;
pub use rebuild::{RebuildReport, rebuild};
pub use run::{
    BacklogBatch, BacklogReport, BillsWritten, ClosedMonth, Counts, DedupReport, ParseReport,
    PlanReport, QueryPlans, Run, RunMetrics, TableReport, catch_up,
};
pub use table::Committed;
pub use verify::{Check, VerifyReport, verify};
pub use view::{
    BillsReport, CustomerMonth, MonthBills, MonthStatus, SQL_ROW_LIMIT, SqlResult, bills,
    customer_month, sql,
};

/// Polars, as this crate compiles it, for callers that work with the frames it returns.
pub use polars;

/// The digest of the sources this library was built from (`src/source_digest.rs`), kept in the
/// library's file between a marker and `;`: the notebook facade reads it from the file before it
/// loads a library, and loads only its own clone's.
#[used]
static SOURCE_DIGEST: &str = concat!(
    "aquabill-source-digest:",
    env!("AQUABILL_SOURCE_DIGEST"),
    ";"
);
