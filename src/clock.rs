//! The current time, as the run sees it. Tests set it: `AQUABILL_NOW=<RFC 3339 timestamp>`
//! (armed like the fault switches in [`crate::faults`]) makes the run take that instant as now,
//! so no test reads the machine's date or names a year that will one day be in the past. An
//! unreadable value is an error, never the real clock in its place.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// The environment variable that sets the clock.
pub const NOW: &str = "AQUABILL_NOW";

/// Now: the instant `AQUABILL_NOW` names, or the system clock's.
pub fn now() -> Result<DateTime<Utc>> {
    match std::env::var(NOW) {
        Ok(text) => DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| Error::Parameter {
                name: NOW,
                reason: format!("`{text}` is not an RFC 3339 timestamp: {e}"),
            }),
        Err(_) => Ok(Utc::now()),
    }
}

/// The latest ingestion hour (hour index) a run may take at `now`: the hour that holds
/// `now + skew_minutes`. A folder named after it was written by a clock ahead of this one.
pub fn latest_ingest_hour(now: DateTime<Utc>, skew_minutes: i64) -> i64 {
    let ahead = now.timestamp() + skew_minutes * 60;
    ahead.div_euclid(crate::hours::HOUR_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::parse_hour;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_current_hour_is_taken_and_the_next_only_within_the_skew() {
        let hour = |h: &str| parse_hour(h).unwrap_or_else(|| panic!("{h}"));
        // Hand-worked: 10:30 with 5 minutes of skew is still hour 10.
        assert_eq!(
            latest_ingest_hour(at("2026-03-14T10:30:00Z"), 5),
            hour("2026-03-14T10")
        );
        // 10:58 plus 5 minutes is 11:03: hour 11's folder may already exist.
        assert_eq!(
            latest_ingest_hour(at("2026-03-14T10:58:00Z"), 5),
            hour("2026-03-14T11")
        );
        assert_eq!(
            latest_ingest_hour(at("2026-03-14T10:58:00Z"), 0),
            hour("2026-03-14T10")
        );
        // Offsets are honoured: 01:10 at +02:00 is 23:10 UTC the day before.
        assert_eq!(
            latest_ingest_hour(at("2026-03-15T01:10:00+02:00"), 0),
            hour("2026-03-14T23")
        );
    }
}
