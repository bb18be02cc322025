//! Parsing the usage log: JSON lines into typed, exact columns, bad lines into quarantine rows.
//!
//! Usage is read from the number's own text (never through a float) into integer milliliters,
//! timestamps must carry a UTC offset, and every line that cannot be used becomes a
//! [`Quarantined`] row with its file, line number, raw text and reason. Files are split into
//! chunks at line boundaries and parsed on all cores; the output keeps the input order.

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::DateTime;
use polars::prelude::{Column, DataFrame, IntoColumn, NamedFrom, Series};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::discover::PlannedFile;
use crate::error::{Error, Result};
use crate::hours::HOUR_MICROS;

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

/// One record as written in the log. Unknown extra fields are ignored.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    meter_id: Cow<'a, str>,
    #[serde(borrow)]
    customer_id: Cow<'a, str>,
    #[serde(borrow)]
    recorded_at: Cow<'a, str>,
    #[serde(borrow)]
    usage_liters: &'a RawValue,
    #[serde(borrow)]
    #[allow(dead_code)]
    // Informational, but part of the record's contract: it must be a string.
    ingested_at: Cow<'a, str>,
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
            return Err(Error::Checkpoint {
                path: PathBuf::from(&f.path),
                reason: format!("planned with {} bytes, now {} bytes", f.size, bytes.len()),
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
    .map_err(|_| Error::Protocol("a parser thread panicked; nothing was committed".to_owned()))?;
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

/// A valid record.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    meter_id: String,
    customer_id: String,
    recorded_at: i64,
    usage_ml: i64,
}

/// The longest line parsed: a reading takes about 200 bytes, so a longer line is a fault
/// (runaway writer, binary data); it is quarantined unread, keeping parse memory bounded.
pub const MAX_LINE_BYTES: usize = 1 << 20;

fn parse_line(raw: &[u8]) -> Result<Record, (Reason, String)> {
    if raw.len() > MAX_LINE_BYTES {
        return Err((
            Reason::LineTooLong,
            format!("{} bytes, more than {MAX_LINE_BYTES}", raw.len()),
        ));
    }
    let text = std::str::from_utf8(raw).map_err(|e| (Reason::NotUtf8, e.to_string()))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err((Reason::EmptyLine, String::new()));
    }
    let line: Line<'_> = serde_json::from_str(text).map_err(|e| {
        let reason = if e.is_data() {
            Reason::BadField
        } else {
            Reason::InvalidJson
        };
        (reason, e.to_string())
    })?;
    if line.meter_id.trim().is_empty() || line.customer_id.trim().is_empty() {
        return Err((
            Reason::EmptyId,
            "meter_id and customer_id must not be empty".to_owned(),
        ));
    }
    let recorded_at = DateTime::parse_from_rfc3339(&line.recorded_at)
        .map_err(|e| {
            (
                Reason::BadTimestamp,
                format!("recorded_at `{}`: {e}", line.recorded_at),
            )
        })?
        .timestamp_micros();
    let usage_ml = usage_ml(line.usage_liters.get())?;
    if usage_ml > MAX_READING_ML {
        return Err((
            Reason::BadUsage,
            format!(
                "usage_liters {}: implausible, more than {} liters in one reading",
                line.usage_liters.get(),
                MAX_READING_ML / 1000
            ),
        ));
    }
    Ok(Record {
        meter_id: line.meter_id.into_owned(),
        customer_id: line.customer_id.into_owned(),
        recorded_at,
        usage_ml,
    })
}

/// The largest usage one reading may report: 1,000 m³. The largest utility meters pass about
/// 2,000 m³ an hour, so a reading above this is a meter or transmission fault; it is quarantined
/// for review rather than billed.
pub const MAX_READING_ML: i64 = 1_000_000_000;

/// Exact milliliters from the text of a JSON number of liters.
fn usage_ml(number: &str) -> Result<i64, (Reason, String)> {
    let bad = |why: &str| (Reason::BadUsage, format!("usage_liters {number}: {why}"));
    if !number.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err((
            Reason::BadField,
            format!("usage_liters must be a number, got {number}"),
        ));
    }
    if let Some(magnitude) = number.strip_prefix('-') {
        // `-0` and `-0.000` are zero, not negative.
        if !is_zero(magnitude) {
            return Err(bad("negative"));
        }
        return usage_ml(magnitude);
    }
    let (mantissa, exponent) = match number.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = number[i + 1..]
                .trim_start_matches('+')
                .parse()
                .map_err(|_| bad("bad exponent"))?;
            (&number[..i], e)
        }
        None => (number, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    // value = digits * 10^(exponent - frac.len()); in ml: times 10^3.
    let mut scale = exponent - frac.len() as i64 + 3;
    let mut digits = digits.to_owned();
    while scale < 0 {
        if !digits.ends_with('0') {
            return Err(bad("more than 3 decimals"));
        }
        digits.pop();
        scale += 1;
    }
    if digits.len() as i64 + scale > 18 {
        return Err(bad("too large"));
    }
    let base: i64 = digits.parse().map_err(|_| bad("not a number"))?;
    Ok(base * 10i64.pow(scale as u32))
}

