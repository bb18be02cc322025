//! The `hourly_usage` step: what the accepted readings add to each customer's hours, merged
//! into the stored rows of the recording hours they fall in, hour by hour, and those rows
//! replaced in one commit: a whole hour (main and side files, split by who is kept apart now) or,
//! when every changed customer is kept apart in that hour, its side files alone (see
//! `query::layout`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use super::layout::{Customers, Sides, customers};
use super::stream::{HourRead, RowsWritten, read_ahead};
use super::{Run, Stage, TableReport};
use crate::error::{Error, Result};
use crate::query::hourly::{hourly_additions, merge_hourly};
use crate::query::layout::Hourly;
use crate::table::{CUMULATIVE_USAGE, HOURLY_USAGE, Role, block_on, col, split_by_hour};

impl Run {
    /// Adds the accepted readings to the stored rows of the recording hours they fall in and
    /// replaces those rows of `hourly_usage`, hour by hour.
    pub fn write_hourly(&mut self) -> Result<TableReport> {
        let t = Instant::now();
        self.classified("hourly")?;
        if self.batch.plan.files.is_empty() {
            return Ok(TableReport::no_files(HOURLY_USAGE.name));
        }
        let batch = self.batch.plan.batch_id;
        let mut table = self.open(&HOURLY_USAGE)?;
        if block_on(table.has_batch(batch))?? {
            self.keep(table);
            return Ok(TableReport::skipped(HOURLY_USAGE.name));
        }
        let (added, plan) = self.additions()?;
        let p = crate::trace::phase("hourly/additions", t);
        let cumulative = self.open(&CUMULATIVE_USAGE)?;
        let classified = self.classified("hourly")?;
        let quiet = &classified.quiet;
        let mut added = split_by_hour(&added, col::USAGE_HOUR)?;
        let mut sides = Sides::new(&cumulative, self.config.billing_timezone);
        sides.read_side_sets(added.keys().copied())?;
        let mut layouts = BTreeMap::new();
        for (&hour, rows) in &added {
            layouts.insert(hour, sides.hourly(hour, &customers(rows)?)?);
        }
        // An hour whose side files alone would change but that has a file another engine wrote
        // (its rows may include the side customers') is written whole, split as it was: by
        // the hour's side set and who is new to the month, so `cumulative_usage`, which decides
        // from its own files alone, keeps agreeing with it.
        let foreign = table.hours_with(Role::Foreign);
        let mut kept_apart: BTreeMap<i64, (Customers, Customers)> = BTreeMap::new();
        for (&hour, layout) in &layouts {
            if *layout == Hourly::Side && foreign.contains(&hour) {
                let side = sides.side_set(hour)?.unwrap_or_default();
                let month = sides.month_customers(hour)?;
                kept_apart.insert(hour, (side, month));
            }
        }
        let p = crate::trace::phase("hourly/layouts", p);
        let reads: Vec<HourRead> = layouts
            .iter()
            .map(|(&hour, layout)| match layout {
                Hourly::Side if !kept_apart.contains_key(&hour) => {
                    (hour, Some(table.files_of(hour, Role::Side)))
                }
                _ => (hour, None),
            })
            .collect();
        let mut written_rows = RowsWritten::default();
        let written = table.write_frames(|emit| {
            read_ahead(&table, &reads, |hour, stored| {
                let added = match added.remove(&hour) {
                    Some(rows) => rows,
                    None => HOURLY_USAGE.empty_frame()?,
                };
                let rows = written_rows.note(merge_hourly(&stored, &added, hour)?);
                if let Some((side, month)) = kept_apart.get(&hour) {
                    let (side, main) =
                        split_rows(&rows, |c| side.contains(c) || !month.contains(c))?;
                    emit(main, Role::Main)?;
                    return emit(side, Role::Side);
                }
                match layouts.get(&hour) {
                    Some(Hourly::Side) => emit(rows, Role::Side),
                    _ => {
                        let (side, main) = split_rows(&rows, |c| quiet.contains(c))?;
                        emit(main, Role::Main)?;
                        emit(side, Role::Side)
                    }
                }
            })
        })?;
        let whole: BTreeSet<i64> = layouts
            .iter()
            .filter(|(h, l)| **l == Hourly::Whole || kept_apart.contains_key(h))
            .map(|(&h, _)| h)
            .collect();
        let side_paths: BTreeSet<String> = reads
            .into_iter()
            .filter_map(|(_, paths)| paths)
            .flatten()
            .collect();
        let p = crate::trace::phase("hourly/write", p);
        let committed = block_on(table.commit_written(batch, written, &whole, &side_paths))??;
        crate::trace::phase("hourly/commit", p);
        self.keep(table);
        self.keep(cumulative);
        self.step_done("hourly_usage", t);
        let mut report = written_rows.report(HOURLY_USAGE.name, committed, layouts.len());
        report.side_only = layouts.len() - whole.len();
        report.plan = Some(plan);
        Ok(report)
    }

    /// What the batch adds to each customer's hour (`customer_id`, `usage_hour`, `usage_ml`,
    /// `reading_count`, `meter_count`), with the query's plan; computed once per run.
    pub(super) fn additions(&mut self) -> Result<(DataFrame, String)> {
        let err = Error::polars("hourly");
        let Stage::Classified(classified) = &mut self.stage else {
            return Err(Error::StepOrder {
                step: "hourly",
                needs: "dedup",
            });
        };
        let query = hourly_additions(
            classified.accepted.clone().lazy(),
            classified.new_meters.clone().lazy(),
            classified.names.clone().lazy(),
        )
        .map_err(err)?;
        let plan = query.explain(true).map_err(err)?;
        let added = match &classified.additions {
            Some(added) => added.clone(),
            None => {
                let added = query.collect().map_err(err)?;
                classified.additions = Some(added.clone());
                added
            }
        };
        Ok((added, plan))
    }
}

/// The rows of `rows` whose `customer_id` `side` holds for, and the others (in that order).
pub(super) fn split_rows(
    rows: &DataFrame,
    side: impl Fn(&str) -> bool,
) -> Result<(DataFrame, DataFrame)> {
    let err = Error::polars("splitting an hour");
    let ids = rows
        .column(col::CUSTOMER_ID)
        .and_then(|c| c.str().cloned())
        .map_err(err)?;
    let mask: BooleanChunked = ids.iter().map(|c| Some(c.is_some_and(&side))).collect();
    let side_rows = rows.filter(&mask).map_err(err)?;
    let main_rows = rows.filter(&!&mask).map_err(err)?;
    Ok((side_rows, main_rows))
}
