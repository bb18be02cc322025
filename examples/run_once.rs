//! Runs the pipeline once without a notebook kernel, as the notebook's cells would, and prints
//! the run's metrics. For measurements and scripts:
//!
//! `cargo run --example run_once -- <input_root> <output_root> [billing_timezone]`

use std::process::ExitCode;

use aquabill::{Config, Params, Run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!("usage: run_once <input_root> <output_root> [billing_timezone]");
        return ExitCode::from(2);
    };
    let tz = args.get(2).map_or("UTC", String::as_str);
    match run(input, output, tz) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("run_once: {err}");
            ExitCode::from(1)
        }
    }
}

fn run(input: &str, output: &str, tz: &str) -> aquabill::Result<()> {
    let config = Config::new(&Params {
        input_root: input,
        output_root: output,
        checkpoint_location: "",
        billing_timezone: tz,
        batch_cap: 0,
        clock_skew_minutes: 5,
    })?;
    let mut run = Run::start(&config)?;
    run.parse()?;
    run.dedup()?;
    run.write_hourly()?;
    run.write_cumulative()?;
    println!("{}", run.finish()?);
    Ok(())
}
