//! One line of the usage log: a JSON object into a typed record, or the reason it cannot be one.
//!
//! Usage is read from the number's own text (never through a float) into integer milliliters,
//! timestamps must carry a UTC offset, ids must not be empty. Unknown extra fields are ignored.
//!
//! Two readers give the same answer. [`fast_fields`] recognizes the common shape of a line (an
//! object of exactly the five fields, in any order, with plain strings and a number) in one pass
//! without allocating; anything else (escapes, whitespace, extra fields, a missing or repeated
//! field, a wrong type, bad JSON) goes to `serde_json`, which also gives the precise error. The
//! checks after that ([`record_from`]) are shared, so both readers accept and reject the same
//! lines with the same records; a test compares them on many lines.

use std::borrow::Cow;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::quarantine::Reason;

/// The longest line parsed: a reading takes about 200 bytes, so a longer line is a fault
/// (runaway writer, binary data); it is quarantined unread, keeping parse memory bounded.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// The largest usage one reading may report: 1,000 m³. The largest utility meters pass about
/// 2,000 m³ an hour, so a reading above this is a meter or transmission fault; it is quarantined
/// for review rather than billed.
pub const MAX_READING_ML: i64 = 1_000_000_000;

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

/// The fields of a line, as text.
#[derive(Debug, PartialEq, Eq)]
struct Fields<'a> {
    meter_id: Cow<'a, str>,
    customer_id: Cow<'a, str>,
    recorded_at: Cow<'a, str>,
    usage_liters: &'a str,
}

/// A valid record; the ids borrow from the line unless it escaped them.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub meter_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    /// µs since the epoch, UTC.
    pub recorded_at: i64,
    pub usage_ml: i64,
}

/// One line (without its `\n`) as a record, or why it is not one.
pub(super) fn parse_line(raw: &[u8]) -> Result<Record<'_>, (Reason, String)> {
    if raw.len() > MAX_LINE_BYTES {
        return Err((
            Reason::LineTooLong,
            format!("{} bytes, more than {MAX_LINE_BYTES}", raw.len()),
        ));
    }
    let text = std::str::from_utf8(raw).map_err(|e| (Reason::NotUtf8, e.to_string()))?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    let fields = match fast_fields(text) {
        Some(fields) => fields,
        None => serde_fields(text)?,
    };
    record_from(fields)
}

/// The fields through `serde_json`: any valid JSON object, with its precise error otherwise.
fn serde_fields(text: &str) -> Result<Fields<'_>, (Reason, String)> {
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
    Ok(Fields {
        meter_id: line.meter_id,
        customer_id: line.customer_id,
        recorded_at: line.recorded_at,
        usage_liters: line.usage_liters.get(),
    })
}

/// The checks every record passes, whichever reader found its fields.
fn record_from(fields: Fields<'_>) -> Result<Record<'_>, (Reason, String)> {
    if is_blank(&fields.meter_id) || is_blank(&fields.customer_id) {
        return Err((
            Reason::EmptyId,
            "meter_id and customer_id must not be empty".to_owned(),
        ));
    }
    let recorded_at = timestamp_micros(&fields.recorded_at).map_err(|e| {
        (
            Reason::BadTimestamp,
            format!("recorded_at `{}`: {e}", fields.recorded_at),
        )
    })?;
    let usage_ml = usage_ml(fields.usage_liters)?;
    if usage_ml > MAX_READING_ML {
        return Err((
            Reason::BadUsage,
            format!(
                "usage_liters {}: implausible, more than {} liters in one reading",
                fields.usage_liters,
                MAX_READING_ML / 1000
            ),
        ));
    }
    Ok(Record {
        meter_id: fields.meter_id,
        customer_id: fields.customer_id,
        recorded_at,
        usage_ml,
    })
}

/// Whether `id` is empty or only whitespace. An id starting with a visible ASCII character
/// (every usual id) is answered without scanning it.
fn is_blank(id: &str) -> bool {
    !id.as_bytes().first().is_some_and(u8::is_ascii_graphic) && id.trim().is_empty()
}

/// The fields of a line in the common shape, or `None` to let `serde_json` decide: an object
/// (no whitespace) of exactly the five fields, each once, in any order, with strings free of
/// escapes and control characters and `usage_liters` a number in JSON's grammar.
fn fast_fields(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return None;
    }
    let mut found: [Option<&str>; 5] = [None; 5];
    let mut i = 1;
    loop {
        let (key, next) = plain_string(text, i)?;
        if b.get(next) != Some(&b':') {
            return None;
        }
        let slot = match key.as_bytes() {
            b"meter_id" => 0,
            b"customer_id" => 1,
            b"recorded_at" => 2,
            b"usage_liters" => 3,
            b"ingested_at" => 4,
            _ => return None,
        };
        if found[slot].is_some() {
            return None;
        }
        let (value, next) = if slot == 3 {
            let end = number_end(b, next + 1)?;
            (&text[next + 1..end], end)
        } else {
            plain_string(text, next + 1)?
        };
        found[slot] = Some(value);
        match b.get(next) {
            Some(b',') => i = next + 1,
            Some(b'}') if next + 1 == b.len() => break,
            _ => return None,
        }
    }
    let [
        Some(meter_id),
        Some(customer_id),
        Some(recorded_at),
        Some(usage_liters),
        Some(_),
    ] = found
    else {
        return None;
    };
    Some(Fields {
        meter_id: Cow::Borrowed(meter_id),
        customer_id: Cow::Borrowed(customer_id),
        recorded_at: Cow::Borrowed(recorded_at),
        usage_liters,
    })
}

