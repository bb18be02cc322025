//! A benchmark fixture: one billing month of the customer tables at scale, written directly
//! (a month of the log at 100,000 meters is about 125 GB; the tables only need their rows), for
//! timing the views on a month's last day (`examples/month_views.rs`, `bench/month_views.py`).
//!
//! `hourly_usage` and `cumulative_usage` get a row per customer and hour of the month, laid out
//! as runs lay them out (files by hour, rows by customer; a twentieth of the customers in each
//! `cumulative_usage` hour's side file), and their day tables are written as the run of the
//! month's last hour writes them. Nothing else: no checkpoint, no other table. Not part of the
//! pipeline.
//!
//! It also hands out the storage layer's local folder served as an S3 bucket at a fixed latency
//! per request, so the views' cost on object storage is measured without a test server's own,
//! and copies the final days of existing tables to their day tables at once
//! ([`copy_final_days`], for `bench/hourly_at_scale.py`'s history).

use polars::prelude::DataFrame;

pub use crate::hours::parse_hour;
pub use crate::storage::{Remote, Requests, serve_folder_as_bucket};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::hours::{WATERMARK_HOURS, billing_month, month_end_hour, month_start_hour};
use crate::state::{RunLock, Store};
use crate::table::{CUMULATIVE_USAGE, HOURLY_USAGE, Role, Spec, Table, Values, block_on, pins};

/// What [`month_of_customer_tables`] wrote.
#[derive(Debug, Clone)]
pub struct Month {
    /// `YYYY-MM`.
    pub month: String,
    /// Hours written.
    pub hours: usize,
    /// Rows written to each of the two tables.
    pub rows: usize,
    /// Days copied to each day table.
    pub days: usize,
    /// Seconds the copies took (both tables, one after the other).
    pub days_seconds: f64,
}

/// Writes `customers` customers' rows for every hour of the billing month holding `hour` (UTC
/// hour index) into `config`'s `hourly_usage` and `cumulative_usage`, which must not exist yet,
/// then their day tables as of the watermark the month's last hour leaves.
pub fn month_of_customer_tables(config: &Config, customers: usize, hour: i64) -> Result<Month> {
    let tz = config.billing_timezone;
    let (first, end) = (month_start_hour(hour, tz)?, month_end_hour(hour, tz)?);
    let month = billing_month(first, tz)?;
    let ids: Vec<String> = (0..customers).map(|c| format!("C{c:07}")).collect();
    let open = |spec: &'static Spec| -> Result<Table> {
        let dir = spec.dir(config);
        if block_on(Table::open_existing(&dir, spec, &[]))??.is_some() {
            return Err(Error::Request(format!(
                "{dir} exists: the fixture writes new tables only"
            )));
        }
        block_on(Table::open_pinned(&dir, spec, &pins(config)))?
    };
    let (mut hourly, mut cumulative) = (open(&HOURLY_USAGE)?, open(&CUMULATIVE_USAGE)?);
    let hours: std::collections::BTreeSet<i64> = (first..end).collect();
    let usage = |c: usize, h: i64| ((c as i64 * 7_919 + h * 104_729) % 90_000) + 1_000;
    let hourly_written = hourly.write_frames(|emit| {
        for &h in &hours {
            let n = ids.len();
            let frame = HOURLY_USAGE.frame(vec![
                Values::Str(ids.iter().map(|c| c.as_str().into()).collect()),
                Values::Long(vec![h; n]),
                Values::Long((0..n).map(|c| usage(c, h)).collect()),
                Values::Long(vec![12; n]),
                Values::Long(vec![2; n]),
            ])?;
            emit(frame, Role::Main)?;
        }
        Ok(())
    })?;
    block_on(hourly.commit_written(0, hourly_written, &hours, &Default::default()))??;
    let mut totals = vec![0i64; ids.len()];
    let cumulative_written = cumulative.write_frames(|emit| {
        for &h in &hours {
            for (c, total) in totals.iter_mut().enumerate() {
                *total += usage(c, h);
            }
            let side = |c: &usize| c.is_multiple_of(20);
            for (role, chosen) in [(Role::Main, false), (Role::Side, true)] {
                let of: Vec<usize> = (0..ids.len()).filter(|c| side(c) == chosen).collect();
                emit(
                    cumulative_frame(&ids, &of, h, &month, &totals, usage)?,
                    role,
                )?;
            }
        }
        Ok(())
    })?;
    block_on(cumulative.commit_written(0, cumulative_written, &hours, &Default::default()))??;
    // The run of the month's last hour: its ingestion hour is the latest.
    let watermark = end - WATERMARK_HOURS;
    let copying = std::time::Instant::now();
    let mut days = 0;
    for table in [&hourly, &cumulative] {
        if let Some(mut day_table) = table.day_table(config, watermark)? {
            days = table.write_all_days(&mut day_table, watermark)?;
        }
    }
    Ok(Month {
        month,
        hours: hours.len(),
        rows: hours.len() * ids.len(),
        days,
        days_seconds: copying.elapsed().as_secs_f64(),
    })
}

/// Copies every final day of the customer tables of `config` (the days the checkpoint's
/// watermark passed) to their day tables, under the run lock, as the runs of the next days
/// would: for a benchmark's history made before the day tables, so that its measured runs copy
/// only the days their own watermark passes. Returns the days copied to each table; nothing
/// when every final day has its copy already.
pub fn copy_final_days(config: &Config) -> Result<Vec<(&'static str, usize)>> {
    let _lock = RunLock::acquire(&config.checkpoint_dir)?;
    let Some(watermark) = Store::new(&config.checkpoint_dir).load()?.watermark_hour else {
        return Ok(Vec::new());
    };
    let mut copied = Vec::new();
    for spec in [&HOURLY_USAGE, &CUMULATIVE_USAGE] {
        let Some(table) = block_on(Table::open_existing(&spec.dir(config), spec, &pins(config)))??
        else {
            continue;
        };
        if let Some(mut days) = table.day_table(config, watermark)? {
            copied.push((spec.name, table.write_all_days(&mut days, watermark)?));
        }
    }
    Ok(copied)
}

/// The `cumulative_usage` rows of customers `of` at hour `hour`.
fn cumulative_frame(
    ids: &[String],
    of: &[usize],
    hour: i64,
    month: &str,
    totals: &[i64],
    usage: impl Fn(usize, i64) -> i64,
) -> Result<DataFrame> {
    let n = of.len();
    CUMULATIVE_USAGE.frame(vec![
        Values::Str(of.iter().map(|&c| ids[c].as_str().into()).collect()),
        Values::Long(vec![hour; n]),
        Values::Str(vec![month.into(); n]),
        Values::Long(of.iter().map(|&c| usage(c, hour)).collect()),
        Values::Long(of.iter().map(|&c| totals[c]).collect()),
        Values::Bool(vec![false; n]),
    ])
}
