//! One run of the pipeline, step by step, as the notebook drives it: one file per step.
//!
//! [`Run::start`] plans the batch ([`plan`]), then [`Run::parse`], [`Run::dedup`],
//! [`Run::write_hourly`], [`Run::write_cumulative`] and [`Run::finish`] each do one step and
//! return what they did. A run moves through [`Stage`]s; a step called out of order is an error.
//! [`Run::run_steps`] is that order in code, for every caller that runs a batch whole (a
//! backlog's batches, a rebuild's replay, `examples/run_once`); the notebook calls the steps cell
//! by cell, and a test (`run::tests`) checks that its cells follow the same order.
//!
//! The order of the durable steps (stated here only; other documents refer to it), which makes
//! a crash at any point recoverable by simply running again (each Delta commit carries
//! `(aquabill, batch id)` and is skipped if the table already holds the batch):
//!
//! 1. the plan file (`batches/<id>.json`), created only if absent, before any table is touched
//!    and once every table was found to agree with the checkpoint ([`agree`]);
//! 2. `hourly_usage`, then `cumulative_usage`, then `monthly_bills` (only when the batch's
//!    watermark passes a billing month's end): data files, then one commit each;
//! 3. `meter_alerts`, then what the alerts know of each meter (`alert_meters`), and beside them
//!    `quarantine`; then `run_metrics`, and beside it the keys of ids new in the batch
//!    (`dedup_keys`: a rerun gives those ids the same keys). Tables written beside each other
//!    are independent of each other; on object storage their commits' round trips overlap;
//! 4. the rest of the dedup state, after every table, so a rerun classifies records exactly as
//!    the crashed attempt did: the meters' index (`dedup_meters`), then the readings
//!    (`dedup_readings`);
//! 5. the checkpoint, last of the batch's durable steps; then (every 24th batch) the vacuum;
//!    then the days the watermark passed copied to the day tables (`hourly_usage_days`,
//!    `cumulative_usage_days`, beside each other): derived, and checked against the hour files
//!    they copy when read, so a crash or a failure here leaves only days read by hour until a
//!    later run copies them (a failure is reported after the batch committed).

mod agree;
mod alerts;
mod backlog;
mod bills;
mod compaction;
mod cores;
mod cumulative;
mod dedup;
mod finish;
mod history;
mod hourly;
mod keys;
mod layout;
mod metrics;
mod parse;
mod plan;
mod report;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::DataFrame;

