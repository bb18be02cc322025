//! The hourly water-usage billing pipeline behind `notebooks/hourly_billing.ipynb`.
//!
//! Turns the meters' usage log (JSON Lines, one folder per ingestion hour) into Delta tables
//! partitioned by recording hour: `hourly_usage` and `cumulative_usage` (the running total over
//! the billing month, whose last hour is the bill), with every unusable line in `quarantine` and
//! one row per run in `run_metrics`. See `docs/ARCHITECTURE.md` for the map of the code.
//!
//! The notebook drives one [`Run`] step by step (through [`ffi`] and the dependency-free
//! `aquabill-notebook` facade); in Rust it reads:
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

pub mod aggregate;
pub mod chart;
pub mod checkpoint;
pub mod config;
pub mod contract;
pub mod dedup;
pub mod delta;
pub mod discover;
mod error;
pub mod faults;
pub mod ffi;
pub mod hours;
pub mod html;
pub mod lock;
pub mod parse;
pub mod rebuild;
pub mod report;
pub mod run;
pub mod show;

pub use config::{Config, Params};
pub use error::{Error, Result};
pub use run::Run;

/// Polars, as this crate compiles it, for callers that work with the frames it returns.
pub use polars;
