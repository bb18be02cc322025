//! One run of the pipeline, step by step, as the notebook drives it.
//!
//! [`Run::start`] plans the batch, then [`Run::parse`], [`Run::dedup`], [`Run::write_hourly`],
//! [`Run::write_cumulative`] and [`Run::finish`] each do one step and return what they did. The
//! order of the commits makes a crash at any point recoverable by simply running again: tables
//! first (each skipped if it already holds the batch), the dedup state after them, the
//! checkpoint last.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use crate::checkpoint::{Checkpoint, Plan, Store};
use crate::config::Config;
use crate::dedup::{self, OUTCOME, outcome};
use crate::delta::{self, Committed, Table};
use crate::discover;
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, billing_month, format_hour, month_start_hour};
use crate::lock::RunLock;
use crate::parse::{self, Quarantined, Reason};
use crate::report::{DedupReport, ParseReport, PlanReport, RunMetrics, TableReport};

/// Dedup-state and `cumulative_usage` files with fewer rows than this are small: what runs
/// reaching back into an hour append (a live hour at 2,000 meters has 24k readings).
const SMALL_FILE_ROWS: usize = 20_000;
/// An hour partition's small dedup-state files are compacted when a run would make them this many.
const STATE_SMALL_FILES: usize = 4;
/// The small files of a `cumulative_usage` hour that zero rows of customers new to the month
/// were appended to are rewritten as one once the hour would have this many.
const CUMULATIVE_FILES_PER_HOUR: usize = 4;
/// `quarantine` and `run_metrics` (one small file per run) are rewritten as one file once they
/// would have this many.
const APPEND_TABLE_FILES: usize = 48;
/// Every this many batches (about daily on an hourly schedule) a run vacuums the tables.
const VACUUM_EVERY_BATCHES: i64 = 24;

/// State of a run between its steps.
pub struct Run {
    config: Config,
    _lock: RunLock,
    store: Store,
    checkpoint: Checkpoint,
    plan: Plan,
    resumed: bool,
    ignored: Vec<(String, &'static str)>,
    started: Instant,
    started_at_us: i64,
    steps: Vec<(&'static str, u128)>,
    parsed: Option<parse::Parsed>,
    quarantined: Vec<Quarantined>,
    accepted: Option<DataFrame>,
    prior: Option<DataFrame>,
    counts: Counts,
    affected_hours: BTreeSet<i64>,
    watermark_after: Option<i64>,
    latest_ingest_after: Option<i64>,
    tables: Vec<(&'static str, i64, u64)>,
}

/// Record counts of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Lines read.
    pub lines_read: u64,
    /// Records counted in the totals.
    pub accepted: u64,
    /// Identical later copies, dropped.
    pub duplicates: u64,
    /// Later copies with another payload, quarantined.
    pub conflicts: u64,
    /// Quarantined as late (or in a file behind the watermark).
    pub late: u64,
    /// Quarantined as future-dated.
    pub future: u64,
    /// Quarantined as malformed.
    pub malformed: u64,
}

impl Counts {
    /// Lines kept out of the totals.
    pub fn quarantined(&self) -> u64 {
        self.conflicts + self.late + self.future + self.malformed
    }
}

/// Runs `f` to completion on a single-threaded runtime (the library's API is synchronous).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// A single-threaded async runtime, for a thread that runs many futures in turn.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", "", e))
}

impl Run {
    /// Plans the batch: resumes the planned batch of a run that did not finish, or takes the
    /// files no run committed yet (up to the batch cap).
    pub fn start(config: &Config) -> Result<Self> {
        let started = Instant::now();
        let lock = RunLock::acquire(&config.checkpoint_dir)?;
        if crate::rebuild::in_progress(&config.output_root) {
            return Err(Error::Protocol(
                "a rebuild of these tables was interrupted: run the notebook with rebuild = true \
                 to finish it before ordinary runs go on"
                    .to_owned(),
            ));
        }
        let store = Store::new(&config.checkpoint_dir);
        let checkpoint = store.load()?;
        let (plan, resumed, ignored) = match store.load_plan(checkpoint.next_batch)? {
            Some(plan) => (plan, true, Vec::new()),
            None => {
                let listing = discover::list_new_files(&config.input_root, &checkpoint)?;
                let mut files = listing.new_files;
                if let Some(cap) = config.batch_cap {
                    files.truncate(cap);
                }
                let plan = Plan {
                    batch_id: checkpoint.next_batch,
                    watermark_before: checkpoint.watermark_hour,
                    files,
                };
                if !plan.files.is_empty() {
                    store.save_plan(&plan)?;
                }
                (plan, false, listing.ignored)
            }
        };
        let latest_ingest_after = plan
            .files
            .iter()
            .map(|f| f.ingest_hour)
            .chain(checkpoint.latest_ingest_hour)
            .max();
        let watermark_after = latest_ingest_after
            .map(|h| h - WATERMARK_HOURS)
            .into_iter()
            .chain(checkpoint.watermark_hour)
            .max();
        let mut run = Self {
            config: config.clone(),
            _lock: lock,
            store,
            checkpoint,
            plan,
            resumed,
            ignored,
            started,
            started_at_us: chrono::Utc::now().timestamp_micros(),
            steps: Vec::new(),
            parsed: None,
            quarantined: Vec::new(),
            accepted: None,
            prior: None,
            counts: Counts::default(),
            affected_hours: BTreeSet::new(),
            watermark_after,
            latest_ingest_after,
            tables: Vec::new(),
        };
        run.step_done("plan", started);
        Ok(run)
    }

