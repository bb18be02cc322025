//! The dedup step: the watermark (late and future records into the ledger), then first copy
//! wins against the batch and the dedup state (conflicts into the ledger), and the accounting
//! check `read = accepted + duplicates + quarantined`. It also works out what the dedup state
//! will know after the run: each meter's hours and latest reading, and so which customers the
//! side files keep apart (a meter gone quiet, or back from being quiet in this batch).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use super::{Classified, DedupReport, Run, Stage, keys};
use crate::error::{Error, Result};
use crate::hours::HOUR_MICROS;
use crate::input::INGEST_HOUR;
use crate::input::SEQ;
use crate::quarantine::{Quarantined, Reason};
use crate::query::meters::MeterIndex;
use crate::query::{Outcome, ReadingKey, Readings, Timing, classify, slice_count, timing};
use crate::table::{
    DEDUP_KEYS, DEDUP_METERS, DEDUP_STATE, block_on, col, long_column, long_values,
};
use crate::trace;

impl Run {
    /// Applies the watermark and removes duplicates against the dedup state. Takes the parsed
    /// records (their memory is released as they are classified): once per parse. Its phases,
    /// each a function below and a label of `AQUABILL_TRACE`: heard (the alerts' part), keys,
    /// watermark, the state read (meters, then readings), classify (with the outcomes and the
    /// accounting check), index.
    pub fn dedup(&mut self) -> Result<DedupReport> {
        let t = Instant::now();
        let mut parsed = self.take_parsed()?;
        // The meters heard, for the alerts: a phase of its own (their keys come below).
        let heard = super::alerts::heard(&parsed)?;
        let p = trace::phase("dedup/heard", t);
        self.open_at_once(&[&DEDUP_KEYS, &DEDUP_METERS, &DEDUP_STATE])?;
        let key_table = self.open(&DEDUP_KEYS)?;
        let keys = keys::assign(&key_table, &mut parsed)?;
        self.keep(key_table);
        let mut heard = heard
            .into_iter()
            .map(|h| h.keyed(&keys.meter_keys, &keys.customer_keys))
            .collect::<Result<Vec<_>>>()?;
        // In key order, as the alerts take the meters: read in memory order then.
        heard.sort_unstable_by_key(|h| h.meter);
        let p = trace::phase("dedup/keys", p);
        let records = std::mem::take(&mut parsed.records);
        drop(parsed);
        let in_time = self.apply_watermark(records)?;
        let p = trace::phase("dedup/watermark", p);
        let (meters, prior) = self.read_state(&in_time)?;
        let prior_rows = prior.height();
        let p = trace::phase("dedup/read state", p);
        let slices = slice_count(in_time.height());
        let (accepted, method) = self.classify(in_time, prior, slices)?;
        let p = trace::phase("dedup/classify and outcomes", p);
        let affected_hours = hour_set(&accepted, col::USAGE_HOUR)?;
        // What the state knows after the run (and so which meters count as new to a
        // customer's hour), and who is kept apart in the side files: a meter quiet now (no
        // reading since the start of the latest ingestion hour, where every meter reporting on
        // time has some), or one that was quiet before this batch and is back in it. A meter
        // back from an outage sends its buffer over minutes, and when those straddle the
        // start of an ingestion hour the rest of the replay comes in the next run: had its
        // customer gone back to the main files now, that rest would rewrite whole hours.
        // "Quiet before" is as of the previous batch's latest ingestion hour, or the hour
        // before this batch's latest when that is earlier: an earlier batch of the same hour
        // may have held only some of the hour's meters.
        let readings = readings_of(&accepted)?;
        let back = match (
            self.checkpoint.latest_ingest_hour,
            self.batch.latest_ingest_after,
        ) {
            (Some(before), Some(latest)) => {
                meters.quiet_customers(before.min(latest - 1) * HOUR_MICROS)
            }
            _ => BTreeSet::new(),
        };
        // (No watermark means no file, so no reading.)
        let (meters, first) = match self.batch.watermark_after {
            Some(watermark) => meters.advanced(watermark, &readings),
            None => (meters, Vec::new()),
        };
        let new_meters = new_meters(&readings, &first)?;
        trace::phase("dedup/index", p);
        let since = self.batch.latest_ingest_after.unwrap_or(0) * HOUR_MICROS;
        let quiet = meters
            .quiet_customers(since)
            .into_iter()
            .chain(back)
            .filter_map(|key| keys.customer_ids.get(&key).cloned())
            .collect();
        let report = DedupReport {
            counts: self.ledger.counts,
            hours_touched: affected_hours.len(),
            prior_rows,
            slices,
            method,
        };
        self.stage = Stage::Classified(Box::new(Classified {
            accepted,
            prior_rows,
            affected_hours,
            names: keys.names,
            new_keys: keys.new_keys,
            new_meters,
            meters,
            quiet,
            additions: None,
            heard,
            stored_keys: keys.stored,
            customer_ids: keys.customer_ids,
        }));
        self.step_done("dedup", t);
        Ok(report)
    }

