//! The watermark: a record is *late* when it was recorded more than 7 days before its ingestion
//! hour (or before the tables' watermark), *future* when it is dated after its ingestion hour's
//! end plus the clock-skew tolerance, *in time* otherwise.

use crate::hours::{HOUR_MICROS, WATERMARK_HOURS};

/// Where a record falls against the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Within the watermark: dedup decides.
    InTime,
    /// Recorded too long before its ingestion hour or before the watermark.
    Late,
    /// Dated after its ingestion hour's end plus the clock-skew tolerance.
    Future,
}

/// The timing of a record from its own ingestion hour (hour index), its `recorded_at` (µs since
/// the epoch) and the watermark before the run (hour index).
pub fn timing(
    ingest_hour: i64,
    recorded_at: i64,
    watermark_before: Option<i64>,
    skew_minutes: i64,
) -> Timing {
    let own_limit = (ingest_hour - WATERMARK_HOURS) * HOUR_MICROS;
    let earliest = watermark_before.map_or(own_limit, |w| own_limit.max(w * HOUR_MICROS));
    let latest = (ingest_hour + 1) * HOUR_MICROS + skew_minutes * 60_000_000;
    if recorded_at < earliest {
        Timing::Late
    } else if recorded_at > latest {
        Timing::Future
    } else {
        Timing::InTime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_and_future_by_hand() {
        // Ingestion hour 1000 (its folder), 7 days = 168 hours before it is hour 832.
        let h = HOUR_MICROS;
        let t = |hour: i64, micros: i64| timing(1000, hour * h + micros, None, 5);
        assert_eq!(t(832, 0), Timing::InTime);
        assert_eq!(t(831, h - 1), Timing::Late);
        // The hour's end plus 5 minutes is the last instant in time.
        assert_eq!(t(1001, 5 * 60_000_000), Timing::InTime);
        assert_eq!(t(1001, 5 * 60_000_000 + 1), Timing::Future);
        // A watermark after the own limit moves the earliest instant; one before it does not.
        assert_eq!(timing(1000, 900 * h - 1, Some(900), 5), Timing::Late);
        assert_eq!(timing(1000, 900 * h, Some(900), 5), Timing::InTime);
        assert_eq!(timing(1000, 832 * h, Some(800), 5), Timing::InTime);
        assert_eq!(timing(1000, 832 * h - 1, Some(800), 5), Timing::Late);
    }
}