    /// What the run will process.
    pub fn plan_report(&self) -> PlanReport {
        PlanReport {
            batch_id: self.plan.batch_id,
            resumed: self.resumed,
            files: self
                .plan
                .files
                .iter()
                .map(|f| (f.rel_path.clone(), f.size))
                .collect(),
            ignored: self.ignored.clone(),
            watermark_before: self.plan.watermark_before.map(format_hour),
        }
    }

    fn step_done(&mut self, step: &'static str, since: Instant) {
        self.steps.push((step, since.elapsed().as_millis()));
    }

    /// Reads and parses the batch's files.
    pub fn parse(&mut self) -> Result<ParseReport> {
        let t = Instant::now();
        let parsed = parse::parse_files(&self.plan.files, self.plan.watermark_before)?;
        self.counts.lines_read = parsed.lines_read;
        for q in &parsed.quarantined {
            match q.reason {
                Reason::FileBehindWatermark => self.counts.late += 1,
                _ => self.counts.malformed += 1,
            }
        }
        self.quarantined.extend(parsed.quarantined.iter().cloned());
        let report = ParseReport::new(&parsed, self.plan.files.len());
        self.parsed = Some(parsed);
        self.step_done("parse", t);
        Ok(report)
    }

    /// Applies the watermark and removes duplicates against the dedup state. Takes the parsed
    /// records (their memory is released as they are classified): once per parse.
    pub fn dedup(&mut self) -> Result<DedupReport> {
        let t = Instant::now();
        let records = match self.parsed.take() {
            Some(p) => p.records,
            None => {
                return Err(Error::Protocol(
                    "dedup needs the parse step first (once per parse)".into(),
                ));
            }
        };
        let err = Error::polars;
        let checked = dedup::check_watermark(
            records.lazy(),
            self.plan.watermark_before,
            self.config.clock_skew_minutes,
        )
        .collect()
        .map_err(err("watermark"))?;
        let late = with_outcome(&checked, outcome::LATE).map_err(err("watermark"))?;
        let future = with_outcome(&checked, outcome::FUTURE).map_err(err("watermark"))?;
        let in_time = with_outcome(&checked, outcome::IN_TIME).map_err(err("watermark"))?;
        drop(checked);
        self.quarantine_records(&late, Reason::Late)?;
        self.quarantine_records(&future, Reason::Future)?;
        self.counts.late += late.height() as u64;
        self.counts.future += future.height() as u64;

        // Only the meters the batch has readings from, in the recording hours it touches.
        let pairs = in_time
            .clone()
            .lazy()
            .select([col("usage_hour"), col("meter_id")])
            .unique(None, UniqueKeepStrategy::Any)
            .collect()
            .map_err(err("dedup"))?;
        let hours = pairs.column("usage_hour").and_then(|c| c.i64().cloned());
        let meters = pairs.column("meter_id").and_then(|c| c.str().cloned());
        let (hours, meters) = (hours.map_err(err("dedup"))?, meters.map_err(err("dedup"))?);
        let mut touched: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for (hour, meter) in hours.into_no_null_iter().zip(meters.iter().flatten()) {
            touched.entry(hour).or_default().insert(meter.to_owned());
        }
        let state = self.open(&delta::DEDUP_STATE)?;
        let prior = block_on(state.read_hours_matching("meter_id", &touched))??;
        let query = dedup::classify(in_time.lazy(), prior.clone().lazy()).map_err(err("dedup"))?;
        let plan = query.explain(true).unwrap_or_default();
        let classified = query.collect().map_err(err("dedup"))?;
        let only = |o: &str| with_outcome(&classified, o).map_err(err("dedup"));
        let accepted = only(outcome::ACCEPTED)?;
        let conflicts = only(outcome::CONFLICT)?;
        self.counts.accepted = accepted.height() as u64;
        self.counts.duplicates = only(outcome::DUPLICATE)?.height() as u64;
        self.counts.conflicts = conflicts.height() as u64;
        self.quarantine_records(&conflicts, Reason::Conflict)?;
        let c = self.counts;
        if c.lines_read != c.accepted + c.duplicates + c.quarantined() {
            return Err(Error::Accounting(format!(
                "read {} lines but accepted {} + duplicates {} + quarantined {}",
                c.lines_read,
                c.accepted,
                c.duplicates,
                c.quarantined()
            )));
        }
        self.affected_hours = hour_set(&accepted, "usage_hour")?;
        self.accepted = Some(accepted);
        self.prior = Some(prior);
        self.step_done("dedup", t);
        Ok(DedupReport {
            counts: c,
            hours_touched: self.affected_hours.len(),
            prior_rows: self.prior.as_ref().map_or(0, DataFrame::height),
            plan,
        })
    }