    /// The parsed batch, if the parse step ran last; the stage is left as it was otherwise.
    fn take_parsed(&mut self) -> Result<super::Parsed> {
        match std::mem::replace(&mut self.stage, Stage::Planned) {
            Stage::Parsed(parsed) => Ok(parsed),
            other => {
                self.stage = other;
                Err(Error::StepOrder {
                    step: "dedup",
                    needs: "parse",
                })
            }
        }
    }

    /// The records in time: late and future ones go to the ledger and the quarantine.
    fn apply_watermark(&mut self, records: DataFrame) -> Result<DataFrame> {
        let err = Error::polars("watermark");
        let (watermark, skew) = (
            self.batch.plan.watermark_before,
            self.batch.clock_skew_minutes(&self.config),
        );
        let timings: Vec<Timing> = {
            let ingest = long_values(&records, INGEST_HOUR, "watermark")?;
            let recorded = long_values(&records, col::RECORDED_AT, "watermark")?;
            ingest
                .iter()
                .zip(recorded.iter())
                .map(|(&ingest, &recorded)| timing(ingest, recorded, watermark, skew))
                .collect()
        };
        if timings.iter().all(|&t| t == Timing::InTime) {
            return Ok(records);
        }
        let only = |wanted: Timing| {
            let mask: BooleanChunked = timings.iter().map(|&t| t == wanted).collect();
            records.filter(&mask).map_err(err)
        };
        let (late, future, in_time) = (
            only(Timing::Late)?,
            only(Timing::Future)?,
            only(Timing::InTime)?,
        );
        drop(records);
        self.quarantine_records(&late, Reason::Late)?;
        self.quarantine_records(&future, Reason::Future)?;
        self.ledger.counts.late += late.height() as u64;
        self.ledger.counts.future += future.height() as u64;
        Ok(in_time)
    }

    /// The meters' index, and the stored readings a copy of `in_time` may be among: only for
    /// the meters and hours the index says hold readings, and readings no later than the
    /// meter's latest.
    fn read_state(&mut self, in_time: &DataFrame) -> Result<(MeterIndex, DataFrame)> {
        let t = Instant::now();
        let meter_table = self.open(&DEDUP_METERS)?;
        let meters = block_on(meter_table.read_hours(&Default::default()))??;
        let p = trace::phase("dedup/read state/meters", t);
        let meters = MeterIndex::from_frame(&meters)?;
        self.keep(meter_table);
        let touched = may_hold(in_time, &meters)?;
        let p = trace::phase("dedup/read state/index", p);
        let state = self.open(&DEDUP_STATE)?;
        let prior = block_on(state.read_hours_matching(col::METER, &touched))??;
        self.keep(state);
        trace::phase("dedup/read state/readings", p);
        Ok((meters, prior))
    }

