//! The last step: the alerts are brought up to date, the quarantine rows and the run's metrics
//! are appended, the dedup state takes
//! the accepted readings (and drops the hours the watermark passed), the checkpoint advances
//! last, about daily the tables are vacuumed, and the days the watermark passed are copied to
//! the day tables.

use std::collections::BTreeSet;
use std::time::Instant;

use polars::prelude::*;

use super::alerts::write_alerts;
use super::compaction::{
    SMALL_FILE_ROWS, STATE_SMALL_FILES, VACUUM_EVERY_BATCHES, append_compacting,
};
use super::cores::both;
use super::dedup::hour_set;
use super::{Run, RunMetrics, Stage};
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, format_hour};
use crate::quarantine;
use crate::table::{
    ALERT_METERS, ALL, CUMULATIVE_USAGE, DAY_TABLES, DEDUP_KEYS, DEDUP_METERS, DEDUP_STATE,
    HOURLY_USAGE, METER_ALERTS, QUARANTINE, RUN_METRICS, Table, block_on, col,
};

/// What the dedup-state commit of a run does.
struct StateUpdate {
    /// The readings to add (with any small files' rows they replace), sorted by hour and meter.
    rows: DataFrame,
    /// Hour partitions the watermark passed: dropped.
    pruned: BTreeSet<i64>,
    /// Small files folded into `rows`.
    compacted: BTreeSet<String>,
}

impl Run {
    /// Writes the quarantine and the run's metrics, updates the dedup state and advances the
    /// checkpoint.
    pub fn finish(mut self) -> Result<RunMetrics> {
        let t = Instant::now();
        if self.batch.plan.files.is_empty() {
            return Ok(self.metrics());
        }
        let batch = self.batch.plan.batch_id;
        let files = &self.batch.plan.files;
        let paths: Vec<&std::path::Path> = files.iter().map(|f| f.path.as_path()).collect();
        quarantine::fill_raw_lines(&mut self.ledger.quarantined, &paths)?;
        let rel_paths: Vec<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
        let rows = quarantine::frame(batch, &self.ledger.quarantined, &rel_paths)?;
        let p = crate::trace::phase("finish/quarantine rows", t);
        // The alerts and the quarantine at once: tables independent of each other, each
        // committed before the dedup state (which changes how a rerun classifies the batch).
        // On object storage each commit is a few round trips one after another.
        let (mut alerts, mut histories) = (self.open(&METER_ALERTS)?, self.open(&ALERT_METERS)?);
        let mut quarantined = self.open(&QUARANTINE)?;
        let inputs = self.alert_inputs()?;
        let (alerted, appended) = both(
            || {
                let alerted = write_alerts(&inputs, &mut alerts, &mut histories);
                crate::trace::phase("finish/alerts", p);
                alerted
            },
            || {
                let appended = append_compacting(&mut quarantined, batch, &rows);
                crate::trace::phase("finish/quarantine", p);
                appended
            },
        );
        drop(inputs);
        alerted?;
        appended?;
        self.keep(alerts);
        self.keep(histories);
        let p = Instant::now();

        let mut state = self.open(&DEDUP_STATE)?;
        let update = self.state_update(&state)?;
        let p = crate::trace::phase("finish/state rows", p);
        let (new_keys, meters) = match &self.stage {
            Stage::Classified(c) => (c.new_keys.clone(), c.meters.to_frame()?),
            _ => (DEDUP_KEYS.empty_frame()?, DEDUP_METERS.empty_frame()?),
        };
        for spec in [&HOURLY_USAGE, &CUMULATIVE_USAGE] {
            let table = self.open(spec)?;
            let (version, files) = table.version_and_files();
            self.keep(table);
            self.ledger.tables.push((spec.name, version, files as u64));
        }
        self.step_done("finish", t);
        let metrics = self.metrics().frame()?;
        // The run's metrics and the keys of ids new in the batch at once (tables independent of
        // each other; a rerun gives new ids the same keys), then the meters' index (rewritten
        // whole), each before the readings. A rerun after a crash between the index and the
        // readings reads the index after the batch: it may classify records of the hours the
        // watermark just passed differently, but every table before has recorded the batch and
        // is skipped, and the readings it commits are those of the hours after the watermark,
        // whose stored readings it reads as the crashed attempt did.
        let mut run_metrics = self.open(&RUN_METRICS)?;
        let mut key_table = self.open(&DEDUP_KEYS)?;
        let (recorded, keyed) = both(
            || append_compacting(&mut run_metrics, batch, &metrics),
            || append_compacting(&mut key_table, batch, &new_keys),
        );
        recorded?;
        keyed?;
        let p = crate::trace::phase("finish/metrics and keys", p);
        let mut meter_table = self.open(&DEDUP_METERS)?;
        let old = meter_table.appended_files(0);
        block_on(meter_table.commit_removing(batch, Some(&meters), &Default::default(), &old))??;
        let p = crate::trace::phase("finish/meters", p);
        block_on(state.commit_removing(
            batch,
            Some(&update.rows),
            &update.pruned,
            &update.compacted,
        ))??;

        let p = crate::trace::phase("finish/readings", p);
        let mut checkpoint = self.checkpoint.clone();
        for f in &self.batch.plan.files {
            checkpoint.files.insert(f.rel_path.clone(), f.size);
        }
        checkpoint.next_batch = batch + 1;
        checkpoint.watermark_hour = self.batch.watermark_after;
        checkpoint.latest_ingest_hour = self.batch.latest_ingest_after;
        self.lock.check()?;
        let archived = self.store.archive_old_files(&mut checkpoint, batch)?;
        self.store.commit(&checkpoint)?;
        if archived {
            self.store.remove_old_archives(&checkpoint, batch);
        }
        let p = crate::trace::phase("finish/checkpoint", p);
        if batch % VACUUM_EVERY_BATCHES == VACUUM_EVERY_BATCHES - 1 {
            self.vacuum()?;
        }
        if self.config.copy_days {
            self.write_days().map_err(|e| Error::DayTables {
                source: Box::new(e),
            })?;
            crate::trace::phase("finish/days", p);
        }
        Ok(self.metrics())
    }