pub(crate) use agree::{checked_tables, checked_tables_pinned};
pub use backlog::{BacklogBatch, BacklogReport, catch_up};
pub use metrics::{Counts, RunMetrics};
pub use report::{
    BillsWritten, ClosedMonth, DedupReport, ParseReport, PlanReport, QueryPlans, TableReport,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hashing::FastSet;
use crate::input::{HeldBack, Parsed, PlannedFile};
use crate::quarantine::Quarantined;
use crate::query::meters::MeterIndex;
use crate::state::{Checkpoint, Plan, RunLock, Store};
use crate::table::{Spec, Table, block_on, pins};

/// State of a run between its steps.
pub struct Run {
    config: Config,
    lock: RunLock,
    store: Store,
    checkpoint: Checkpoint,
    batch: Batch,
    clock: Clock,
    ledger: Ledger,
    stage: Stage,
    /// Tables opened by earlier steps, kept open: opening one replays its Delta log.
    tables: BTreeMap<&'static str, Table>,
}

/// What the run takes: its plan and the watermark it moves to.
struct Batch {
    plan: Plan,
    /// The plan was written by a run that did not finish.
    resumed: bool,
    /// Paths that do not fit the log's layout, with the reason.
    ignored: Vec<(String, &'static str)>,
    /// Folders dated after the current hour, not taken.
    held_back: Vec<HeldBack>,
    watermark_after: Option<i64>,
    latest_ingest_after: Option<i64>,
    /// Files the run's listing found beyond this batch: its later batches.
    later: Vec<PlannedFile>,
}

impl Batch {
    /// The clock skew the batch accepts records with: its plan's (a replay decides as the
    /// batch did), or the run's for a plan written before plans recorded it.
    fn clock_skew_minutes(&self, config: &Config) -> i64 {
        self.plan
            .clock_skew_minutes
            .unwrap_or(config.clock_skew_minutes)
    }
}

/// When the run started and how long each step took.
struct Clock {
    started: Instant,
    started_at_us: i64,
    steps: Vec<(&'static str, u128)>,
}

/// The run's accounting: counts and the records kept out of the totals.
#[derive(Default)]
struct Ledger {
    counts: Counts,
    quarantined: Vec<Quarantined>,
    /// Version and data-file count of the output tables after the run.
    tables: Vec<(&'static str, i64, u64)>,
}

/// How far a run got.
enum Stage {
    /// The batch is planned.
    Planned,
    /// Its files are parsed: the valid records.
    Parsed(Parsed),
    /// Its records are classified: what counts.
    Classified(Box<Classified>),
}

/// The records that count, and what the dedup state knows after them.
struct Classified {
    /// Accepted records (the parsed columns, with meters and customers as keys).
    accepted: DataFrame,
    /// Rows of stored readings dedup read.
    prior_rows: usize,
    /// Recording hours that got new readings.
    affected_hours: BTreeSet<i64>,
    /// The batch's customers: `customer` (key) and `customer_id`.
    names: DataFrame,
    /// The `dedup_keys` rows of ids new in this batch.
    new_keys: DataFrame,
    /// `(customer, usage_hour, meter)` that count as meters new to a customer's hour.
    new_meters: DataFrame,
    /// What the dedup state knows of each meter after the run.
    meters: MeterIndex,
    /// Customers kept apart, whose rows the side files take: a meter gone quiet, or back in
    /// this batch from being quiet (the rest of its replay may come in the next run).
    quiet: FastSet<String>,
    /// What the batch adds to each customer's hour (`hourly_usage` additions), once computed.
    additions: Option<DataFrame>,
    /// The meters the batch holds records of (accepted or not), in key order: what the alerts
    /// hear.
    heard: Vec<alerts::Heard>,
    /// The `dedup_keys` rows stored before the batch (with `new_keys`, every id known).
    stored_keys: DataFrame,
    /// Every customer key known after the batch, with its `customer_id`.
    customer_ids: crate::hashing::FastMap<i64, String>,
}

impl Run {
    /// Runs the steps after the plan in their order, as the notebook's cells do one by one, and
    /// finishes the batch; returns what the cumulative step wrote and the batch's metrics.
    pub fn run_steps(mut self) -> Result<(TableReport, RunMetrics)> {
        self.parse()?;
        self.dedup()?;
        self.write_hourly()?;
        let cumulative = self.write_cumulative()?;
        let metrics = self.finish()?;
        Ok((cumulative, metrics))
    }

    fn step_done(&mut self, step: &'static str, since: Instant) {
        self.clock.steps.push((step, since.elapsed().as_millis()));
    }

    /// The table of `spec`, kept open by an earlier step or opened now; give it back with
    /// [`Run::keep`] (a table not given back is opened again next time).
    fn open(&mut self, spec: &'static Spec) -> Result<Table> {
        match self.tables.remove(spec.name) {
            Some(table) => Ok(table),
            None => block_on(Table::open_pinned(
                &spec.dir(&self.config),
                spec,
                &pins(&self.config),
            ))?,
        }
    }

    /// Opens the existing tables of `specs` that are not open yet, all at once (on object
    /// storage each opening is a few round trips), for the steps that follow. A table that does
    /// not exist yet is left to [`Run::open`], which creates it in the steps' order.
    fn open_at_once(&mut self, specs: &[&'static Spec]) -> Result<()> {
        let closed: Vec<&'static Spec> = specs
            .iter()
            .copied()
            .filter(|spec| !self.tables.contains_key(spec.name))
            .collect();
        let opened = agree::open_existing_at_once(&self.config, &closed, &pins(&self.config))?;
        for table in opened.into_iter().flatten() {
            self.keep(table);
        }
        Ok(())
    }

    /// Keeps `table` open for the run's later steps.
    fn keep(&mut self, table: Table) {
        self.tables.insert(table.name(), table);
    }

    fn classified(&self, step: &'static str) -> Result<&Classified> {
        match &self.stage {
            Stage::Classified(c) => Ok(c),
            _ => Err(Error::StepOrder {
                step,
                needs: "dedup",
            }),
        }
    }
}
