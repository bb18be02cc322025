//! Hours and billing months: the units the tables are partitioned and billed by.
//!
//! An hour is carried as its index since the Unix epoch (`i64`, UTC) and written as
//! `YYYY-MM-DDTHH` (UTC, zero-padded), which sorts in time order and is a safe partition value
//! for every Delta reader. Billing months are computed in the billing time zone.

use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Seconds in an hour.
pub const HOUR_SECS: i64 = 3600;
/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = HOUR_SECS * 1_000_000;
/// The watermark delay: records older than this behind their ingestion hour are late.
pub const WATERMARK_HOURS: i64 = 7 * 24;

/// `2026-03-14T05` for the hour index of 2026-03-14 05:00 UTC.
pub fn format_hour(hour: i64) -> String {
    match DateTime::from_timestamp(hour * HOUR_SECS, 0) {
        Some(t) => t.format("%Y-%m-%dT%H").to_string(),
        None => format!("hour#{hour}"),
    }
}

/// Parses `2026-03-14T05` into an hour index.
pub fn parse_hour(text: &str) -> Option<i64> {
    let t = NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y-%m-%dT%H:%M:%S").ok()?;
    // Round-tripping rejects forms chrono accepts but the layout does not (`2026-3-14T5`).
    let hour = t.and_utc().timestamp().div_euclid(HOUR_SECS);
    (format_hour(hour) == text).then_some(hour)
}

/// The billing month (`YYYY-MM`, in `tz`) that the UTC hour `hour` belongs to.
pub fn billing_month(hour: i64, tz: Tz) -> String {
    let utc = DateTime::from_timestamp(hour * HOUR_SECS, 0).unwrap_or_default();
    let local = utc.with_timezone(&tz);
    format!("{:04}-{:02}", local.year(), local.month())
}

/// The first UTC hour of the billing month that `hour` belongs to.
pub fn month_start_hour(hour: i64, tz: Tz) -> i64 {
    let utc = DateTime::from_timestamp(hour * HOUR_SECS, 0).unwrap_or_default();
    let local = utc.with_timezone(&tz);
    // Local midnight on the first exists in every IANA zone that has whole-hour offsets at
    // midnight; `earliest` picks the first instant if it is ambiguous.
    let first = tz
        .with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc).timestamp())
        .unwrap_or(hour * HOUR_SECS);
    first.div_euclid(HOUR_SECS)
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
    }

    #[test]
    fn months_follow_the_billing_zone() {
        let utc_midnight = parse_hour("2026-04-01T00").unwrap_or_default();
        assert_eq!(billing_month(utc_midnight, Tz::UTC), "2026-04");
        assert_eq!(month_start_hour(utc_midnight + 5, Tz::UTC), utc_midnight);
        // 2026-04-01T03Z is 23:00 on March 31 in New York (EDT, UTC-4).
        let ny = chrono_tz::America::New_York;
        assert_eq!(billing_month(utc_midnight + 3, ny), "2026-03");
        assert_eq!(billing_month(utc_midnight + 4, ny), "2026-04");
        assert_eq!(month_start_hour(utc_midnight + 10, ny), utc_midnight + 4);
    }
}