fn is_zero(number: &str) -> bool {
    number
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().all(|b| b == b'0' || b == b'.'))
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
            Series::new("meter_id".into(), self.meter_id).into_column(),
            Series::new("customer_id".into(), self.customer_id).into_column(),
            Series::new("recorded_at".into(), self.recorded_at).into_column(),
            Series::new("usage_hour".into(), self.usage_hour).into_column(),
            Series::new("usage_ml".into(), self.usage_ml).into_column(),
            Series::new("ingest_hour".into(), self.ingest_hour).into_column(),
            Series::new("seq".into(), self.seq).into_column(),
        ];
        DataFrame::new(height, columns).map_err(Error::polars("building the parsed batch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_exact_milliliters() {
        for (text, ml) in [
            ("0", 0),
            ("-0", 0),
            ("-0.000", 0),
            ("1", 1000),
            ("1.5", 1500),
            ("0.007", 7),
            ("12.345", 12345),
            ("12.3450", 12345),
            ("1e3", 1_000_000),
            ("1.5E-2", 15),
            ("0.1", 100),
            ("0e-99999", 0),
            ("-0e5", 0),
            ("1.5000e1", 15000),
            ("9007199254740.993", 9_007_199_254_740_993),
        ] {
            assert_eq!(usage_ml(text), Ok(ml), "{text}");
        }
        for (text, reason) in [
            ("-1", Reason::BadUsage),
            ("1.2345", Reason::BadUsage),
            ("1e-4", Reason::BadUsage),
            ("99999999999999999", Reason::BadUsage),
            ("\"1.5\"", Reason::BadField),
            ("null", Reason::BadField),
            ("true", Reason::BadField),
        ] {
            assert_eq!(usage_ml(text).map_err(|e| e.0), Err(reason), "{text}");
        }
    }

    fn reason_of(line: &[u8]) -> Option<Reason> {
        parse_line(line).err().map(|e| e.0)
    }

    #[test]
    fn every_malformed_line_has_its_reason() {
        let good = r#"{"meter_id":"M1","customer_id":"C1","recorded_at":"2026-03-14T05:07:00+01:00","usage_liters":1.25,"ingested_at":"2026-03-14T05:09:00Z","extra":[1]}"#;
        assert_eq!(
            parse_line(good.as_bytes()),
            Ok(Record {
                meter_id: "M1".into(),
                customer_id: "C1".into(),
                recorded_at: 1_773_461_220_000_000, // 04:07 UTC
                usage_ml: 1250,
            })
        );
        let cases: [(&[u8], Reason); 9] = [
            (b"\xff\xfe{}", Reason::NotUtf8),
            (b"   ", Reason::EmptyLine),
            (br#"{"meter_id":"M1","customer_id":"C1","recor"#, Reason::InvalidJson),
            (br#"{"meter_id":"M1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::BadField),
            (br#"{"meter_id":"M1","customer_id":7,"recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::BadField),
            (br#"{"meter_id":"","customer_id":"C1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::EmptyId),
            (br#"{"meter_id":"M1","customer_id":"C1","recorded_at":"2026-03-14T05:07:00","usage_liters":1,"ingested_at":"x"}"#, Reason::BadTimestamp),
            (br#"{"meter_id":"M1","customer_id":"C1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":-2.5,"ingested_at":"x"}"#, Reason::BadUsage),
            (br#"{"meter_id":"M1","customer_id":"C1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1000000.001,"ingested_at":"x"}"#, Reason::BadUsage),
        ];
        for (line, reason) in cases {
            assert_eq!(
                reason_of(line),
                Some(reason),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // Just over the limit: not even parsed (the prefix would be valid JSON).
        let mut long = good.as_bytes().to_vec();
        long.resize(MAX_LINE_BYTES + 1, b' ');
        assert_eq!(reason_of(&long), Some(Reason::LineTooLong));
        long.truncate(MAX_LINE_BYTES);
        assert_eq!(
            reason_of(&long).map(|_| ()),
            None,
            "a long but valid line parses"
        );
    }

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
