//! The dedup step: the watermark (late and future records into the ledger), then first copy
//! wins against the batch and the dedup state (conflicts into the ledger), and the accounting
//! check `read = accepted + duplicates + quarantined`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use polars::prelude::*;

use super::{Classified, DedupReport, Run, Stage};
use crate::error::{Error, Result};
use crate::input::SEQ;
use crate::quarantine::{Quarantined, Reason};
use crate::query::{OUTCOME, check_watermark, classify, outcome};
use crate::table::{DEDUP_STATE, block_on, col};

impl Run {
    /// Applies the watermark and removes duplicates against the dedup state. Takes the parsed
    /// records (their memory is released as they are classified): once per parse.
    pub fn dedup(&mut self) -> Result<DedupReport> {
        let t = Instant::now();
        let records = match std::mem::replace(&mut self.stage, super::Stage::Planned) {
            Stage::Parsed(records) => records,
            other => {
                self.stage = other;
                return Err(Error::StepOrder {
                    step: "dedup",
                    needs: "parse",
                });
            }
        };
        let err = Error::polars;
        let checked = check_watermark(
            records.lazy(),
            self.batch.plan.watermark_before,
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
        self.ledger.counts.late += late.height() as u64;
        self.ledger.counts.future += future.height() as u64;

        // Only the meters the batch has readings from, in the recording hours it touches.
        let touched = meters_by_hour(&in_time)?;
        let state = self.open(&DEDUP_STATE)?;
        let prior = block_on(state.read_hours_matching(col::METER_ID, &touched))??;
        let query = classify(in_time.lazy(), prior.clone().lazy()).map_err(err("dedup"))?;
        let plan = query.explain(true).map_err(err("dedup"))?;
        let classified = query.collect().map_err(err("dedup"))?;
        let only = |o: &str| with_outcome(&classified, o).map_err(err("dedup"));
        let accepted = only(outcome::ACCEPTED)?;
        let conflicts = only(outcome::CONFLICT)?;
        let counts = &mut self.ledger.counts;
        counts.accepted = accepted.height() as u64;
        counts.duplicates = only(outcome::DUPLICATE)?.height() as u64;
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
        let affected_hours = hour_set(&accepted, col::USAGE_HOUR)?;
        let report = DedupReport {
            counts: c,
            hours_touched: affected_hours.len(),
            prior_rows: prior.height(),
            plan,
        };
        self.stage = Stage::Classified(Classified {
            accepted,
            prior,
            affected_hours,
        });
        self.step_done("dedup", t);
        Ok(report)
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

/// The distinct meters of `records` per recording hour.
fn meters_by_hour(records: &DataFrame) -> Result<BTreeMap<i64, BTreeSet<String>>> {
    let err = Error::polars("dedup");
    let pairs = records
        .clone()
        .lazy()
        .select([col(col::USAGE_HOUR), col(col::METER_ID)])
        .unique(None, UniqueKeepStrategy::Any)
        .collect()
        .map_err(err)?;
    let hours = pairs.column(col::USAGE_HOUR).and_then(|c| c.i64().cloned());
    let meters = pairs.column(col::METER_ID).and_then(|c| c.str().cloned());
    let (hours, meters) = (hours.map_err(err)?, meters.map_err(err)?);
    let mut touched: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (hour, meter) in hours.into_no_null_iter().zip(meters.iter().flatten()) {
        touched.entry(hour).or_default().insert(meter.to_owned());
    }
    Ok(touched)
}

fn with_outcome(df: &DataFrame, outcome: &str) -> PolarsResult<DataFrame> {
    df.clone()
        .lazy()
        .filter(col(OUTCOME).eq(lit(outcome)))
        .collect()
}

/// The distinct hour indexes in `column`.
pub(super) fn hour_set(df: &DataFrame, column: &str) -> Result<BTreeSet<i64>> {
    let c = df
        .column(column)
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("hours"))?;
    Ok(c.into_no_null_iter().collect())
}
