//! The `cumulative_usage` step: each affected billing month rewritten from its earliest changed
//! hour (as [`plan_months`] decides), hour by hour ([`MonthWalk`]): the customers whose usage
//! changed get their totals carried forward, everyone else keeps their stored rows, and only the
//! files that hold changed rows are rewritten (`query::layout` decides: the side files alone,
//! the whole hour, or one final file once the watermark passes it). Customers new to a month
//! get zero rows from the month's first hour. One commit replaces every rewritten file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use super::compaction::CUMULATIVE_FILES_PER_HOUR;
use super::layout::Sides;
use super::stream::{HourRead, RowsWritten, read_ahead};
use super::{Run, TableReport};
use crate::error::{Error, Result};
use crate::hashing::FastSet;
use crate::hours::format_hour;
use crate::query::cumulative::{MonthPlan, final_rewrites, plan_months};
use crate::query::layout::{self, Cumulative, Hourly};
use crate::query::month::{HourRows, HourUsage, MonthWalk};
use crate::table::{
    CUMULATIVE_USAGE, Committed, HOURLY_USAGE, Role, Table, block_on, col, split_by_hour,
};

/// What the step removes when it commits.
#[derive(Default)]
struct Rewrites {
    /// Hours rewritten whole: every file goes.
    whole: BTreeSet<i64>,
    /// Side files rewritten (hours whose side files alone were).
    side_paths: BTreeSet<String>,
    /// Hours whose side files alone were rewritten or appended to.
    side_hours: BTreeSet<i64>,
}

impl Run {
    /// Updates `cumulative_usage` from the earliest changed hour of each billing month on (the
    /// first hour that got new usage, or the first hour new to the month), hour by hour; hours
    /// the watermark passed are rewritten as final. Then, when the watermark passed a month's
    /// end, writes its bills to `monthly_bills`.
    pub fn write_cumulative(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        let mut report = self.write_running_totals()?;
        if self.batch.plan.files.is_empty() {
            return Ok(report);
        }
        let bills = self.write_bills()?;
        let skipped = Committed::AlreadyCommitted;
        if report.committed != skipped || bills.committed != skipped {
            self.step_done("cumulative_usage", t);
        }
        report.bills = Some(bills);
        Ok(report)
    }

    /// `cumulative_usage` itself.
    fn write_running_totals(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        self.classified("cumulative")?;
        if self.batch.plan.files.is_empty() {
            return Ok(TableReport::no_files(CUMULATIVE_USAGE.name));
        }
        let batch = self.batch.plan.batch_id;
        let tz = self.config.billing_timezone;
        let hourly = self.open(&HOURLY_USAGE)?;
        let mut cumulative = self.open(&CUMULATIVE_USAGE)?;
        if block_on(cumulative.has_batch(batch))?? {
            self.keep(hourly);
            self.keep(cumulative);
            return Ok(TableReport::skipped(CUMULATIVE_USAGE.name));
        }
        let (added, _) = self.additions()?;
        let classified = self.classified("cumulative")?;
        let stored = cumulative.partitions();
        let plans = plan_months(
            &classified.affected_hours,
            &hourly.partitions(),
            &stored,
            tz,
        )?;
        let finals = final_rewrites(
            &stored,
            self.batch.plan.watermark_before,
            self.batch.watermark_after,
            &plans,
        );
        let p = crate::trace::phase("cumulative/plan", t);
        let by_hour = usage_by_hour(&added)?;
        let mut sides = Sides::new(&cumulative, tz);
        sides.read_side_sets(
            by_hour.keys().copied().chain(
                plans
                    .iter()
                    .flat_map(|plan| stored.range(plan.from..=plan.last).copied()),
            ),
        )?;
        let hourly_layouts = hourly_layouts(&mut sides, &by_hour)?;
        let p = crate::trace::phase("cumulative/layouts", p);
        let step = Step {
            cumulative: &cumulative,
            quiet: &classified.quiet,
            watermark: self.batch.watermark_after,
            stored: &stored,
            finals_now: match (self.batch.plan.watermark_before, self.batch.watermark_after) {
                (Some(before), Some(after)) => stored.range(before..after).copied().collect(),
                _ => BTreeSet::new(),
            },
            by_hour: &by_hour,
            hourly_layouts: &hourly_layouts,
        };
        let mut rewrites = Rewrites::default();
        let mut written_rows = RowsWritten::default();
        let written = cumulative.write_frames(|emit| {
            let mut emit = |rows: DataFrame, role: Role| emit(written_rows.note(rows), role);
            step.walk(&plans, &finals, &mut sides, &mut rewrites, &mut emit)
        })?;
        let p = crate::trace::phase("cumulative/write", p);
        let committed = block_on(cumulative.commit_written(
            batch,
            written,
            &rewrites.whole,
            &rewrites.side_paths,
        ))??;
        crate::trace::phase("cumulative/commit", p);
        self.keep(hourly);
        self.keep(cumulative);
        let side_only = rewrites.side_hours.difference(&rewrites.whole).count();
        let mut report = written_rows.report(
            CUMULATIVE_USAGE.name,
            committed,
            rewrites.whole.len() + side_only,
        );
        report.side_only = side_only;
        Ok(report)
    }
}

