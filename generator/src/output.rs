//! Turning records into JSON Lines and adding files to the log without ever replacing one.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chrono::DateTime;

use crate::model::{Damage, Record};

/// Name of the folder that holds the records ingested in the hour starting at `hour_start`.
pub fn hour_folder(hour_start: i64) -> String {
    let t = DateTime::from_timestamp(hour_start, 0).unwrap_or_default();
    format!("ingest_hour={}", t.format("%Y-%m-%dT%H"))
}

/// Appends the JSON line of one record (with its newline) to `out`.
pub fn write_line(out: &mut String, r: &Record, customer: u32) {
    let recorded = rfc3339(r.recorded_at);
    let ingested = rfc3339(r.ingested_at);
    let usage = liters(r.usage_ml);
    let meter = format!("M{:07}", r.meter);
    let customer = format!("C{customer:06}");
    // Writing to a String cannot fail.
    let _ = match r.damage {
        None => write!(
            out,
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{recorded}","usage_liters":{usage},"ingested_at":"{ingested}"}}"#
        ),
        Some(Damage::TruncatedJson) => write!(
            out,
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{recorded}","usa"#
        ),
        Some(Damage::MissingField) => write!(
            out,
            r#"{{"meter_id":"{meter}","recorded_at":"{recorded}","usage_liters":{usage},"ingested_at":"{ingested}"}}"#
        ),
        Some(Damage::WrongType) => write!(
            out,
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{recorded}","usage_liters":"{usage}","ingested_at":"{ingested}"}}"#
        ),
        Some(Damage::NegativeUsage) => write!(
            out,
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{recorded}","usage_liters":-{usage},"ingested_at":"{ingested}"}}"#
        ),
        Some(Damage::NaiveTimestamp) => write!(
            out,
            r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"{}","usage_liters":{usage},"ingested_at":"{ingested}"}}"#,
            recorded.trim_end_matches('Z')
        ),
    };
    out.push('\n');
}

/// `2026-03-14T05:07:00Z`
fn rfc3339(unix_secs: i64) -> String {
    let t = DateTime::from_timestamp(unix_secs, 0).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Milliliters as a JSON number of liters with at most three decimals: `1.25`, `0.007`, `3`.
fn liters(ml: u64) -> String {
    let (whole, frac) = (ml / 1000, ml % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Adds `contents` as a new file in `dir` and returns its path.
///
/// The file is written and synced under a hidden temporary name, then hard-linked to its final
/// name, which fails rather than replace an existing file, so readers never see a partial file and
/// nothing already in the log is ever overwritten.
pub fn add_file(dir: &Path, contents: &[u8]) -> anyhow::Result<PathBuf> {
    static SEQUENCE: AtomicU32 = AtomicU32::new(0);
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("part-{nanos:020}-{:07}-{seq:05}.jsonl", std::process::id());
        let tmp = dir.join(format!(".{name}.tmp"));
        let target = dir.join(&name);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        let linked = fs::hard_link(&tmp, &target);
        fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        match linked {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("adding {}", target.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liters_keep_every_milliliter() {
        for (ml, text) in [
            (0, "0"),
            (7, "0.007"),
            (1250, "1.25"),
            (3000, "3"),
            (12345, "12.345"),
        ] {
            assert_eq!(liters(ml), text);
        }
    }

    #[test]
    fn hour_folders_sort_in_time_order() {
        assert_eq!(hour_folder(0), "ingest_hour=1970-01-01T00");
        assert_eq!(hour_folder(1_773_464_400), "ingest_hour=2026-03-14T05");
    }

    #[test]
    fn add_file_never_replaces() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("aquabill-gen-test-{}", std::process::id()));
        let a = add_file(&dir, b"a\n")?;
        let b = add_file(&dir, b"b\n")?;
        assert_ne!(a, b);
        assert_eq!(fs::read(&a)?, b"a\n");
        assert_eq!(fs::read(&b)?, b"b\n");
        let names: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        assert_eq!(names.len(), 2, "no temporary file is left behind");
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
