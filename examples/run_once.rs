//! Runs the pipeline once without a notebook kernel, as the notebook's cells would, and prints
//! the plan and the run's metrics. For measurements, scripts and the reliability tests:
//!
//! `cargo run --example run_once -- <input_root> <output_root> [--tz ZONE] [--cap N] [--rebuild]`
//!
//! `--rebuild` first recomputes every table from the log (as the notebook's `rebuild` parameter
//! does). Exit status: 0 done, 1 the run failed (message on stderr), 2 usage, 3 another run holds
//! the tables' lock (nothing was changed).

use std::process::ExitCode;

use aquabill::{Config, Error, Params, Run};

const USAGE: &str = "usage: run_once <input_root> <output_root> [--tz ZONE] [--cap N] [--rebuild]";

struct Args {
    input: String,
    output: String,
    tz: String,
    cap: i64,
    rebuild: bool,
}

fn parse_args() -> Option<Args> {
    let mut args = std::env::args().skip(1);
    let (input, output) = (args.next()?, args.next()?);
    let mut parsed = Args {
        input,
        output,
        tz: "UTC".to_owned(),
        cap: 0,
        rebuild: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--tz" => parsed.tz = args.next()?,
            "--cap" => parsed.cap = args.next()?.parse().ok()?,
            "--rebuild" => parsed.rebuild = true,
            _ => return None,
        }
    }
    Some(parsed)
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(&args) {
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

fn run(args: &Args) -> aquabill::Result<()> {
    let config = Config::new(&Params {
        input_root: &args.input,
        output_root: &args.output,
        checkpoint_location: "",
        billing_timezone: &args.tz,
        batch_cap: args.cap,
        clock_skew_minutes: 5,
    })?;
    if args.rebuild {
        println!("{}", aquabill::rebuild::rebuild(&config)?);
    }
    let mut run = Run::start(&config)?;
    println!("{}", run.plan_report());
    run.parse()?;
    run.dedup()?;
    run.write_hourly()?;
    run.write_cumulative()?;
    let metrics = run.finish()?;
    println!("{metrics}");
    if metrics.files > 0 {
        println!("  dedup state rows read {}", metrics.state_rows_read);
    }
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
