//! Checks the tables without writing anything (see the library's `verify`): the checkpoint
//! against the tables, every run's accounting, the running totals against `hourly_usage`, the
//! bills against the running totals.
//!
//! `cargo run --example verify -- -p output_root TABLES [-p name value]...`
//!
//! It takes the notebook's parameters (`-p name value`, as `run_once` does); `input_root` must
//! exist but is not read. Exit status: 0 the tables agree, 1 they disagree (each disagreement
//! named on stdout), 2 usage or a check that could not run (message on stderr).

use std::process::ExitCode;

use aquabill::{Config, Params};

const USAGE: &str = "usage: verify -p output_root TABLES [-p NAME VALUE]...";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (params, rest) = match Params::from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("verify: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !rest.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match Config::new(&params).and_then(|config| aquabill::verify(&config)) {
        Ok(report) => {
            print!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("verify: {e}");
            ExitCode::from(2)
        }
    }
}