    /// Quarantine rows for records that parsed but do not count.
    fn quarantine_records(&mut self, rows: &DataFrame, reason: Reason) -> Result<()> {
        let seq = rows
            .column("seq")
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("quarantine"))?;
        let recorded = rows
            .column("recorded_at")
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("quarantine"))?;
        for (seq, recorded) in seq.into_no_null_iter().zip(recorded.into_no_null_iter()) {
            let when = chrono::DateTime::from_timestamp_micros(recorded)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            self.quarantined.push(Quarantined {
                file: (seq >> 32) as usize,
                line: (seq & 0xFFFF_FFFF) as u64,
                reason,
                detail: format!("recorded_at {when}"),
                raw: String::new(),
            });
        }
        Ok(())
    }

    fn open(&self, spec: &'static delta::Spec) -> Result<Table> {
        block_on(Table::open_or_create(&self.config.table_dir(spec), spec))?
    }

    fn accepted(&self) -> Result<&DataFrame> {
        self.accepted
            .as_ref()
            .ok_or_else(|| Error::Protocol("this step needs the dedup step first".into()))
    }

    /// Adds the accepted readings to the stored rows of the recording hours they fall in and
    /// replaces those partitions of `hourly_usage`, hour by hour.
    pub fn write_hourly(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        let err = Error::polars("hourly");
        let batch = self.plan.batch_id;
        let mut table = self.open(&delta::HOURLY_USAGE)?;
        if block_on(table.has_batch(batch))?? {
            return Ok(TableReport::skipped("hourly_usage"));
        }
        let accepted = self.accepted()?.clone();
        let prior = self.prior.clone().unwrap_or_default();
        let query =
            crate::aggregate::hourly_additions(accepted.lazy(), prior.lazy()).map_err(err)?;
        let plan = query.explain(true).unwrap_or_default();
        let added = query.collect().map_err(err)?;
        let mut shown = Shown::default();
        let written = table.write_frames(|emit| {
            let mut added = delta::by_hour(&added, "usage_hour")?;
            let hours: Vec<i64> = added.keys().copied().collect();
            read_ahead(&table, &hours, |hour, stored| {
                let added = added.remove(&hour).unwrap_or_default();
                let rows = crate::aggregate::merge_hourly(&stored, &added, hour).map_err(err)?;
                emit(shown.note(rows))
            })
        })?;
        let committed = block_on(table.commit_written(
            batch,
            written,
            &self.affected_hours,
            &BTreeSet::new(),
        ))??;
        self.step_done("hourly_usage", t);
        Ok(shown
            .report("hourly_usage", committed, self.affected_hours.len())
            .with_plan(plan))
    }

    /// Updates `cumulative_usage` from the earliest changed hour of each billing month on (the
    /// first hour that got new usage, or the first hour new to the month), hour by hour: each
    /// hour's totals continue from the hour before, starting from the stored totals of the hour
    /// before the first. Customers new to the month also get zero rows from the month's first
    /// hour. Hours the watermark passed are rewritten as final.
    pub fn write_cumulative(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        let err = Error::polars("cumulative");
        let batch = self.plan.batch_id;
        let tz = self.config.billing_timezone;
        let hourly = self.open(&delta::HOURLY_USAGE)?;
        let hourly_partitions = block_on(hourly.partitions())??;
        let mut cumulative = self.open(&delta::CUMULATIVE_USAGE)?;
        if block_on(cumulative.has_batch(batch))?? {
            return Ok(TableReport::skipped("cumulative_usage"));
        }
        let existing = block_on(cumulative.partitions())??;
        // Earliest changed hour per month (keyed by the month's first hour).
        let mut changed: BTreeMap<i64, i64> = BTreeMap::new();
        for &hour in &self.affected_hours {
            let e = changed.entry(month_start_hour(hour, tz)).or_insert(hour);
            *e = (*e).min(hour);
        }
        let accepted = self.accepted()?;
        let mut months = Vec::new();
        for (&start, &first_changed) in &changed {
            let end = month_start_hour(start + 24 * 32, tz);
            let Some(&last) = hourly_partitions.range(start..end).next_back() else {
                continue;
            };
            // Hours the month had no rows for yet are new too.
            let next_new = existing
                .range(start..end)
                .next_back()
                .map_or(start, |h| h + 1);
            let from = first_changed.min(next_new).max(start);
            if from > last {
                continue;
            }
            let totals = if from > start {
                block_on(cumulative.read_hours(&BTreeSet::from([from - 1])))??
                    .select(["customer_id", "cumulative_ml"])
                    .map_err(err)?
            } else {
                no_rows("cumulative_ml")?
            };
            // Customers of the month: the stored hours hold every customer the month had
            // (dense); those not in the totals start at 0 and, when the recomputation starts
            // after the month's first hour, get zero rows from it.
            let mut customers = vec![
                accepted
                    .clone()
                    .lazy()
                    .filter(col("usage_hour").gt_eq(lit(start)))
                    .filter(col("usage_hour").lt(lit(end)))
                    .select([col("customer_id")]),
            ];
            if from == start
                && let Some(&stored) = existing.range(start..end).next_back()
            {
                let rows = block_on(cumulative.read_hours(&BTreeSet::from([stored])))??;
                customers.push(rows.lazy().select([col("customer_id")]));
            }
            let newcomers = concat(customers, UnionArgs::default())
                .map_err(err)?
                .unique(None, UniqueKeepStrategy::Any)
                .join(
                    totals.clone().lazy(),
                    [col("customer_id")],
                    [col("customer_id")],
                    JoinArgs::new(JoinType::Anti),
                )
                .with_column(lit(0i64).cast(DataType::Int64).alias("cumulative_ml"))
                .collect()
                .map_err(err)?;
            months.push(MonthUpdate {
                from,
                last,
                month: billing_month(start, tz),
                zero_hours: if newcomers.height() > 0 {
                    start..from
                } else {
                    start..start
                },
                totals: stack(totals, newcomers.clone())?,
                newcomers,
            });
        }
        let recomputed: BTreeSet<i64> = months.iter().flat_map(|m| m.from..=m.last).collect();
        let zeroed: BTreeSet<i64> = months.iter().flat_map(|m| m.zero_hours.clone()).collect();
        // Hours rewritten whole: those the watermark passed in this run (same totals, now final).
        let mut rewritten: BTreeSet<i64> = match (self.plan.watermark_before, self.watermark_after)
        {
            (Some(before), Some(after)) => existing.range(before..after).copied().collect(),
            _ => BTreeSet::new(),
        };
        rewritten.retain(|h| !recomputed.contains(h));
        // Hours getting zero rows that already have a few small files: those are rewritten as
        // one with the new rows (the hour's large file stays).
        let mut crowded = block_on(cumulative.small_files(
            &zeroed,
            SMALL_FILE_ROWS,
            CUMULATIVE_FILES_PER_HOUR - 1,
        ))??;
        crowded.retain(|h, _| !rewritten.contains(h) && !recomputed.contains(h));
        let compacted: BTreeSet<String> = crowded.values().flatten().cloned().collect();
        let wm = self.watermark_after;
        let is_final = |hour: i64| wm.is_some_and(|w| hour < w);
        let stored_rows = |hour: i64| -> Result<DataFrame> {
            let hours = BTreeSet::from([hour]);
            let rows = match crowded.get(&hour) {
                Some(paths) => block_on(cumulative.read_files(&hours, paths))??,
                None => block_on(cumulative.read_hours(&hours))??,
            };
            rows.lazy()
                .with_column(lit(is_final(hour)).alias("is_final"))
                .collect()
                .map_err(err)
        };
        let mut shown = Shown::default();
        let written = cumulative.write_frames(|emit| {
            let mut done = BTreeSet::new();
            for m in months {
                for hour in m.zero_hours.clone() {
                    let mut rows =
                        m.hour(&m.newcomers, &no_rows("usage_ml")?, hour, is_final(hour))?;
                    let stored = rewritten.contains(&hour) || crowded.contains_key(&hour);
                    if stored && done.insert(hour) {
                        rows = stack(stored_rows(hour)?, rows)?;
                    }
                    emit(shown.note(rows))?;
                }
                let mut totals = m.totals.clone();
                let hours: Vec<i64> = (m.from..=m.last).collect();
                read_ahead(&hourly, &hours, |hour, usage| {
                    let rows = m.hour(&totals, &usage, hour, is_final(hour))?;
                    totals = rows.select(["customer_id", "cumulative_ml"]).map_err(err)?;
                    emit(shown.note(rows))
                })?;
            }
            for &hour in rewritten.difference(&done) {
                emit(shown.note(stored_rows(hour)?))?;
            }
            Ok(())
        })?;
        let replace: BTreeSet<i64> = recomputed.union(&rewritten).copied().collect();
        let committed = block_on(cumulative.commit_written(batch, written, &replace, &compacted))??;
        self.step_done("cumulative_usage", t);
        Ok(shown.report("cumulative_usage", committed, replace.len()))
    }

    /// Writes the quarantine and the run's metrics, updates the dedup state and advances the
    /// checkpoint.
    pub fn finish(mut self) -> Result<RunMetrics> {
        let t = Instant::now();
        if self.plan.files.is_empty() {
            return Ok(self.metrics());
        }
        fill_raw_lines(&mut self.quarantined, &self.plan)?;
        let batch = self.plan.batch_id;
        let quarantine = quarantine_frame(batch, &self.quarantined, &self.plan)?;
        let mut table = self.open(&delta::QUARANTINE)?;
        append_compacting(&mut table, batch, &quarantine)?;

        let mut state = self.open(&delta::DEDUP_STATE)?;
        let wm = self.watermark_after.unwrap_or(i64::MIN);
        let keep = self
            .accepted()?
            .clone()
            .lazy()
            .filter(col("usage_hour").gt_eq(lit(wm)))
            .sort(
                ["usage_hour", "meter_id", "recorded_at"],
                SortMultipleOptions::default(),
            )
            .select([
                col("meter_id"),
                col("recorded_at"),
                col("customer_id"),
                col("usage_ml"),
                col("usage_hour"),
            ])
            .collect()
            .map_err(Error::polars("dedup state"))?;
        let pruned: BTreeSet<i64> = block_on(state.partitions())??
            .into_iter()
            .filter(|&h| h < wm)
            .collect();
        // Each run that reaches back into an hour adds a small file to it; once an hour has a few,
        // they are rewritten into one (sorted by meter) with this run's rows, so reads by meter
        // stay selective and the file count stays bounded.
        let appended = hour_set(&keep, "usage_hour")?;
        let crowded =
            block_on(state.small_files(&appended, SMALL_FILE_ROWS, STATE_SMALL_FILES - 1))??;
        let compacted: BTreeSet<i64> = crowded.keys().copied().collect();
        let small: BTreeSet<String> = crowded.into_values().flatten().collect();
        let keep = if small.is_empty() {
            keep
        } else {
            let old = block_on(state.read_files(&compacted, &small))??;
            concat([keep.lazy(), old.lazy()], UnionArgs::default())
                .and_then(|lf| {
                    lf.sort(
                        ["usage_hour", "meter_id", "recorded_at"],
                        SortMultipleOptions::default(),
                    )
                    .collect()
                })
                .map_err(Error::polars("dedup state"))?
        };
        for spec in [&delta::HOURLY_USAGE, &delta::CUMULATIVE_USAGE] {
            let (version, files) = block_on(self.open(spec)?.version_and_files())??;
            self.tables.push((spec.name, version, files as u64));
        }
        self.step_done("finish", t);
        let metrics = self.metrics();
        let mut table = self.open(&delta::RUN_METRICS)?;
        append_compacting(&mut table, batch, &metrics.frame()?)?;
        block_on(state.commit_removing(batch, Some(&keep), &pruned, &small))??;

        let mut checkpoint = self.checkpoint.clone();
        for f in &self.plan.files {
            checkpoint.files.insert(f.rel_path.clone(), f.size);
        }
        checkpoint.next_batch = batch + 1;
        checkpoint.watermark_hour = self.watermark_after;
        checkpoint.latest_ingest_hour = self.latest_ingest_after;
        self.store.commit(&checkpoint)?;
        if batch % VACUUM_EVERY_BATCHES == VACUUM_EVERY_BATCHES - 1 {
            self.vacuum()?;
        }
        Ok(self.metrics())
    }

    /// Deletes the files no table version of the last 7 days (the watermark's reach) refers to.
    fn vacuum(&self) -> Result<usize> {
        let mut deleted = 0;
        for spec in delta::ALL {
            let mut table = self.open(spec)?;
            deleted += block_on(table.vacuum(WATERMARK_HOURS))??;
        }
        Ok(deleted)
    }

    fn metrics(&self) -> RunMetrics {
        RunMetrics {
            batch_id: self.plan.batch_id,
            started_at_us: self.started_at_us,
            files: self.plan.files.len() as u64,
            counts: self.counts,
            hours_touched: self.affected_hours.len() as u64,
            state_rows_read: self.prior.as_ref().map_or(0, |p| p.height() as u64),
            watermark_hour: self.watermark_after.map(format_hour).unwrap_or_default(),
            duration_ms: self.started.elapsed().as_millis() as i64,
            steps: self.steps.clone(),
            tables: self.tables.clone(),
        }
    }
}

