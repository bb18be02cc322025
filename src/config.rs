//! Run parameters: the notebook's first cell, validated before anything is written.

use std::path::{Component, PathBuf};

use chrono::Offset;
use chrono_tz::Tz;

pub use crate::contract::Params;
use crate::error::{Error, Result};
use crate::storage::Location;

/// Validated parameters of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the usage log (one folder per ingestion hour).
    pub input_root: Location,
    /// Folder that holds the output tables.
    pub output_root: Location,
    /// Folder of the run checkpoint and the dedup state.
    pub checkpoint_dir: Location,
    /// Time zone billing months are computed in.
    pub billing_timezone: Tz,
    /// Most input files one run takes; `None` takes all.
    pub batch_cap: Option<usize>,
    /// Most bytes of log one batch (a chunk of a run's files) takes, at least one file;
    /// `None`: a run's files are one batch.
    pub chunk_bytes: Option<u64>,
    /// How far past its ingestion hour's end a record may be dated (meter clocks drift).
    pub clock_skew_minutes: i64,
    /// Whether the run first recomputes every table from the log.
    pub rebuild: bool,
    /// Whether that rebuild plans its batches afresh from the log instead of replaying the
    /// committed plans.
    pub rebuild_from_log: bool,
    /// Whether that rebuild may replace tables built with another billing time zone.
    pub rewrite_closed_bills: bool,
    /// The customer the chart shows; empty: the one with the largest running total.
    pub chart_customer: String,
    /// Flow hours that make a `continuous_flow` alert.
    pub alert_flow_hours: i64,
    /// Quiet ingestion hours that make a `silent` alert.
    pub alert_silent_hours: i64,
    /// Hours before a month's close from which its bills can be at risk.
    pub alert_close_hours: i64,
    /// Whether runs copy the customer tables' final days to the day tables (`table::days`):
    /// not a parameter; off for a rebuild's replay, whose day tables no view reads.
    pub copy_days: bool,
}

/// The longest alert threshold, in hours: a billing month's (a stretch longer than that is
/// not an hourly alert any more).
pub const ALERT_HOURS_MAX: i64 = 31 * 24;

impl Config {
    /// Validates the parameters; writes nothing.
    pub fn new(p: &Params<'_>) -> Result<Self> {
        let input_root = location(p.input_root, "input_root")?;
        if input_root.as_local().is_some_and(|dir| !dir.is_dir()) {
            return Err(param("input_root", format!("{input_root} is not a folder")));
        }
        let output_root = location(p.output_root, "output_root")?;
        let checkpoint_dir = match p.checkpoint_location.trim() {
            "" => output_root.join("_checkpoint"),
            dir => location(dir, "checkpoint_location")?,
        };
        for (name, dir) in [
            ("output_root", &output_root),
            ("checkpoint_location", &checkpoint_dir),
        ] {
            if dir.starts_with(&input_root) || input_root.starts_with(dir) {
                return Err(param(
                    name,
                    format!("{dir} overlaps the input log {input_root}"),
                ));
            }
        }
        let billing_timezone: Tz = p.billing_timezone.parse().map_err(|_| {
            param(
                "billing_timezone",
                format!("`{}` is not an IANA time zone", p.billing_timezone),
            )
        })?;
        if let Some(when) = first_offset_off_the_hour(billing_timezone) {
            return Err(param(
                "billing_timezone",
                format!(
                    "`{}` is {} from UTC on {}: billing months must start on a whole UTC hour \
                     (the tables are partitioned by UTC hour), so only zones whose offset is a \
                     whole number of hours since 1970 can be used",
                    p.billing_timezone,
                    when.offset(),
                    when.format("%Y-%m-%d")
                ),
            ));
        }
        let batch_cap = match p.batch_cap {
            0 => None,
            n if n > 0 => Some(n as usize),
            n => {
                return Err(param(
                    "batch_cap",
                    format!("{n} is negative (0 means no cap)"),
                ));
            }
        };
        let chunk_bytes = match p.chunk_mb {
            0 => None,
            n if n > 0 => Some((n as u64).saturating_mul(1 << 20)),
            n => {
                return Err(param(
                    "chunk_mb",
                    format!("{n} is negative (0 means no limit)"),
                ));
            }
        };
        if p.rebuild_from_log && !p.rebuild {
            return Err(param(
                "rebuild_from_log",
                "takes effect only with rebuild = true".to_owned(),
            ));
        }
        if p.rewrite_closed_bills && !p.rebuild {
            return Err(param(
                "rewrite_closed_bills",
                "takes effect only with rebuild = true".to_owned(),
            ));
        }
        if !(0..=60).contains(&p.clock_skew_minutes) {
            return Err(param(
                "clock_skew_minutes",
                "must be within 0..=60".to_owned(),
            ));
        }
        for (name, value) in [
            ("alert_flow_hours", p.alert_flow_hours),
            ("alert_silent_hours", p.alert_silent_hours),
        ] {
            if !(1..=ALERT_HOURS_MAX).contains(&value) {
                return Err(param(
                    name,
                    format!("{value} is not within 1..={ALERT_HOURS_MAX} hours"),
                ));
            }
        }
        if !(0..=ALERT_HOURS_MAX).contains(&p.alert_close_hours) {
            return Err(param(
                "alert_close_hours",
                format!(
                    "{} is not within 0..={ALERT_HOURS_MAX} hours",
                    p.alert_close_hours
                ),
            ));
        }
        Ok(Self {
            input_root,
            output_root,
            checkpoint_dir,
            billing_timezone,
            batch_cap,
            chunk_bytes,
            clock_skew_minutes: p.clock_skew_minutes,
            rebuild: p.rebuild,
            rebuild_from_log: p.rebuild_from_log,
            rewrite_closed_bills: p.rewrite_closed_bills,
            chart_customer: p.chart_customer.trim().to_owned(),
            alert_flow_hours: p.alert_flow_hours,
            alert_silent_hours: p.alert_silent_hours,
            alert_close_hours: p.alert_close_hours,
            copy_days: true,
        })
    }
}