    /// The dedup state's change: the accepted readings of the hours the watermark has not
    /// passed (the writers sort each hour's file by meter). Each run that reaches back into an
    /// hour adds a small file to it; once an hour has a few, they are rewritten with this run's
    /// rows (as one file, or one a core when they are most of the commit's rows), so reads by
    /// meter stay selective and the file count stays bounded.
    fn state_update(&self, state: &Table) -> Result<StateUpdate> {
        let err = Error::polars("dedup state");
        let wm = self.batch.watermark_after.unwrap_or(i64::MIN);
        let Stage::Classified(classified) = &self.stage else {
            return Err(Error::StepOrder {
                step: "finish",
                needs: "dedup",
            });
        };
        let keep = classified
            .accepted
            .clone()
            .lazy()
            .filter(col(col::USAGE_HOUR).gt_eq(lit(wm)))
            .select(
                DEDUP_STATE
                    .columns
                    .iter()
                    .map(|c| col(c.0))
                    .collect::<Vec<_>>(),
            )
            .collect()
            .map_err(err)?;
        let pruned: BTreeSet<i64> = state.partitions().into_iter().filter(|&h| h < wm).collect();
        let appended = hour_set(&keep, col::USAGE_HOUR)?;
        let crowded = state.small_files(&appended, SMALL_FILE_ROWS, STATE_SMALL_FILES - 1);
        let hours: BTreeSet<i64> = crowded.keys().copied().collect();
        let compacted: BTreeSet<String> = crowded.into_values().flatten().collect();
        let rows = if compacted.is_empty() {
            keep
        } else {
            let old = block_on(state.read_files(&hours, &compacted))??;
            concat([keep.lazy(), old.lazy()], UnionArgs::default())
                .and_then(LazyFrame::collect)
                .map_err(err)?
        };
        Ok(StateUpdate {
            rows,
            pruned,
            compacted,
        })
    }

    /// Copies the customer tables' days the watermark has passed into their day tables (what
    /// views read), the two tables at once. Last, after the checkpoint and the vacuum: the
    /// batch is done whatever happens here, and a day not copied is read by hour until a later
    /// run copies it.
    fn write_days(&mut self) -> Result<()> {
        let Some(watermark) = self.batch.watermark_after else {
            return Ok(());
        };
        let (hourly, cumulative) = (self.open(&HOURLY_USAGE)?, self.open(&CUMULATIVE_USAGE)?);
        let copy = |source: &Table| -> Result<usize> {
            match source.day_table(&self.config, watermark)? {
                Some(mut days) => source.write_days(&mut days, watermark),
                None => Ok(0),
            }
        };
        let (a, b) = both(|| copy(&hourly), || copy(&cumulative));
        self.keep(hourly);
        self.keep(cumulative);
        a?;
        b?;
        Ok(())
    }

    /// Deletes the files no table version of the last 7 days (the watermark's reach) refers to.
    fn vacuum(&mut self) -> Result<usize> {
        let mut deleted = 0;
        for spec in ALL {
            let mut table = self.open(spec)?;
            deleted += block_on(table.vacuum(WATERMARK_HOURS))??;
        }
        for spec in DAY_TABLES {
            if let Some(mut table) =
                block_on(Table::open_existing(&spec.dir(&self.config), spec, &[]))??
            {
                deleted += block_on(table.vacuum(WATERMARK_HOURS))??;
            }
        }
        Ok(deleted)
    }

    fn metrics(&self) -> RunMetrics {
        let (hours_touched, state_rows_read) = match &self.stage {
            Stage::Classified(c) => (c.affected_hours.len() as u64, c.prior_rows as u64),
            _ => (0, 0),
        };
        RunMetrics {
            batch_id: self.batch.plan.batch_id,
            started_at_us: self.clock.started_at_us,
            files: self.batch.plan.files.len() as u64,
            counts: self.ledger.counts,
            hours_touched,
            state_rows_read,
            watermark_hour: self
                .batch
                .watermark_after
                .map(format_hour)
                .unwrap_or_default(),
            duration_ms: self.clock.started.elapsed().as_millis() as i64,
            steps: self.clock.steps.clone(),
            tables: self.ledger.tables.clone(),
            held_back_files: self.batch.held_back.iter().map(|h| h.files as u64).sum(),
        }
    }
}
