//! The parse step: the batch's files into typed records; unusable lines into the ledger.

use std::collections::BTreeMap;
use std::time::Instant;

use polars::prelude::{Column, DataFrame};

use super::{ParseReport, Run, Stage};
use crate::error::{Error, Result};
use crate::input::{Parsed, parse_files};
use crate::quarantine::Reason;
use crate::table::col;

impl Run {
    /// Reads and parses the batch's files.
    /// Once per plan: to parse again, plan again.
    pub fn parse(&mut self) -> Result<ParseReport> {
        let t = Instant::now();
        if !matches!(self.stage, Stage::Planned) {
            return Err(Error::StepOrder {
                step: "parse",
                needs: "plan",
            });
        }
        let plan = &self.batch.plan;
        let mut parsed = parse_files(&plan.files, plan.watermark_before)?;
        let counts = &mut self.ledger.counts;
        counts.lines_read = parsed.lines_read;
        let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
        for q in &parsed.quarantined {
            match q.reason {
                Reason::FileBehindWatermark => counts.late += 1,
                _ => counts.malformed += 1,
            }
            *by_reason.entry(q.reason.as_str()).or_default() += 1;
        }
        let report = ParseReport {
            files: plan.files.len(),
            lines_read: parsed.lines_read,
            records: parsed.records.height(),
            quarantined: by_reason,
            head: named_head(&parsed)?,
        };
        self.ledger
            .quarantined
            .extend(std::mem::take(&mut parsed.quarantined));
        self.stage = Stage::Parsed(parsed);
        self.step_done("parse", t);
        Ok(report)
    }
}

/// The first parsed records, with their meter and customer ids.
fn named_head(parsed: &Parsed) -> Result<DataFrame> {
    let err = Error::polars("parse");
    let head = parsed.records.head(Some(5));
    let name = |column: &str, ids: &[String]| -> Result<Column> {
        let indexes = head
            .column(column)
            .and_then(|c| c.i64().cloned())
            .map_err(err)?;
        let names: Vec<&str> = indexes
            .into_no_null_iter()
            .map(|i| ids.get(i as usize).map_or("", String::as_str))
            .collect();
        Ok(Column::new(column.into(), names))
    };
    let meters = name(col::METER, &parsed.meters)?;
    let customers = name(col::CUSTOMER, &parsed.customers)?;
    let mut head = head;
    head.with_column(meters)
        .and_then(|h| h.with_column(customers))
        .map_err(err)?;
    Ok(head)
}