/// How one billing month's running totals change in a run.
struct MonthUpdate {
    /// First hour recomputed.
    from: i64,
    /// Last hour with hourly data.
    last: i64,
    /// The month's name in the billing time zone.
    month: String,
    /// Hours before `from` that get zero rows for `newcomers` (empty when there are none).
    zero_hours: std::ops::Range<i64>,
    /// Totals through `from - 1` (`customer_id`, `cumulative_ml`), newcomers at 0.
    totals: DataFrame,
    /// Customers new to the month, with `cumulative_ml` 0.
    newcomers: DataFrame,
}

impl MonthUpdate {
    /// The month's rows of `hour`, continuing from `totals` with the hour's `usage`.
    fn hour(
        &self,
        totals: &DataFrame,
        usage: &DataFrame,
        hour: i64,
        is_final: bool,
    ) -> Result<DataFrame> {
        crate::aggregate::next_cumulative_hour(totals, usage, hour, &self.month, is_final)
            .map_err(Error::polars("cumulative"))
    }
}

/// Hands the rows of each hour partition in `hours` of `table`, in order, to `each`, while a
/// helper thread reads the next few: reading overlaps the work on the hour before.
fn read_ahead(
    table: &Table,
    hours: &[i64],
    mut each: impl FnMut(i64, DataFrame) -> Result<()>,
) -> Result<()> {
    const AHEAD: usize = 2;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<(i64, DataFrame)>>(AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(e) => {
                    // The receiver reports it; if it is gone, nobody is waiting.
                    let _ = sender.send(Err(e));
                    return;
                }
            };
            for &hour in hours {
                let rows = runtime.block_on(table.read_hours(&BTreeSet::from([hour])));
                let failed = rows.is_err();
                if sender.send(rows.map(|rows| (hour, rows))).is_err() || failed {
                    break;
                }
            }
        });
        // Dropping the receiver early (on an error) stops the reader at its next send.
        for read in receiver {
            let (hour, rows) = read?;
            each(hour, rows)?;
        }
        Ok(())
    })
}