/// What one run's cumulative step works from.
struct Step<'a> {
    cumulative: &'a Table,
    quiet: &'a FastSet<String>,
    watermark: Option<i64>,
    stored: &'a BTreeSet<i64>,
    /// Stored hours the watermark passes in this run.
    finals_now: BTreeSet<i64>,
    by_hour: &'a BTreeMap<i64, Vec<(String, i64)>>,
    hourly_layouts: &'a BTreeMap<i64, Hourly>,
}

type Emit<'e> = dyn FnMut(DataFrame, Role) -> Result<()> + 'e;

impl Step<'_> {
    fn is_final(&self, hour: i64) -> bool {
        self.watermark.is_some_and(|w| hour < w)
    }

    /// The stored rows of `hour`: every file, or the files `paths`.
    fn read(&self, hour: i64, paths: Option<&BTreeSet<String>>) -> Result<StoredHour> {
        let hours = BTreeSet::from([hour]);
        let frame = match paths {
            None => block_on(self.cumulative.read_hours(&hours))??,
            Some(paths) if paths.is_empty() => CUMULATIVE_USAGE.empty_frame()?,
            Some(paths) => block_on(self.cumulative.read_files(&hours, paths))??,
        };
        StoredHour::from_frame(&frame)
    }

    /// Rewrites what the run changes of one billing month.
    /// The walk: each month's plan in turn, then the hours the watermark passed that no month
    /// rewrote, made final as stored.
    fn walk(
        &self,
        plans: &[MonthPlan],
        finals: &BTreeSet<i64>,
        sides: &mut Sides<'_>,
        rewrites: &mut Rewrites,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        for plan in plans {
            self.month(plan, sides, rewrites, emit)?;
        }
        // (An hour that got zero rows above was made final with them already.)
        for &hour in finals.difference(&rewrites.whole.clone()) {
            let stored = self.read(hour, None)?;
            let month = month_of(&stored, hour)?;
            emit(stored.rows.to_frame(hour, &month, true)?, Role::Main)?;
            rewrites.whole.insert(hour);
        }
        Ok(())
    }

    fn month(
        &self,
        plan: &MonthPlan,
        sides: &mut Sides<'_>,
        rewrites: &mut Rewrites,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let in_month = sides.month_customers(plan.start)?;
        let month_usage = self
            .by_hour
            .range(plan.start..plan.end)
            .flat_map(|(&h, usage)| usage.iter().map(move |(c, _)| (c.as_str(), h)));
        let mut walk = MonthWalk::new(month_usage, |c| in_month.contains(c));
        // Customers new to the month: zero rows in the stored hours before the rewritten range.
        if !walk.newcomers().is_empty() {
            for &hour in self.stored.range(plan.start..plan.from) {
                self.zero_rows(hour, &plan.month, &walk, rewrites, emit)?;
            }
        }
        // Only new hours: they continue the totals of the last stored one.
        if let Some(last) = plan.last_stored.filter(|&l| l < plan.from) {
            walk.continue_from(&self.read(last, None)?.rows);
        }
        // A month's stored hours come before its new ones. What each stored hour is read for
        // is known before any is read, so they are read ahead, several at once.
        let mut stored_hours = Vec::new();
        let mut reads: Vec<HourRead> = Vec::new();
        let mut new_hours = Vec::new();
        for hour in plan.from..=plan.last {
            if !self.stored.contains(&hour) {
                if plan.last_stored.is_some_and(|last| hour < last) {
                    return Err(Error::table_data(
                        CUMULATIVE_USAGE.name,
                        col::USAGE_HOUR,
                        format!(
                            "hour {} is missing in a month that has later hours",
                            format_hour(hour)
                        ),
                    ));
                }
                new_hours.push(hour);
                continue;
            }
            let side_set = sides.side_set(hour)?;
            let layout = layout::cumulative(
                self.is_final(hour),
                self.hourly_layouts.get(&hour).copied(),
                side_set.as_deref(),
                walk.changed(hour),
                |c| in_month.contains(c),
            );
            let last = plan.last_stored == Some(hour);
            let side_paths = self.cumulative.files_of(hour, Role::Side);
            let read_all = layout != Cumulative::Side || last;
            reads.push((hour, (!read_all).then(|| side_paths.clone())));
            stored_hours.push((layout, side_set.unwrap_or_default(), side_paths, last));
        }
        let mut stored_hours = stored_hours.into_iter();
        read_ahead(self.cumulative, &reads, |hour, frame| {
            let Some((layout, side_set, side_paths, last)) = stored_hours.next() else {
                return Err(Error::table_data(
                    CUMULATIVE_USAGE.name,
                    col::USAGE_HOUR,
                    format!("hour {} was read but not asked for", format_hour(hour)),
                ));
            };
            let stored = StoredHour::from_frame(&frame)?;
            let rows = walk.stored_hour(hour, &stored.rows, &self.added(hour), last)?;
            let kept_apart = |c: &str| side_set.contains(c) || !in_month.contains(c);
            match layout {
                Cumulative::Side => {
                    // Only the side part is written (the main rows did not change).
                    let (side, _) = rows.split(kept_apart)?;
                    emit(side.to_frame(hour, &plan.month, false)?, Role::Side)?;
                    rewrites.side_paths.extend(side_paths);
                    rewrites.side_hours.insert(hour);
                }
                Cumulative::Final => {
                    emit(rows.to_frame(hour, &plan.month, true)?, Role::Main)?;
                    rewrites.whole.insert(hour);
                }
                Cumulative::Resplit => {
                    let quiet = |c: &str| self.quiet.contains(c);
                    self.emit_whole(rows, hour, &plan.month, false, quiet, emit)?;
                    rewrites.whole.insert(hour);
                }
                Cumulative::Keep => {
                    self.emit_whole(rows, hour, &plan.month, false, kept_apart, emit)?;
                    rewrites.whole.insert(hour);
                }
            }
            Ok(())
        })?;
        for hour in new_hours {
            let rows = walk.new_hour(&self.added(hour))?;
            let is_final = self.is_final(hour);
            let quiet = |c: &str| self.quiet.contains(c);
            self.emit_whole(rows, hour, &plan.month, is_final, quiet, emit)?;
            rewrites.whole.insert(hour);
        }
        Ok(())
    }

    /// The usage the run adds to each customer's `hour`.
    fn added(&self, hour: i64) -> HourUsage<'_> {
        self.by_hour
            .get(&hour)
            .map(|usage| usage.iter().map(|(c, u)| (c.as_str(), *u)).collect())
            .unwrap_or_default()
    }

    /// An hour written whole: one final file, or a main and a side file.
    fn emit_whole(
        &self,
        rows: HourRows,
        hour: i64,
        month: &str,
        is_final: bool,
        side: impl Fn(&str) -> bool,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        if is_final {
            return emit(rows.to_frame(hour, month, true)?, Role::Main);
        }
        let (side, main) = rows.split(side)?;
        emit(main.to_frame(hour, month, false)?, Role::Main)?;
        emit(side.to_frame(hour, month, false)?, Role::Side)
    }

    /// Zero rows of the customers new to the month in a stored hour before the rewritten range:
    /// appended as a side file (with the hour's few side files rewritten as one once the hour
    /// would have too many files), or with the whole hour when the watermark passes it now.
    fn zero_rows(
        &self,
        hour: i64,
        month: &str,
        walk: &MonthWalk,
        rewrites: &mut Rewrites,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let zero = walk.zero_rows();
        let is_final = self.is_final(hour);
        if self.finals_now.contains(&hour) {
            let stored = self.read(hour, None)?;
            let rows = stack(stored.rows, zero)?;
            emit(rows.to_frame(hour, month, true)?, Role::Main)?;
            rewrites.whole.insert(hour);
            return Ok(());
        }
        let side_paths = self.cumulative.files_of(hour, Role::Side);
        // The hour's files with this one: a main file, its side files and the new one.
        let rows = if side_paths.len() + 2 >= CUMULATIVE_FILES_PER_HOUR {
            let stored = self.read(hour, Some(&side_paths))?;
            rewrites.side_paths.extend(side_paths);
            // Rows of a final hour stay final; the others are not yet.
            stack(stored.rows, zero)?
        } else {
            zero
        };
        emit(rows.to_frame(hour, month, is_final)?, Role::Side)?;
        rewrites.side_hours.insert(hour);
        Ok(())
    }
}

