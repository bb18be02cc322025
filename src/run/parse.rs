//! The parse step: the batch's files into typed records; unusable lines into the ledger.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{ParseReport, Run, Stage};
use crate::error::{Error, Result};
use crate::input::parse_files;
use crate::quarantine::Reason;

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
        let parsed = parse_files(&plan.files, plan.watermark_before)?;
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
            head: parsed.records.head(Some(5)),
        };
        self.ledger.quarantined.extend(parsed.quarantined);
        self.stage = Stage::Parsed(parsed.records);
        self.step_done("parse", t);
        Ok(report)
    }
}