/// The rows of `a` followed by those of `b` (same columns).
fn stack(a: DataFrame, b: DataFrame) -> Result<DataFrame> {
    concat([a.lazy(), b.lazy()], UnionArgs::default())
        .and_then(LazyFrame::collect)
        .map_err(Error::polars("stacking rows"))
}

/// No rows of `customer_id` and the `Int64` column `value`: no running totals
/// (`cumulative_ml`), no usage (`usage_ml`).
fn no_rows(value: &str) -> Result<DataFrame> {
    DataFrame::new(
        0,
        vec![
            Column::new("customer_id".into(), Vec::<String>::new()),
            Column::new(value.into(), Vec::<i64>::new()),
        ],
    )
    .map_err(Error::polars("cumulative"))
}

/// Rows written by a streamed table step, and the first few to show.
#[derive(Default)]
struct Shown {
    rows: usize,
    head: Option<DataFrame>,
}

impl Shown {
    /// Counts `rows` on their way to the writer.
    fn note(&mut self, rows: DataFrame) -> DataFrame {
        self.rows += rows.height();
        if self.head.is_none() && rows.height() > 0 {
            self.head = Some(rows.head(Some(5)));
        }
        rows
    }

    fn report(self, table: &'static str, committed: Committed, partitions: usize) -> TableReport {
        TableReport::streamed(table, committed, self.rows, self.head, partitions)
    }
}

