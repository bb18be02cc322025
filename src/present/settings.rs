//! How the validated parameters and a rebuild show themselves.

use std::fmt;

use super::{Shown, html};
use crate::config::Config;
use crate::rebuild::RebuildReport;
use crate::table::Committed;

/// The settings a run uses, as (parameter, value) rows: every parameter, under its own name.
fn settings(config: &Config) -> Vec<(&'static str, String)> {
    let none_if = |value: Option<String>, none: &str| value.unwrap_or_else(|| none.to_owned());
    vec![
        ("input_root", config.input_root.to_string()),
        ("output_root", config.output_root.to_string()),
        ("checkpoint_location", config.checkpoint_dir.to_string()),
        ("billing_timezone", config.billing_timezone.to_string()),
        (
            "batch_cap",
            none_if(config.batch_cap.map(|cap| format!("{cap} files")), "none"),
        ),
        (
            "chunk_mb",
            none_if(
                config
                    .chunk_bytes
                    .map(|b| format!("{} MB of log a batch", b >> 20)),
                "none: a run's files are one batch",
            ),
        ),
        (
            "clock_skew_minutes",
            format!("{} min", config.clock_skew_minutes),
        ),
        ("rebuild", config.rebuild.to_string()),
        ("rebuild_from_log", config.rebuild_from_log.to_string()),
        (
            "rewrite_closed_bills",
            config.rewrite_closed_bills.to_string(),
        ),
        (
            "chart_customer",
            match config.chart_customer.as_str() {
                "" => "the largest running total".to_owned(),
                customer => customer.to_owned(),
            },
        ),
        (
            "alert_flow_hours",
            format!("{} h of flow", config.alert_flow_hours),
        ),
        (
            "alert_silent_hours",
            format!("{} ingestion hours quiet", config.alert_silent_hours),
        ),
        (
            "alert_close_hours",
            format!("{} h before a month closes", config.alert_close_hours),
        ),
    ]
}

/// The settings in `config`'s display (text and HTML share the rows).
pub struct Settings<'a>(pub &'a Config);

impl fmt::Display for Settings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = settings(self.0);
        for (i, (name, value)) in rows.iter().enumerate() {
            let end = if i + 1 < rows.len() { "\n" } else { "" };
            write!(f, "{name:<18}{value}{end}")?;
        }
        Ok(())
    }
}

impl Shown for Settings<'_> {
    fn html(&self) -> String {
        let rows: Vec<Vec<String>> = settings(self.0)
            .into_iter()
            .map(|(name, value)| vec![name.to_owned(), value])
            .collect();
        html::table(&["setting", "value"], &rows)
    }
}

/// What a rebuild's replacing commit did to a table.
fn replaced(committed: Committed) -> &'static str {
    match committed {
        Committed::Version(_) => "replaced",
        Committed::AlreadyCommitted => "already replaced",
        Committed::Nothing => "empty, unchanged",
    }
}

/// What the rebuild did to closed bills.
fn bills_line(report: &RebuildReport) -> String {
    let changes = &report.bill_changes;
    match (changes.bills, &changes.report) {
        (Some(0), _) => "no closed bill changed".to_owned(),
        (Some(n), Some(path)) => format!("{n} closed bills changed: every one is in {path}"),
        (None, Some(path)) => format!("the closed bills that changed are in {path}"),
        (_, None) => "no closed bill changed".to_owned(),
    }
}

fn headline(report: &RebuildReport) -> String {
    if report.requested {
        format!("rebuilt from the log: {} batches replayed", report.batches)
    } else {
        "no rebuild requested (set rebuild = true to recompute every table from the log)".to_owned()
    }
}

impl fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.requested {
            return write!(f, "{}", headline(self));
        }
        writeln!(f, "{}", headline(self))?;
        for (name, rows, committed) in &self.tables {
            let version = match committed {
                Committed::Version(v) => format!(" in version {v}"),
                _ => String::new(),
            };
            writeln!(
                f,
                "  {name}: {rows} rows, {}{version}",
                replaced(*committed)
            )?;
        }
        write!(f, "  {}", bills_line(self))
    }
}

impl Shown for RebuildReport {
    fn html(&self) -> String {
        let mut out = html::para(&headline(self));
        let rows: Vec<Vec<String>> = self
            .tables
            .iter()
            .map(|(name, rows, committed)| {
                let version = match committed {
                    Committed::Version(v) => v.to_string(),
                    _ => String::new(),
                };
                vec![
                    (*name).to_owned(),
                    rows.to_string(),
                    replaced(*committed).to_owned(),
                    version,
                ]
            })
            .collect();
        if !rows.is_empty() {
            out += &html::table(&["table", "rows", "result", "version"], &rows);
            out += &html::para(&bills_line(self));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{PARAMETERS, Params};

    #[test]
    fn every_parameter_is_shown_under_its_own_name() -> crate::Result<()> {
        let config = Config::new(&Params {
            input_root: env!("CARGO_MANIFEST_DIR"),
            output_root: "/nonexistent/aquabill-settings-test",
            ..Params::default()
        })?;
        let shown: Vec<&str> = settings(&config).iter().map(|row| row.0).collect();
        let parameters: Vec<&str> = PARAMETERS.iter().map(|p| p.name).collect();
        assert_eq!(shown, parameters);
        Ok(())
    }
}
