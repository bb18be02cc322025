//! What is kept out of the totals and why: every unusable line and every record that does not
//! count (late, future, conflicting), with its file, line and reason, as `quarantine` rows.

use std::path::Path;

use polars::prelude::DataFrame;

use crate::error::{Error, Result};
use crate::storage::Location;
use crate::table::{QUARANTINE, Values};

/// Why a line or record is in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The line is not UTF-8.
    NotUtf8,
    /// The line is empty.
    EmptyLine,
    /// The line is longer than [`MAX_LINE_BYTES`]; it is not parsed.
    LineTooLong,
    /// The line is not a JSON object (includes truncated lines).
    InvalidJson,
    /// A required field is missing, or has the wrong JSON type.
    BadField,
    /// An id is empty.
    EmptyId,
    /// A timestamp is not RFC 3339 with an offset.
    BadTimestamp,
    /// `usage_liters` is negative, has more than 3 decimals or does not fit.
    BadUsage,
    /// The whole file arrived in an ingestion-hour folder older than the watermark.
    FileBehindWatermark,
    /// Recorded more than 7 days before its ingestion hour, or before the watermark.
    Late,
    /// Recorded after its ingestion hour's end plus the clock-skew tolerance.
    Future,
    /// A second copy of a reading with a different payload; the first copy is kept.
    Conflict,
}

impl Reason {
    /// The reason as stored in the quarantine table.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not_utf8",
            Reason::EmptyLine => "empty_line",
            Reason::LineTooLong => "line_too_long",
            Reason::InvalidJson => "invalid_json",
            Reason::BadField => "bad_field",
            Reason::EmptyId => "empty_id",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadUsage => "bad_usage",
            Reason::FileBehindWatermark => "file_behind_watermark",
            Reason::Late => "late",
            Reason::Future => "future",
            Reason::Conflict => "conflict",
        }
    }
}

/// A line or record kept out of the totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Index of the file in the batch.
    pub file: usize,
    /// 1-based line number in the file.
    pub line: u64,
    /// Why it was kept out.
    pub reason: Reason,
    /// Details for a person (the parser's message, the offending value).
    pub detail: String,
    /// The line as written, lossily decoded if it is not UTF-8.
    pub raw: String,
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

/// Fills in the raw text of quarantined records that parsed (late, future, conflicts): file `i`
/// of the batch is `paths[i]`.
pub fn fill_raw_lines(quarantined: &mut [Quarantined], paths: &[&Path]) -> Result<()> {
    let mut by_file: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, q) in quarantined.iter().enumerate() {
        if q.raw.is_empty() {
            by_file.entry(q.file).or_default().push(i);
        }
    }
    for (file, indexes) in by_file {
        let path = paths.get(file).ok_or_else(|| {
            Error::Accounting(format!(
                "a quarantined record names file {file} of a batch of {}",
                paths.len()
            ))
        })?;
        let bytes = Location::of_path(path).read_existing()?;
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        for i in indexes {
            let q = &mut quarantined[i];
            let line = q
                .line
                .checked_sub(1)
                .and_then(|l| lines.get(l as usize))
                .ok_or_else(|| {
                    Error::Accounting(format!(
                        "{}: a quarantined record names line {}, the file has {}",
                        path.display(),
                        q.line,
                        lines.len()
                    ))
                })?;
            q.raw = String::from_utf8_lossy(line).into_owned();
        }
    }
    Ok(())
}

/// The `quarantine` rows of batch `batch`: file `i` of the batch is `rel_paths[i]`.
pub fn frame(batch: i64, rows: &[Quarantined], rel_paths: &[&str]) -> Result<DataFrame> {
    let file = |q: &Quarantined| -> Result<&str> {
        rel_paths.get(q.file).copied().ok_or_else(|| {
            Error::Accounting(format!(
                "a quarantined record names file {} of a batch of {}",
                q.file,
                rel_paths.len()
            ))
        })
    };
    let source_file = rows
        .iter()
        .map(|q| file(q).map(std::borrow::Cow::Borrowed))
        .collect::<Result<Vec<_>>>()?;
    QUARANTINE.frame(vec![
        Values::Long(vec![batch; rows.len()]),
        Values::Str(source_file),
        Values::Long(rows.iter().map(|q| q.line as i64).collect()),
        Values::Str(rows.iter().map(|q| q.reason.as_str().into()).collect()),
        Values::Str(rows.iter().map(|q| q.detail.as_str().into()).collect()),
        Values::Str(rows.iter().map(|q| clip(&q.raw)).collect()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_clipped_with_their_length() {
        let long = "é".repeat(RAW_LINE_KEPT);
        let clipped = clip(&long);
        assert!(clipped.len() < RAW_LINE_KEPT + 40);
        assert!(clipped.ends_with(&format!("... [{} bytes in all]", long.len())));
        assert_eq!(clip("short"), "short");
    }
}