fn with_outcome(df: &DataFrame, outcome: &str) -> PolarsResult<DataFrame> {
    df.clone()
        .lazy()
        .filter(col(OUTCOME).eq(lit(outcome)))
        .collect()
}

fn hour_set(df: &DataFrame, column: &str) -> Result<BTreeSet<i64>> {
    let c = df
        .column(column)
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("hours"))?;
    Ok(c.into_no_null_iter().collect())
}

/// Fills in the raw text of quarantined records that parsed (late, future, conflicts).
fn fill_raw_lines(quarantined: &mut [Quarantined], plan: &Plan) -> Result<()> {
    let mut by_file: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, q) in quarantined.iter().enumerate() {
        if q.raw.is_empty() {
            by_file.entry(q.file).or_default().push(i);
        }
    }
    for (file, indexes) in by_file {
        let path = &plan.files[file].path;
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        for i in indexes {
            let q = &mut quarantined[i];
            let line = lines.get(q.line as usize - 1).copied().unwrap_or_default();
            q.raw = String::from_utf8_lossy(line).into_owned();
        }
    }
    Ok(())
}

/// Appends `rows` to an unpartitioned table as batch `batch`; once the table has many files,
/// the same commit rewrites them and the new rows as one file.
fn append_compacting(table: &mut Table, batch: i64, rows: &DataFrame) -> Result<()> {
    let old = block_on(table.appended_files(APPEND_TABLE_FILES - 1))??;
    let rows = if old.is_empty() {
        rows.clone()
    } else {
        let mut all = block_on(table.read_files(&BTreeSet::new(), &old))??;
        all.vstack_mut(rows).map_err(Error::polars("compaction"))?;
        all
    };
    block_on(table.commit_removing(batch, Some(&rows), &BTreeSet::new(), &old))??;
    Ok(())
}

/// Longest raw line kept in full in `quarantine` (the log keeps the whole line; file and line
/// number point at it).
const RAW_LINE_KEPT: usize = 64 * 1024;

/// `raw`, or its first [`RAW_LINE_KEPT`] bytes (at a character boundary) and how long it was.
fn clip(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.len() <= RAW_LINE_KEPT {
        return raw.into();
    }
    let mut end = RAW_LINE_KEPT;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} bytes in all]", &raw[..end], raw.len()).into()
}

