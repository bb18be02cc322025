//! Parsing a batch of log files: JSON lines into typed, exact columns, bad lines into quarantine
//! rows.
//!
//! Files are split into chunks at line boundaries and parsed on all cores (each line by
//! [`super::line`]); the output keeps the input order. Every line that cannot be used becomes a
//! [`Quarantined`] row with its file, line number, raw text and reason.

use std::path::PathBuf;

use polars::prelude::{Column, DataFrame, IntoColumn, NamedFrom, Series};

use super::discover::PlannedFile;
use super::line::parse_line;
use crate::error::{Error, Result};
use crate::hours::HOUR_MICROS;
use crate::quarantine::{Quarantined, Reason};
use crate::table::col;

/// Column of the parsed records: ingestion order in the batch (file index << 32 | line).
pub const SEQ: &str = "seq";
/// Column of the parsed records: hour index of the record's ingestion-hour folder.
pub const INGEST_HOUR: &str = "ingest_hour";

/// The parsed batch.
#[derive(Debug)]
pub struct Parsed {
    /// Valid records: `meter_id`, `customer_id` (str), `recorded_at` (µs since the epoch, UTC),
    /// `usage_hour` (hour index of `recorded_at`), `usage_ml`, `ingest_hour` (hour index of
    /// the file's folder), `seq` (ingestion order in the batch: file index << 32 | line).
    pub records: DataFrame,
    /// Lines that could not be parsed.
    pub quarantined: Vec<Quarantined>,
    /// Lines read, valid or not.
    pub lines_read: u64,
}

/// Columns of valid records, filled by one chunk.
#[derive(Default)]
struct Columns {
    meter_id: Vec<String>,
    customer_id: Vec<String>,
    recorded_at: Vec<i64>,
    usage_hour: Vec<i64>,
    usage_ml: Vec<i64>,
    ingest_hour: Vec<i64>,
    seq: Vec<i64>,
}

/// A contiguous run of whole lines of one file.
struct Chunk<'a> {
    file: usize,
    ingest_hour: i64,
    first_line: u64,
    bytes: &'a [u8],
    behind_watermark: bool,
}

/// Reads and parses the batch's files. Files in folders older than `watermark_hour` are
/// quarantined whole.
pub fn parse_files(files: &[PlannedFile], watermark_hour: Option<i64>) -> Result<Parsed> {
    let contents = files
        .iter()
        .map(|f| std::fs::read(&f.path).map_err(|e| Error::io("reading", &f.path, e)))
        .collect::<Result<Vec<_>>>()?;
    for (f, bytes) in files.iter().zip(&contents) {
        if bytes.len() as u64 != f.size {
            return Err(Error::InputChanged {
                path: PathBuf::from(&f.path),
                when: "planned",
                before: f.size,
                now: bytes.len() as u64,
            });
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let total: usize = contents.iter().map(Vec::len).sum();
    let target = (total / (threads * 4)).max(1 << 20);
    let mut chunks = Vec::new();
    for (file, (f, bytes)) in files.iter().zip(&contents).enumerate() {
        let behind_watermark = watermark_hour.is_some_and(|w| f.ingest_hour < w);
        split_lines(bytes, target, |first_line, bytes| {
            chunks.push(Chunk {
                file,
                ingest_hour: f.ingest_hour,
                first_line,
                bytes,
                behind_watermark,
            });
        });
    }
    let per_thread = chunks.len().div_ceil(threads).max(1);
    let results: Vec<(Columns, Vec<Quarantined>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .chunks(per_thread)
            .map(|group| s.spawn(move || parse_group(group)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(|_| Error::Panicked {
        what: "a parser thread".to_owned(),
    })?;
    let mut all = Columns::default();
    let mut quarantined = Vec::new();
    let mut lines_read = 0;
    for (cols, q, n) in results {
        all.append(cols);
        quarantined.extend(q);
        lines_read += n;
    }
    Ok(Parsed {
        records: all.into_frame()?,
        quarantined,
        lines_read,
    })
}

/// Calls `emit(first_line_number, bytes)` for chunks of about `target` bytes of whole lines.
fn split_lines<'a>(bytes: &'a [u8], target: usize, mut emit: impl FnMut(u64, &'a [u8])) {
    let (mut start, mut line) = (0usize, 1u64);
    while start < bytes.len() {
        let mut end = (start + target).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        let chunk = &bytes[start..end];
        emit(line, chunk);
        line += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        start = end;
    }
}

fn parse_group(chunks: &[Chunk<'_>]) -> (Columns, Vec<Quarantined>, u64) {
    let mut cols = Columns::default();
    let mut quarantined = Vec::new();
    let mut lines_read = 0;
    for chunk in chunks {
        let text = chunk.bytes.strip_suffix(b"\n").unwrap_or(chunk.bytes);
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            lines_read += 1;
            let line = chunk.first_line + i as u64;
            let outcome = if chunk.behind_watermark {
                Err((
                    Reason::FileBehindWatermark,
                    "the file's ingestion hour is older than the watermark".to_owned(),
                ))
            } else {
                parse_line(raw)
            };
            match outcome {
                Ok(r) => {
                    cols.usage_hour.push(r.recorded_at.div_euclid(HOUR_MICROS));
                    cols.meter_id.push(r.meter_id);
                    cols.customer_id.push(r.customer_id);
                    cols.recorded_at.push(r.recorded_at);
                    cols.usage_ml.push(r.usage_ml);
                    cols.ingest_hour.push(chunk.ingest_hour);
                    cols.seq.push(((chunk.file as i64) << 32) | line as i64);
                }
                Err((reason, detail)) => quarantined.push(Quarantined {
                    file: chunk.file,
                    line,
                    reason,
                    detail,
                    raw: String::from_utf8_lossy(raw).into_owned(),
                }),
            }
        }
    }
    (cols, quarantined, lines_read)
}

impl Columns {
    fn append(&mut self, other: Columns) {
        self.meter_id.extend(other.meter_id);
        self.customer_id.extend(other.customer_id);
        self.recorded_at.extend(other.recorded_at);
        self.usage_hour.extend(other.usage_hour);
        self.usage_ml.extend(other.usage_ml);
        self.ingest_hour.extend(other.ingest_hour);
        self.seq.extend(other.seq);
    }

    fn into_frame(self) -> Result<DataFrame> {
        let height = self.seq.len();
        let columns: Vec<Column> = vec![
            Series::new(col::METER_ID.into(), self.meter_id).into_column(),
            Series::new(col::CUSTOMER_ID.into(), self.customer_id).into_column(),
            Series::new(col::RECORDED_AT.into(), self.recorded_at).into_column(),
            Series::new(col::USAGE_HOUR.into(), self.usage_hour).into_column(),
            Series::new(col::USAGE_ML.into(), self.usage_ml).into_column(),
            Series::new(INGEST_HOUR.into(), self.ingest_hour).into_column(),
            Series::new(SEQ.into(), self.seq).into_column(),
        ];
        DataFrame::new(height, columns).map_err(Error::polars("building the parsed batch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_line_once() {
        let text = b"a\nbb\nccc\n\ndddd\ne";
        for target in 1..20 {
            let mut seen = Vec::new();
            split_lines(text, target, |first, bytes| {
                let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                for (i, l) in body.split(|&b| b == b'\n').enumerate() {
                    seen.push((first + i as u64, l.to_vec()));
                }
            });
            let expected: Vec<(u64, Vec<u8>)> = [&b"a"[..], b"bb", b"ccc", b"", b"dddd", b"e"]
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u64 + 1, l.to_vec()))
                .collect();
            assert_eq!(seen, expected, "target {target}");
        }
    }
}