/// A JSON string starting at `start` without escapes or control characters: its contents and
/// the index after its closing quote.
fn plain_string(text: &str, start: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(start) != Some(&b'"') {
        return None;
    }
    let body = start + 1;
    let len = b[body..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    let end = body + len;
    (b[end] == b'"').then(|| (&text[body..end], end + 1))
}

/// The end of a JSON number starting at `start` (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn number_end(b: &[u8], start: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > from).then_some(i)
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits(i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

/// µs since the epoch of an RFC 3339 timestamp with an offset. The common forms
/// (`2026-03-14T05:07:00Z`, `...+01:00`) are read directly; any other is left to chrono, whose
/// error is the message.
fn timestamp_micros(text: &str) -> Result<i64, chrono::ParseError> {
    if let Some(us) = plain_timestamp(text.as_bytes()) {
        return Ok(us);
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_micros())
}

/// `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM`, every field in range; `None` for anything
/// else (which chrono then reads, or refuses).
fn plain_timestamp(b: &[u8]) -> Option<i64> {
    if b.len() != 20 && b.len() != 25 {
        return None;
    }
    let num = |at: usize, len: usize| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(at..at + len)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if (b[4], b[7], b[10], b[13], b[16]) != (b'-', b'-', b'T', b':', b':') {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let offset_secs = match (b.len(), b[19]) {
        (20, b'Z') => 0,
        (25, sign @ (b'+' | b'-')) => {
            if b[22] != b':' {
                return None;
            }
            let (oh, om) = (num(20, 2)?, num(23, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((local - offset_secs) * 1_000_000)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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
    // The significant digits of `int` and `frac` together, from the first that is not 0.
    let all = || int.bytes().chain(frac.bytes());
    let leading = all().take_while(|&c| c == b'0').count();
    let n = all().count() - leading;
    if n == 0 {
        return Ok(0);
    }
    // value = digits * 10^(exponent - frac.len()); in ml: times 10^3.
    let scale = exponent
        .checked_sub(frac.len() as i64)
        .and_then(|s| s.checked_add(3))
        .ok_or_else(|| bad("bad exponent"))?;
    // Digits below a milliliter must all be 0.
    let dropped = usize::try_from(-scale.min(0)).unwrap_or(usize::MAX);
    if dropped >= n || all().skip(leading + n - dropped).any(|c| c != b'0') {
        return Err(bad("more than 3 decimals"));
    }
    let kept = n - dropped;
    let scale = scale.max(0);
    if kept as i64 + scale > 18 {
        return Err(bad("too large"));
    }
    let mut value: i64 = 0;
    for c in all().skip(leading).take(kept) {
        if !c.is_ascii_digit() {
            return Err(bad("not a number"));
        }
        value = value * 10 + i64::from(c - b'0');
    }
    Ok(value * 10i64.pow(scale as u32))
}

fn is_zero(number: &str) -> bool {
    number
        .split(['e', 'E'])
        .next()
        .is_some_and(|m| m.bytes().all(|b| b == b'0' || b == b'.'))
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
            ("1000000", 1_000_000_000),
            ("10e-4", 1),
            ("9007199254740.993", 9_007_199_254_740_993),
        ] {
            assert_eq!(usage_ml(text), Ok(ml), "{text}");
        }
        for (text, reason) in [
            ("-1", Reason::BadUsage),
            ("1.2345", Reason::BadUsage),
            ("1e-4", Reason::BadUsage),
            ("1e-99999999999999999999", Reason::BadUsage),
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
        let cases: [(&[u8], Reason); 11] = [
            (b"\xff\xfe{}", Reason::NotUtf8),
            (b"   ", Reason::EmptyLine),
            (br#"{"meter_id":"M1","customer_id":"C1","recor"#, Reason::InvalidJson),
            (br#"{"meter_id":"M1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::BadField),
            (br#"{"meter_id":"M1","customer_id":7,"recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::BadField),
            (br#"{"meter_id":"","customer_id":"C1","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::EmptyId),
            (br#"{"meter_id":"M1","customer_id":" \t","recorded_at":"2026-03-14T05:07:00Z","usage_liters":1,"ingested_at":"x"}"#, Reason::EmptyId),
            ("{\"meter_id\":\"\u{2003}\",\"customer_id\":\"C1\",\"recorded_at\":\"2026-03-14T05:07:00Z\",\"usage_liters\":1,\"ingested_at\":\"x\"}".as_bytes(), Reason::EmptyId),
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

    /// Lines of the common shape and thousands of variations of them: whatever the fast reader
    /// accepts, serde reads the same; and the whole parse gives the same outcome either way.
    #[test]
    fn both_readers_agree() {
        let base = [
            r#"{"meter_id":"M0000318","customer_id":"C000168","recorded_at":"2026-06-23T22:59:00Z","usage_liters":0.586,"ingested_at":"2026-06-23T23:00:00Z"}"#,
            r#"{"customer_id":"C1","usage_liters":12,"meter_id":"M é 水","ingested_at":"","recorded_at":"2024-02-29T23:59:59-05:30"}"#,
            r#"{"meter_id":"M1","customer_id":" ","recorded_at":"2026-03-14T05:07:00+01:00","usage_liters":1e3,"ingested_at":"x"}"#,
        ];
        let pieces = [
            "", " ", "\"", "\\", "\\\"", "0", "00", "-", ".", "e", "E+", "1", "9", ",", ":", "{",
            "}", "[1]", "null", "true", "Z", "T", "+01:00", "x", "\u{1}", "é",
        ];
        let mut lines: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        for line in base {
            for at in (0..line.len()).filter(|&i| line.is_char_boundary(i)) {
                for piece in pieces {
                    lines.push(format!("{}{piece}{}", &line[..at], &line[at..]));
                    let next = (at + 1..=line.len()).find(|&j| line.is_char_boundary(j));
                    if let Some(next) = next {
                        lines.push(format!("{}{piece}{}", &line[..at], &line[next..]));
                    }
                }
            }
        }
        let mut fast = 0;
        for line in &lines {
            let slow = serde_fields(line).map(|f| record_from(f).map_err(|e| e.0));
            if let Some(fields) = fast_fields(line) {
                fast += 1;
                let from_fast = record_from(fields).map_err(|e| e.0);
                assert_eq!(Ok(from_fast), slow, "{line}");
            }
            // The outcome of the whole parse does not depend on which reader took the line.
            let outcome = parse_line(line.as_bytes()).map_err(|e| e.0);
            let expected = match serde_fields(line) {
                Ok(f) => record_from(f).map_err(|e| e.0),
                Err(e) => Err(e.0),
            };
            assert_eq!(outcome, expected, "{line}");
        }
        assert!(
            fast > 1000,
            "the fast reader took only {fast} of {} lines",
            lines.len()
        );
    }

    #[test]
    fn timestamps_read_as_chrono_reads_them() {
        let start = chrono::DateTime::parse_from_rfc3339("2023-12-30T20:00:00Z")
            .map(|t| t.timestamp())
            .unwrap_or_default();
        // Every 7919 seconds over more than a leap year, in three offsets.
        for secs in (start..start + 370 * 86_400).step_by(7919) {
            let utc = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
            for offset in [0, 3600, -(5 * 3600 + 1800)] {
                let zone = chrono::FixedOffset::east_opt(offset)
                    .unwrap_or(chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
                let local = utc.with_timezone(&zone);
                let text = if offset == 0 {
                    local.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                } else {
                    local.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
                };
                assert_eq!(
                    plain_timestamp(text.as_bytes()),
                    Some(secs * 1_000_000),
                    "{text}"
                );
            }
        }
        for odd in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00z",
            "2026-01-01T00:00:00+0100",
            "2026-01-01T00:00:00.5Z",
        ] {
            assert_eq!(plain_timestamp(odd.as_bytes()), None, "{odd}");
        }
        // What the fast reader leaves to chrono still parses as chrono says.
        assert_eq!(
            timestamp_micros("2026-01-01T00:00:00.5Z").ok(),
            Some(1_767_225_600_500_000)
        );
    }
}