/// The stored rows of one hour and their billing month.
struct StoredHour {
    month: Option<String>,
    rows: HourRows,
}

impl StoredHour {
    fn from_frame(frame: &DataFrame) -> Result<Self> {
        Ok(Self {
            month: frame
                .column(col::BILLING_MONTH)
                .ok()
                .and_then(|c| c.str().ok()?.iter().flatten().next().map(str::to_owned)),
            rows: HourRows::from_frame(frame)?,
        })
    }
}

/// The billing month of a stored hour's rows.
fn month_of(stored: &StoredHour, hour: i64) -> Result<String> {
    stored.month.clone().ok_or_else(|| {
        Error::table_data(
            CUMULATIVE_USAGE.name,
            col::BILLING_MONTH,
            format!("hour {} has no rows", format_hour(hour)),
        )
    })
}

/// Rows of two parts of an hour as one (a customer in both is an error).
fn stack(a: HourRows, b: HourRows) -> Result<HourRows> {
    a.with(b)
}

/// The batch's new usage per hour: `(customer_id, usage_ml)` of each customer.
/// What `hourly_usage` rewrote of each hour the batch added usage to: the same decision, from
/// the same state.
fn hourly_layouts(
    sides: &mut Sides<'_>,
    by_hour: &BTreeMap<i64, Vec<(String, i64)>>,
) -> Result<BTreeMap<i64, Hourly>> {
    let mut layouts = BTreeMap::new();
    for (&hour, usage) in by_hour {
        let changed: FastSet<String> = usage.iter().map(|(c, _)| c.clone()).collect();
        layouts.insert(hour, sides.hourly(hour, &changed)?);
    }
    Ok(layouts)
}

fn usage_by_hour(added: &DataFrame) -> Result<BTreeMap<i64, Vec<(String, i64)>>> {
    let err = Error::polars("cumulative");
    let mut out = BTreeMap::new();
    for (hour, rows) in split_by_hour(added, col::USAGE_HOUR)? {
        let ids = customers_of(&rows)?;
        let usage = rows
            .column(col::USAGE_ML)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?;
        out.insert(
            hour,
            ids.into_iter().zip(usage.into_no_null_iter()).collect(),
        );
    }
    Ok(out)
}

fn customers_of(rows: &DataFrame) -> Result<Vec<String>> {
    let ids = rows
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str().cloned())
        .map_err(Error::polars("cumulative"))?;
    Ok(ids.iter().flatten().map(str::to_owned).collect())
}
