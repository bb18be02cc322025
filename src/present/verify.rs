//! How the read-only check of the tables shows what it found.

use std::fmt;

use super::{Shown, html};
use crate::verify::{Check, VerifyReport};

/// A check's verdict in a word or two.
fn verdict(check: &Check) -> String {
    match check.count {
        0 => "agrees".to_owned(),
        n => format!("{n} disagreements"),
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{}: {} ({})", check.name, verdict(check), check.checked)?;
            for problem in &check.problems {
                writeln!(f, "  {problem}")?;
            }
            if check.count > check.problems.len() {
                writeln!(f, "  ... and {} more", check.count - check.problems.len())?;
            }
        }
        if self.ok() {
            writeln!(f, "the tables agree with themselves and the checkpoint")
        } else {
            writeln!(
                f,
                "the tables disagree: see docs/OPERATIONS.md, \"Checking the tables\""
            )
        }
    }
}

impl Shown for VerifyReport {
    fn html(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_owned(),
                    c.checked.clone(),
                    verdict(c),
                    c.problems.first().cloned().unwrap_or_default(),
                ]
            })
            .collect();
        html::table(
            &["check", "checked", "verdict", "first disagreement"],
            &rows,
        )
    }
}