fn quarantine_frame(batch: i64, rows: &[Quarantined], plan: &Plan) -> Result<DataFrame> {
    let n = rows.len();
    let columns = vec![
        Column::new("batch_id".into(), vec![batch; n]),
        Column::new(
            "source_file".into(),
            rows.iter()
                .map(|q| plan.files[q.file].rel_path.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "line_number".into(),
            rows.iter().map(|q| q.line as i64).collect::<Vec<_>>(),
        ),
        Column::new(
            "reason".into(),
            rows.iter().map(|q| q.reason.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "detail".into(),
            rows.iter().map(|q| q.detail.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "raw_line".into(),
            rows.iter().map(|q| clip(&q.raw)).collect::<Vec<_>>(),
        ),
    ];
    DataFrame::new(n, columns).map_err(Error::polars("quarantine"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Params;
    use crate::hours::parse_hour;

    fn line(meter: &str, customer: &str, recorded: &str, liters: &str) -> String {
        format!(
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"2026-03-01T{recorded}:00Z","usage_liters":{liters},"ingested_at":"2026-03-01T07:00:00Z"}}"#
        )
    }

    fn add_file(root: &Path, folder: &str, name: &str, lines: &[String]) -> Result<()> {
        let dir = root.join(format!("ingest_hour={folder}"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(name), lines.join("\n") + "\n"))
            .map_err(|e| Error::io("writing", &dir, e))
    }

    type Rows = BTreeMap<(String, String), Vec<i64>>;

    /// `hourly_usage` as `(customer, hour) -> [usage_ml, reading_count, meter_count]`.
    fn hourly_rows(config: &Config) -> Result<Rows> {
        table(
            config,
            &delta::HOURLY_USAGE,
            &["usage_ml", "reading_count", "meter_count"],
        )
    }

    /// `cumulative_usage` as `(customer, hour) -> [usage_ml, cumulative_ml]`.
    fn cumulative_rows(config: &Config) -> Result<Rows> {
        table(
            config,
            &delta::CUMULATIVE_USAGE,
            &["usage_ml", "cumulative_ml"],
        )
    }

    fn run_once(config: &Config) -> Result<RunMetrics> {
        let mut run = Run::start(config)?;
        run.parse()?;
        run.dedup()?;
        run.write_hourly()?;
        run.write_cumulative()?;
        run.finish()
    }

    /// `(customer, hour) -> [columns...]` of a table, for comparisons.
    fn table(
        config: &Config,
        spec: &'static delta::Spec,
        values: &[&str],
    ) -> Result<BTreeMap<(String, String), Vec<i64>>> {
        let t = block_on(Table::open_or_create(&config.table_path(spec.name), spec))??;
        let hours = block_on(t.partitions())??;
        let df = block_on(t.read_hours(&hours))??;
        let customers = df
            .column("customer_id")
            .and_then(|c| c.str().cloned())
            .map_err(Error::polars("test"))?;
        let hour_col = df
            .column("usage_hour")
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("test"))?;
        let mut out = BTreeMap::new();
        for i in 0..df.height() {
            let mut row = Vec::new();
            for v in values {
                let c = df.column(v).map_err(Error::polars("test"))?;
                row.push(match c.bool() {
                    Ok(b) => i64::from(b.get(i).unwrap_or_default()),
                    Err(_) => c
                        .i64()
                        .map_err(Error::polars("test"))?
                        .get(i)
                        .unwrap_or_default(),
                });
            }
            let key = (
                customers.get(i).unwrap_or_default().to_owned(),
                format_hour(hour_col.get(i).unwrap_or_default()),
            );
            assert!(
                out.insert(key, row).is_none(),
                "one row per customer and hour"
            );
        }
        Ok(out)
    }

    fn key(customer: &str, hour: &str) -> (String, String) {
        (customer.to_owned(), format!("2026-03-01T{hour}"))
    }

    /// A hand-worked log: two runs, a duplicate, a malformed line, a conflict, a late reading.
    #[test]
    fn hand_worked_runs() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("aquabill-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = dir.join("log");
        add_file(
            &log,
            "2026-03-01T06",
            "a.jsonl",
            &[
                line("M1", "C1", "05:10", "1.5"),
                line("M2", "C1", "05:20", "0.25"),
                line("M1", "C1", "06:05", "2"),
                line("M1", "C1", "05:10", "1.5"),
                "not json".to_owned(),
                line("M3", "C2", "06:10", "0.001"),
            ],
        )?;
        let (log_s, out_s) = (
            log.to_string_lossy().into_owned(),
            dir.join("out").to_string_lossy().into_owned(),
        );
        let config = Config::new(&Params {
            input_root: &log_s,
            output_root: &out_s,
            ..Params::default()
        })?;

        let m = run_once(&config)?;
        let c = m.counts;
        assert_eq!(
            (c.lines_read, c.accepted, c.duplicates, c.malformed),
            (6, 4, 1, 1)
        );
        let hourly = hourly_rows(&config)?;
        assert_eq!(
            hourly,
            BTreeMap::from([
                (key("C1", "05"), vec![1750, 2, 2]),
                (key("C1", "06"), vec![2000, 1, 1]),
                (key("C2", "06"), vec![1, 1, 1]),
            ])
        );
        let cumulative = cumulative_rows(&config)?;
        assert_eq!(
            cumulative.len(),
            2 * 7,
            "two customers, hours 00 through 06"
        );
        assert_eq!(cumulative[&key("C1", "04")], vec![0, 0]);
        assert_eq!(cumulative[&key("C1", "05")], vec![1750, 1750]);
        assert_eq!(cumulative[&key("C1", "06")], vec![2000, 3750]);
        assert_eq!(cumulative[&key("C2", "05")], vec![0, 0]);
        assert_eq!(cumulative[&key("C2", "06")], vec![1, 1]);

        // Nothing new: nothing changes.
        assert_eq!(run_once(&config)?.files, 0);

        // A conflicting copy of M1's 05:10 reading, a new reading for 06, one 8 days late.
        add_file(&log, "2026-03-01T07", "b.jsonl", &[
            line("M1", "C1", "05:10", "9"),
            line("M2", "C1", "06:30", "1"),
            r#"{"meter_id":"M2","customer_id":"C1","recorded_at":"2026-02-21T06:30:00Z","usage_liters":1,"ingested_at":"x"}"#.to_owned(),
        ])?;
        let c = run_once(&config)?.counts;
        assert_eq!(
            (c.lines_read, c.accepted, c.conflicts, c.late),
            (3, 1, 1, 1)
        );
        let hourly = hourly_rows(&config)?;
        assert_eq!(
            hourly[&key("C1", "05")],
            vec![1750, 2, 2],
            "the first copy wins"
        );
        assert_eq!(hourly[&key("C1", "06")], vec![3000, 2, 2]);
        let cumulative = table(
            &config,
            &delta::CUMULATIVE_USAGE,
            &["cumulative_ml", "is_final"],
        )?;
        assert_eq!(cumulative[&key("C1", "06")], vec![4750, 0]);
        assert_eq!(cumulative.len(), 2 * 7);

        // A new customer two hours later: every customer gets rows up to 08, the newcomer zero
        // rows from the month's first hour, and earlier totals carry forward.
        add_file(
            &log,
            "2026-03-01T09",
            "c.jsonl",
            &[line("M9", "C3", "08:30", "0.75")],
        )?;
        assert_eq!(run_once(&config)?.counts.accepted, 1);
        let cumulative = cumulative_rows(&config)?;
        assert_eq!(
            cumulative.len(),
            3 * 9,
            "three customers, hours 00 through 08"
        );
        assert_eq!(cumulative[&key("C1", "07")], vec![0, 4750]);
        assert_eq!(cumulative[&key("C1", "08")], vec![0, 4750]);
        assert_eq!(cumulative[&key("C2", "08")], vec![0, 1]);
        assert_eq!(cumulative[&key("C3", "00")], vec![0, 0]);
        assert_eq!(cumulative[&key("C3", "07")], vec![0, 0]);
        assert_eq!(cumulative[&key("C3", "08")], vec![750, 750]);

        // Runs that each reach back into hour 06 leave small dedup-state files there; they are
        // compacted, and what they held still deduplicates.
        for (i, folder) in [
            "2026-03-01T10",
            "2026-03-01T11",
            "2026-03-01T12",
            "2026-03-01T13",
        ]
        .iter()
        .enumerate()
        {
            let meter = format!("M2{i}");
            add_file(
                &log,
                folder,
                "d.jsonl",
                &[line(&meter, "C4", &format!("06:4{i}"), "1")],
            )?;
            assert_eq!(run_once(&config)?.counts.accepted, 1);
        }
        let state = block_on(Table::open_or_create(
            &config.checkpoint_dir.join("dedup_state"),
            &delta::DEDUP_STATE,
        ))??;
        let six = BTreeSet::from([parse_hour("2026-03-01T06").unwrap_or_default()]);
        let files = block_on(state.small_files(&six, usize::MAX, 1))??
            .into_values()
            .flatten()
            .collect::<Vec<_>>();
        assert!(
            files.len() < STATE_SMALL_FILES,
            "{} files in hour 06",
            files.len()
        );
        assert_eq!(block_on(state.read_hours(&six))??.height(), 3 + 4);
        add_file(
            &log,
            "2026-03-01T14",
            "e.jsonl",
            &[line("M20", "C4", "06:40", "1")],
        )?;
        let c = run_once(&config)?.counts;
        assert_eq!((c.accepted, c.duplicates), (0, 1));
        assert_eq!(cumulative_rows(&config)?[&key("C4", "08")], vec![0, 4000]);
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing", &dir, e))
    }
}