    /// First copy wins, in `slices` slices by meter: the accepted records, and a description
    /// of the pass for `explain`. Duplicates are counted, conflicts quarantined, and the batch's
    /// accounting is checked: `read = accepted + duplicates + quarantined`.
    fn classify(
        &mut self,
        in_time: DataFrame,
        prior: DataFrame,
        slices: usize,
    ) -> Result<(DataFrame, String)> {
        let in_time = in_ingestion_order(in_time)?;
        let reading = reading_key(&[&in_time, &prior])?;
        let outcomes = {
            let batch = Columns::of(&in_time)?;
            let stored = Columns::of(&prior)?;
            classify(batch.readings(), stored.readings(), reading, slices)
                .map_err(|e| Error::Dedup(e.to_string()))?
        };
        let err = Error::polars("dedup");
        let only = |wanted: Outcome| {
            let mask: BooleanChunked = outcomes.iter().map(|&o| o == wanted).collect();
            in_time.filter(&mask).map_err(err)
        };
        let accepted = only(Outcome::Accepted)?;
        let conflicts = only(Outcome::Conflict)?;
        let counts = &mut self.ledger.counts;
        counts.accepted = accepted.height() as u64;
        counts.duplicates = outcomes
            .iter()
            .filter(|&&o| o == Outcome::Duplicate)
            .count() as u64;
        counts.conflicts = conflicts.height() as u64;
        self.quarantine_records(&conflicts, Reason::Conflict)?;
        let c = self.ledger.counts;
        if c.lines_read != c.accepted + c.duplicates + c.quarantined() {
            return Err(Error::Accounting(format!(
                "read {} lines but accepted {} + duplicates {} + quarantined {}",
                c.lines_read,
                c.accepted,
                c.duplicates,
                c.quarantined()
            )));
        }
        let method = describe(reading, slices, in_time.height(), prior.height());
        Ok((accepted, method))
    }

    /// Quarantine rows for records that parsed but do not count.
    fn quarantine_records(&mut self, rows: &DataFrame, reason: Reason) -> Result<()> {
        let err = Error::polars("quarantine");
        let seq = rows
            .column(SEQ)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?;
        let recorded = rows
            .column(col::RECORDED_AT)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?;
        for (seq, recorded) in seq.into_no_null_iter().zip(recorded.into_no_null_iter()) {
            let when = chrono::DateTime::from_timestamp_micros(recorded)
                .map_or_else(|| format!("{recorded} µs"), |t| t.to_rfc3339());
            self.ledger.quarantined.push(Quarantined {
                file: (seq >> 32) as usize,
                line: (seq & 0xFFFF_FFFF) as u64,
                reason,
                detail: format!("recorded_at {when}"),
                raw: String::new(),
            });
        }
        Ok(())
    }
}

/// How dedup keys the readings of `frames`: packed into one integer when their bounds allow.
fn reading_key(frames: &[&DataFrame]) -> Result<ReadingKey> {
    let err = Error::polars("dedup");
    let (mut earliest, mut latest, mut max_meter) = (i64::MAX, i64::MIN, 0i64);
    for frame in frames {
        let long = |name: &str| {
            frame
                .column(name)
                .and_then(|c| c.i64().cloned())
                .map_err(err)
        };
        let (recorded, meters) = (long(col::RECORDED_AT)?, long(col::METER)?);
        earliest = earliest.min(recorded.min().unwrap_or(i64::MAX));
        latest = latest.max(recorded.max().unwrap_or(i64::MIN));
        max_meter = max_meter.max(meters.max().unwrap_or(0));
        if meters.min().is_some_and(|m| m < 0) {
            return Ok(ReadingKey::Pair);
        }
    }
    Ok(ReadingKey::for_bounds(earliest, latest, max_meter))
}

/// `records` in ingestion order: as parsed they are, and then this only checks.
fn in_ingestion_order(records: DataFrame) -> Result<DataFrame> {
    let err = Error::polars("dedup");
    let seq = records
        .column(SEQ)
        .and_then(|c| c.i64().cloned())
        .map_err(err)?;
    let mut last = i64::MIN;
    let ordered = seq.into_no_null_iter().all(|s| {
        let ok = s > last;
        last = s;
        ok
    });
    if ordered {
        return Ok(records);
    }
    records
        .sort([SEQ], SortMultipleOptions::default())
        .map_err(err)
}

