//! Hours and billing months: the units the tables are partitioned and billed by.
//!
//! An hour is carried as its index since the Unix epoch (`i64`, UTC) and written as
//! `YYYY-MM-DDTHH` (UTC, zero-padded), which sorts in time order and is a safe partition value
//! for every Delta reader. Billing months are computed in the billing time zone.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// Seconds in an hour.
pub const HOUR_SECS: i64 = 3600;
/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = HOUR_SECS * 1_000_000;
/// The watermark delay: records older than this behind their ingestion hour are late.
pub const WATERMARK_HOURS: i64 = 7 * 24;
/// An hour after which any billing month has started again (a month has at most 745 hours).
pub const MONTH_SPAN_HOURS: i64 = 24 * 32;

/// `2026-03-14T05` for the hour index of 2026-03-14 05:00 UTC. Exact for every index (civil
/// calendar arithmetic, no fallback).
pub fn format_hour(hour: i64) -> String {
    let days = hour.div_euclid(24);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}", hour.rem_euclid(24))
}

/// Year, month and day of a day index since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses `2026-03-14T05` into an hour index; `None` for anything not in exactly that form.
pub fn parse_hour(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 13
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape_ok {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0..4)?).ok()?,
        number(5..7)?,
        number(8..10)?,
    )?;
    let hour = number(11..13).filter(|h| *h < 24)?;
    let t = date.and_hms_opt(hour, 0, 0)?.and_utc();
    Some(t.timestamp().div_euclid(HOUR_SECS))
}

fn utc(hour: i64) -> Result<DateTime<Utc>> {
    hour.checked_mul(HOUR_SECS)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or(Error::Hour { hour })
}

/// The billing month (`YYYY-MM`, in `tz`) that the UTC hour `hour` belongs to.
pub fn billing_month(hour: i64, tz: Tz) -> Result<String> {
    let local = utc(hour)?.with_timezone(&tz);
    Ok(format!("{:04}-{:02}", local.year(), local.month()))
}

/// The first UTC hour of the billing month that `hour` belongs to.
pub fn month_start_hour(hour: i64, tz: Tz) -> Result<i64> {
    let local = utc(hour)?.with_timezone(&tz);
    // Local midnight on the first exists in every IANA zone that has whole-hour offsets at
    // midnight (the only zones the parameters accept); `earliest` picks the first instant if it
    // is ambiguous.
    let first = tz
        .with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
        .earliest()
        .ok_or(Error::Hour { hour })?;
    Ok(first.with_timezone(&Utc).timestamp().div_euclid(HOUR_SECS))
}

/// The first UTC hour after the billing month that `hour` belongs to.
pub fn month_end_hour(hour: i64, tz: Tz) -> Result<i64> {
    month_start_hour(month_start_hour(hour, tz)? + MONTH_SPAN_HOURS, tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_trip() {
        let hour = 1_773_464_400 / HOUR_SECS; // 2026-03-14T05:00Z
        assert_eq!(format_hour(hour), "2026-03-14T05");
        assert_eq!(parse_hour("2026-03-14T05"), Some(hour));
        assert_eq!(parse_hour("2026-3-14T05"), None);
        assert_eq!(parse_hour("2026-03-14T24"), None);
        assert_eq!(parse_hour("2026-02-30T00"), None);
        assert_eq!(format_hour(0), "1970-01-01T00");
        assert_eq!(format_hour(-1), "1969-12-31T23");
        // Every hour of four years, leap day included, against chrono.
        let start = parse_hour("2027-12-31T00").unwrap_or_default();
        for h in start - 4 * 366 * 24..start {
            let expected = DateTime::from_timestamp(h * HOUR_SECS, 0)
                .map(|t| t.format("%Y-%m-%dT%H").to_string());
            assert_eq!(Some(format_hour(h)), expected);
            assert_eq!(parse_hour(&format_hour(h)), Some(h));
        }
    }

    #[test]
    fn months_follow_the_billing_zone() -> Result<()> {
        let utc_midnight = parse_hour("2026-04-01T00").ok_or(Error::Hour { hour: 0 })?;
        assert_eq!(billing_month(utc_midnight, Tz::UTC)?, "2026-04");
        assert_eq!(month_start_hour(utc_midnight + 5, Tz::UTC)?, utc_midnight);
        assert_eq!(month_end_hour(utc_midnight - 1, Tz::UTC)?, utc_midnight);
        // 2026-04-01T03Z is 23:00 on March 31 in New York (EDT, UTC-4).
        let ny = chrono_tz::America::New_York;
        assert_eq!(billing_month(utc_midnight + 3, ny)?, "2026-03");
        assert_eq!(billing_month(utc_midnight + 4, ny)?, "2026-04");
        assert_eq!(month_start_hour(utc_midnight + 10, ny)?, utc_midnight + 4);
        assert!(matches!(
            billing_month(i64::MAX / 2, Tz::UTC),
            Err(Error::Hour { .. })
        ));
        Ok(())
    }
}
