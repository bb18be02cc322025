//! Runs the pipeline once without a notebook kernel, as the notebook's cells would (the first
//! batch step by step, then the rest of a backlog), and prints the plan, the first batch's
//! metrics and the batches after it. For measurements, scripts and the reliability tests:
//!
//! `cargo run --example run_once -- -p input_root LOG -p output_root TABLES [-p name value]...`
//!
//! It takes the notebook's parameters (`aquabill::contract::PARAMETERS`), with the value syntax
//! of `aquabill-papermill`'s `-p`; `-p rebuild true` first recomputes every table from the log.
//! `--parameters` lists them. Exit status: 0 done, 1 the run failed (message on stderr), 2
//! usage, 3 another run holds the tables' lock (nothing was changed).

use std::process::ExitCode;

use aquabill::contract::PARAMETERS;
use aquabill::{Config, Error, Params, Run};

const USAGE: &str = "usage: run_once -p input_root LOG -p output_root TABLES [-p NAME VALUE]... \
                     | --parameters";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args == ["--parameters"] {
        for p in PARAMETERS {
            println!(
                "{}: {} = {} //{}",
                p.name,
                p.kind.rust_type(),
                p.default,
                p.doc
            );
        }
        return ExitCode::SUCCESS;
    }
    let (params, rest) = match Params::from_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("run_once: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !rest.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match run(&params) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ Error::Busy { .. }) => {
            eprintln!("run_once: {err}");
            ExitCode::from(3)
        }
        Err(err) => {
            eprintln!("run_once: {err}");
            ExitCode::from(1)
        }
    }
}

fn run(params: &Params<'_>) -> aquabill::Result<()> {
    let config = Config::new(params)?;
    if config.rebuild {
        println!("{}", aquabill::rebuild(&config)?);
    }
    let run = Run::start(&config)?;
    println!("{}", run.plan_report());
    let later = run.later_files();
    let (_, metrics) = run.run_steps()?;
    println!("{metrics}");
    if metrics.files > 0 {
        println!("  dedup state rows read {}", metrics.state_rows_read);
    }
    println!("{}", aquabill::catch_up(&config, later)?);
    // For benchmarks: bytes this process read and wrote through system calls (Linux).
    if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
        let field = |name: &str| {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        println!(
            "  io: read {} bytes, wrote {} bytes",
            field("rchar:"),
            field("wchar:")
        );
    }
    Ok(())
}
