//! Command-line arguments of the generator.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Parser;

/// Writes synthetic water-meter usage logs as the ingestion server does: JSON Lines files in one
/// folder per ingestion hour (`ingest_hour=YYYY-MM-DDTHH`).
#[derive(Debug, Parser)]
#[command(
    name = "aquabill-gen",
    version,
    about = "Write synthetic water-meter usage logs, one folder per ingestion hour",
    after_long_help = "Records are generated for the ingestion window [--start-hour, --end-hour): \
the start is inclusive, the end exclusive. Calls over adjacent windows deliver each record once; \
calls over overlapping windows with the same seed deliver the overlap again (exact duplicates, as a \
re-sent batch would). Files are only ever added: every file gets a new unique name, is written \
under a hidden temporary name and then linked into place without replacing anything.\n\n\
Exit codes: 0 success, 2 error."
)]
pub struct Args {
    /// Root folder of the usage log; ingestion-hour folders are created below it.
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,

    /// First ingestion hour (inclusive), UTC: `2026-03-01T00`, or an RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub start_hour: DateTime<Utc>,

    /// End of the ingestion window (exclusive), UTC: `2026-03-01T06`, or an RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub end_hour: DateTime<Utc>,

    /// Number of meters.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub meters: u32,

    /// Largest number of meters one customer has (each customer has 1..=N).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_meters_per_customer: u32,

    /// Minutes between two readings of one meter.
    #[arg(long, default_value_t = 5, value_name = "MINUTES")]
    pub interval_minutes: u32,

    /// Mean delivery delay of a reading, in minutes (exponentially distributed).
    #[arg(long, default_value_t = 3.0, value_name = "MINUTES")]
    pub delay_mean_minutes: f64,

    /// Largest delivery delay of a reading outside an outage, in minutes.
    #[arg(long, default_value_t = 30, value_name = "MINUTES")]
    pub delay_max_minutes: u32,

    /// Share of readings sent twice (a retry 1 to 59 minutes after the first copy).
    #[arg(long, default_value_t = 0.01, value_name = "SHARE")]
    pub duplicate_rate: f64,

    /// Share of meters that go offline in a given week and replay their buffered readings on
    /// reconnect.
    #[arg(long, default_value_t = 0.02, value_name = "SHARE")]
    pub offline_share: f64,

    /// Share of meters that start a leak in a given week: a constant flow on top of their use,
    /// night and day, for 1 to 4 days (a running toilet, a dripping pipe).
    #[arg(long, default_value_t = 0.01, value_name = "SHARE")]
    pub leak_share: f64,

    /// Longest outage in hours; buffered readings are replayed when it ends (at most 167, so
    /// that replays stay within the 7-day watermark).
    #[arg(long, default_value_t = 160, value_name = "HOURS",
          value_parser = clap::value_parser!(u32).range(1..=167))]
    pub max_outage_hours: u32,

    /// No outage begins before this time, UTC (`2026-03-01T00`, or an RFC 3339 time): a fleet
    /// all reporting then, as when collection starts. Without it, outages may be under way at
    /// the first hour, as in a log cut from a running system.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub outages_from: Option<DateTime<Utc>>,

    /// Share of lines written malformed (bad JSON, missing field, wrong type, negative usage,
    /// timestamp without offset).
    #[arg(long, default_value_t = 0.0, value_name = "SHARE")]
    pub malformed_rate: f64,

    /// Files written per ingestion hour (the hour's records are split by ingestion time).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=60))]
    pub files_per_hour: u32,

    /// Seed: the same seed and arguments give the same records.
    #[arg(long, default_value_t = 1, value_name = "SEED")]
    pub seed: u64,

    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Checks the values clap cannot check one by one.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.start_hour < self.end_hour,
            "--start-hour must be before --end-hour"
        );
        anyhow::ensure!(self.meters > 0, "--meters must be at least 1");
        anyhow::ensure!(
            self.max_meters_per_customer > 0,
            "--max-meters-per-customer must be at least 1"
        );
        anyhow::ensure!(
            (1..=60).contains(&self.interval_minutes) && 60 % self.interval_minutes == 0,
            "--interval-minutes must divide 60"
        );
        anyhow::ensure!(
            self.delay_mean_minutes > 0.0 && self.delay_max_minutes > 0,
            "delays must be positive"
        );
        for (name, share) in [
            ("--duplicate-rate", self.duplicate_rate),
            ("--offline-share", self.offline_share),
            ("--leak-share", self.leak_share),
            ("--malformed-rate", self.malformed_rate),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&share), "{name} must be within 0..=1");
        }
        Ok(())
    }
}

/// Parses `2026-03-01T05` (a UTC hour) or an RFC 3339 time.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .map(|t| t.and_utc())
        .map_err(|_| format!("`{text}` is neither an hour like 2026-03-01T05 nor RFC 3339"))
}