/// The accepted readings as `(meter, customer, recorded_at)` keys.
fn readings_of(accepted: &DataFrame) -> Result<Vec<(i64, i64, i64)>> {
    let long = |name: &str| {
        accepted
            .column(name)
            .and_then(|c| c.i64().cloned())
            .map_err(Error::polars("dedup"))
    };
    let (meters, customers) = (long(col::METER)?, long(col::CUSTOMER)?);
    let recorded = long(col::RECORDED_AT)?;
    Ok(meters
        .into_no_null_iter()
        .zip(customers.into_no_null_iter())
        .zip(recorded.into_no_null_iter())
        .map(|((meter, customer), recorded_at)| (meter, customer, recorded_at))
        .collect())
}

/// Per recording hour, the meters of `records` whose stored readings may hold a copy of one of
/// them (what dedup must read).
fn may_hold(records: &DataFrame, meters: &MeterIndex) -> Result<BTreeMap<i64, BTreeSet<i64>>> {
    let err = Error::polars("dedup");
    let long = |name: &str| records.column(name).and_then(|c| c.i64().cloned());
    let (hours, ids, recorded) = (
        long(col::USAGE_HOUR).map_err(err)?,
        long(col::METER).map_err(err)?,
        long(col::RECORDED_AT).map_err(err)?,
    );
    let mut touched: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for ((hour, meter), recorded_at) in hours
        .into_no_null_iter()
        .zip(ids.into_no_null_iter())
        .zip(recorded.into_no_null_iter())
    {
        if meters.may_hold(meter, recorded_at) {
            touched.entry(hour).or_default().insert(meter);
        }
    }
    Ok(touched)
}

/// The `(customer, usage_hour, meter)` of the accepted readings that are the first of their
/// meter for their customer and hour (`first`, from the meter index): `meter_count` counts a
/// meter once per customer and hour.
fn new_meters(readings: &[(i64, i64, i64)], first: &[bool]) -> Result<DataFrame> {
    let (mut customers, mut hours, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (&(meter, customer, recorded_at), _) in readings.iter().zip(first).filter(|(_, f)| **f) {
        customers.push(customer);
        hours.push(recorded_at.div_euclid(HOUR_MICROS));
        ids.push(meter);
    }
    DataFrame::new(
        customers.len(),
        vec![
            long_column(col::CUSTOMER, customers),
            long_column(col::USAGE_HOUR, hours),
            long_column(col::METER, ids),
        ],
    )
    .map_err(Error::polars("dedup"))
}

/// The distinct hour indexes in `column`.
pub(super) fn hour_set(df: &DataFrame, column: &str) -> Result<BTreeSet<i64>> {
    let c = df
        .column(column)
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("hours"))?;
    Ok(c.into_no_null_iter().collect())
}

/// The columns dedup keys and compares, of one frame.
struct Columns<'a> {
    meter: Cow<'a, [i64]>,
    recorded_at: Cow<'a, [i64]>,
    customer: Cow<'a, [i64]>,
    usage_ml: Cow<'a, [i64]>,
}

impl<'a> Columns<'a> {
    fn of(frame: &'a DataFrame) -> Result<Self> {
        let long = |name: &str| long_values(frame, name, "dedup");
        Ok(Self {
            meter: long(col::METER)?,
            recorded_at: long(col::RECORDED_AT)?,
            customer: long(col::CUSTOMER)?,
            usage_ml: long(col::USAGE_ML)?,
        })
    }

    fn readings(&self) -> Readings<'_> {
        Readings {
            meter: &self.meter,
            recorded_at: &self.recorded_at,
            customer: &self.customer,
            usage_ml: &self.usage_ml,
        }
    }
}

/// What `explain` shows of the dedup pass.
fn describe(reading: ReadingKey, slices: usize, records: usize, stored: usize) -> String {
    let key = match reading {
        ReadingKey::Packed { .. } => "meter and recorded_at packed into one integer",
        ReadingKey::Pair => "the pair (meter, recorded_at)",
    };
    let sliced = if slices > 1 {
        format!(", in {slices} slices by meter (one map at a time)")
    } else {
        String::new()
    };
    format!(
        "first copy wins, one pass in ingestion order{sliced}:\n  \
         a hash map from each reading ({key}) to its first copy's customer and usage,\n  \
         filled with {stored} stored readings of the touched hours, then with the batch's \
         {records} in-time records;\n  \
         a later copy with the same payload is a duplicate, with another a conflict"
    )
}
