//! One line of the usage log: a JSON object into a typed record, or the reason it cannot be one.
//!
//! Usage is read from the number's own text (never through a float) into integer milliliters,
//! timestamps must carry a UTC offset, ids must not be empty. Unknown extra fields are ignored.

use std::borrow::Cow;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::quarantine::Reason;

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

/// A valid record.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub meter_id: String,
    pub customer_id: String,
    pub recorded_at: i64,
    pub usage_ml: i64,
}

/// The longest line parsed: a reading takes about 200 bytes, so a longer line is a fault
/// (runaway writer, binary data); it is quarantined unread, keeping parse memory bounded.
pub const MAX_LINE_BYTES: usize = 1 << 20;

pub(super) fn parse_line(raw: &[u8]) -> Result<Record, (Reason, String)> {
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
}
