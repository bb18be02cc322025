//! Times the notebook's views on a month of the customer tables: `--build CUSTOMERS HOUR` writes
//! the month holding `HOUR` (`YYYY-MM-DDTHH`) first (`aquabill::fixture`), then each `--chart`
//! or `--sql QUERY` given runs once, in the order given, and prints its seconds, rows and the
//! process's peak memory so far. One process is one scheduled notebook's view: its tables are
//! opened by the view itself.
//!
//! `--copy-days` copies every final day of existing tables to their day tables at once
//! (`aquabill::fixture::copy_final_days`: a history made before the day tables).
//!
//! `--remote BUCKET FOLDER MS` (first) serves `s3://BUCKET` from the local `FOLDER` at `MS`
//! milliseconds a request (`aquabill::fixture::serve_folder_as_bucket`), and each view then
//! prints its requests too.
//!
//! `month_views -p input_root LOG -p output_root TABLES [--remote BUCKET FOLDER MS]
//! [--build CUSTOMERS HOUR] [--copy-days] [--chart] [--sql QUERY]...`

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aquabill::fixture::{Remote, Requests};
use aquabill::{Config, Params};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("month_views: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let (params, rest) = Params::from_args(args)?;
    let config = Config::new(&params)?;
    let mut rest = rest.iter().map(String::as_str);
    let mut remote: Option<Arc<Remote>> = None;
    let mut before = Requests::default();
    while let Some(arg) = rest.next() {
        let started = Instant::now();
        let mut next = || rest.next().ok_or_else(|| format!("{arg} needs a value"));
        let rows = match arg {
            "--remote" => {
                let (bucket, folder, ms) = (next()?, next()?, next()?.parse::<u64>()?);
                remote = Some(aquabill::fixture::serve_folder_as_bucket(
                    bucket,
                    Path::new(folder),
                    Duration::from_millis(ms),
                )?);
                continue;
            }
            "--copy-days" => {
                let copied = aquabill::fixture::copy_final_days(&config)?;
                let days: Vec<String> = copied
                    .iter()
                    .map(|(table, days)| format!("{table} {days}"))
                    .collect();
                println!("days copied: {}", days.join(", "));
                copied.iter().map(|(_, days)| days).sum()
            }
            "--build" => {
                let customers: usize = next()?.parse()?;
                let hour = next()?;
                let hour = aquabill::fixture::parse_hour(hour)
                    .ok_or_else(|| format!("{hour} is not an hour"))?;
                let month = aquabill::fixture::month_of_customer_tables(&config, customers, hour)?;
                println!(
                    "built {}: {} hours, {} rows a table, {} days copied in {:.2} s",
                    month.month, month.hours, month.rows, month.days, month.days_seconds
                );
                month.rows
            }
            "--chart" => aquabill::customer_month(&config, "")?.map_or(0, |m| m.points.len()),
            "--sql" => aquabill::sql(&config, next()?, aquabill::SQL_ROW_LIMIT)?
                .rows
                .height(),
            other => return Err(format!("unknown argument {other}").into()),
        };
        let seconds = started.elapsed().as_secs_f64();
        let requests = match &remote {
            Some(remote) => {
                let now = remote.requests();
                let these = now.since(&before);
                before = now;
                format!(
                    ", requests {} ({} GET, {} LIST, {} other), in flight median {} most {}",
                    these.total(),
                    these.gets,
                    these.lists,
                    these.writes,
                    these.median_in_flight(),
                    these.in_flight.iter().max().unwrap_or(&0)
                )
            }
            None => String::new(),
        };
        println!(
            "{arg} {seconds:.3} s {rows} rows, peak {} MB{requests}",
            peak_mb()
        );
    }
    Ok(())
}

/// The process's peak resident memory so far (`VmHWM`), in MB; 0 where it is not known.
fn peak_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