/// The first day since 1970 (checked daily up to 2100) on which `tz` is not a whole number of
/// hours from UTC, if any. Daily sampling finds every offset that lasted a day or more, which is
/// every offset IANA zones have used since 1970.
fn first_offset_off_the_hour(tz: Tz) -> Option<chrono::DateTime<Tz>> {
    let start = chrono::DateTime::from_timestamp(0, 0)?;
    (0..(130 * 366))
        .map(|day| (start + chrono::Duration::days(day)).with_timezone(&tz))
        .find(|t| t.offset().fix().local_minus_utc() % 3600 != 0)
}

fn param(name: &'static str, reason: String) -> Error {
    Error::Parameter { name, reason }
}

/// `text` as a location: an `s3://bucket/prefix` URL, or a local path made absolute.
fn location(text: &str, name: &'static str) -> Result<Location> {
    match Location::parse_url(text) {
        Ok(Some(location)) => Ok(location),
        Ok(None) => absolute(text, name).map(Location::Local),
        Err(reason) => Err(param(name, reason)),
    }
}

/// An absolute, normalized form of `path` that need not exist yet: existing ancestors are
/// resolved (symlinks included), the rest is appended as written.
fn absolute(path: &str, name: &'static str) -> Result<PathBuf> {
    if path.trim().is_empty() {
        return Err(param(name, "is empty".to_owned()));
    }
    let path = std::path::absolute(path).map_err(|e| param(name, e.to_string()))?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(file)) => {
                rest.push(file.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| param(name, format!("{}: {e}", existing.display())))?;
    for part in rest.iter().rev() {
        resolved.push(part);
    }
    if resolved
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(param(
            name,
            format!("{} climbs out of a missing folder", resolved.display()),
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn params<'a>(input: &'a str, output: &'a str) -> Params<'a> {
        Params {
            input_root: input,
            output_root: output,
            ..Params::default()
        }
    }

    #[test]
    fn rejects_bad_parameters_before_writing() -> std::io::Result<()> {
        let temp_dir = crate::testing::TempDir::new("config");
        let dir = temp_dir.path().to_path_buf();
        let input = dir.join("log");
        std::fs::create_dir_all(&input)?;
        let (i, d) = (input.to_string_lossy(), dir.to_string_lossy());
        let out = format!("{d}/out");
        assert!(Config::new(&params(&i, &out)).is_ok());
        let missing = format!("{d}/missing");
        let inside = format!("{i}/out");
        // Object storage: a bucket's prefix, whose overlap with the log is refused too.
        let s3 = Config::new(&params("s3://log-bucket/usage", "s3://tables/prod"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        assert_eq!(
            s3.checkpoint_dir.to_string(),
            "s3://tables/prod/_checkpoint"
        );
        let cases = [
            (
                params("s3://log-bucket/usage", "s3://log-bucket/usage/out"),
                "output_root",
            ),
            (params("gs://log-bucket/usage", &out), "input_root"),
            (params(&i, "s3://Tables/prod"), "output_root"),
            (params(&missing, &out), "input_root"),
            (params(&i, &inside), "output_root"),
            (
                Params {
                    billing_timezone: "Mars/Olympus",
                    ..params(&i, &out)
                },
                "billing_timezone",
            ),
            (
                Params {
                    batch_cap: -1,
                    ..params(&i, &out)
                },
                "batch_cap",
            ),
            // +05:30 all year; +10:30 in winter (a half-hour DST shift); +05:45.
            (
                Params {
                    billing_timezone: "Asia/Kolkata",
                    ..params(&i, &out)
                },
                "billing_timezone",
            ),
            (
                Params {
                    billing_timezone: "Australia/Lord_Howe",
                    ..params(&i, &out)
                },
                "billing_timezone",
            ),
            (
                Params {
                    billing_timezone: "Asia/Kathmandu",
                    ..params(&i, &out)
                },
                "billing_timezone",
            ),
        ];
        for (p, expected) in cases {
            match Config::new(&p) {
                Err(Error::Parameter { name, .. }) => assert_eq!(name, expected),
                other => panic!("{expected}: expected a parameter error, got {other:?}"),
            }
        }
        assert!(!Path::new(&out).exists(), "validation wrote nothing");
        Ok(())
    }

    #[test]
    fn zones_with_whole_hour_offsets_pass() -> Result<(), String> {
        for name in [
            "UTC",
            "America/New_York",
            "Europe/Berlin",
            "Asia/Tokyo",
            "Pacific/Apia",
        ] {
            let tz: Tz = name.parse().map_err(|e| format!("{name}: {e}"))?;
            assert_eq!(first_offset_off_the_hour(tz), None, "{name}");
        }
        let india = first_offset_off_the_hour(chrono_tz::Asia::Kolkata).map(|t| t.to_rfc3339());
        assert_eq!(india.as_deref(), Some("1970-01-01T05:30:00+05:30"));
        Ok(())
    }

    /// The notebook's first cell binds exactly the parameters `contract` defines, with the same
    /// types and defaults, one `let` per line (what the runners rewrite).
    #[test]
    fn the_notebook_binds_every_parameter() -> Result<(), Box<dyn std::error::Error>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("notebooks/hourly_billing.ipynb");
        let nb: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
        let cells = nb["cells"].as_array().ok_or("no cells")?;
        let first = cells
            .iter()
            .find(|c| c["cell_type"] == "code")
            .ok_or("no code cell")?;
        assert_eq!(first["metadata"]["tags"][0], "parameters");
        let source: String = match &first["source"] {
            serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        let bound: Vec<(String, String, String)> = source
            .lines()
            .filter_map(|line| {
                let rest = line.trim().strip_prefix("let ")?;
                let (name, rest) = rest.split_once(':')?;
                let (ty, rest) = rest.split_once('=')?;
                let value = rest.split_once(';')?.0;
                Some((
                    name.trim().to_owned(),
                    ty.trim().to_owned(),
                    value.trim().to_owned(),
                ))
            })
            .collect();
        let expected: Vec<(String, String, String)> = crate::contract::PARAMETERS
            .iter()
            .map(|p| {
                (
                    p.name.to_owned(),
                    p.kind.rust_type().to_owned(),
                    p.default.to_owned(),
                )
            })
            .collect();
        assert_eq!(bound, expected);
        Ok(())
    }
}
