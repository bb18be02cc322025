//! `aquabill-gen`: writes synthetic water-meter usage logs laid out as the ingestion server
//! writes them (SPEC section 2), for demos, tests and benchmarks of the billing pipeline.

mod cli;
mod model;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Args;
use crate::model::{Delivery, Fleet, Record};

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("aquabill-gen: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// What one call wrote. `retries` counts every retry copy written; those whose first copy
/// arrived before the call's window (`retries_of_earlier_calls`) duplicate a record of an
/// earlier window, not of this call's files.
#[derive(Debug, Default)]
struct Summary {
    folders: u64,
    files: u64,
    records: u64,
    live: u64,
    replayed: u64,
    retries: u64,
    retries_of_earlier_calls: u64,
    malformed: u64,
    out_of_order: u64,
    max_live_delay_secs: i64,
    max_replay_delay_secs: i64,
}

fn run(args: Args) -> anyhow::Result<()> {
    args.validate()?;
    let fleet = Fleet::new(&args);
    let (start, end) = (args.start_hour.timestamp(), args.end_hour.timestamp());
    let mut summary = Summary::default();
    let mut records = Vec::new();
    let mut hour = start.div_euclid(3600) * 3600;
    while hour < end {
        let (from, to) = (start.max(hour), end.min(hour + 3600));
        let folder = args.output.join(output::hour_folder(hour));
        let parts = i64::from(args.files_per_hour);
        let step = ((to - from + parts - 1) / parts).max(1);
        let mut wrote_to_folder = false;
        let mut sub = from;
        while sub < to {
            records.clear();
            fleet.records_ingested(sub, (sub + step).min(to), &mut records);
            records.sort_by_key(|r| (r.ingested_at, r.meter, r.recorded_at));
            if !records.is_empty() {
                let text = render(&fleet, &records, start, &mut summary);
                output::add_file(&folder, text.as_bytes())?;
                summary.files += 1;
                wrote_to_folder = true;
            }
            sub += step;
        }
        summary.folders += u64::from(wrote_to_folder);
        hour += 3600;
    }
    print_summary(&args, &summary);
    Ok(())
}

/// Renders one file's records and counts them into the summary.
fn render(fleet: &Fleet, records: &[Record], start: i64, summary: &mut Summary) -> String {
    let mut text = String::with_capacity(records.len() * 150);
    let mut latest_recorded = i64::MIN;
    for r in records {
        output::write_line(&mut text, r, fleet.customer_of(r.meter));
        summary.records += 1;
        let delay = r.ingested_at - r.recorded_at;
        match r.delivery {
            Delivery::Live => {
                summary.live += 1;
                summary.max_live_delay_secs = summary.max_live_delay_secs.max(delay);
            }
            Delivery::Replayed => {
                summary.replayed += 1;
                summary.max_replay_delay_secs = summary.max_replay_delay_secs.max(delay);
            }
            Delivery::Retry => {
                summary.retries += 1;
                // The first copy arrived before this call's window: written by an earlier call.
                summary.retries_of_earlier_calls += u64::from(r.first_ingested_at < start);
            }
        }
        summary.malformed += u64::from(r.damage.is_some());
        summary.out_of_order += u64::from(r.recorded_at < latest_recorded);
        latest_recorded = latest_recorded.max(r.recorded_at);
    }
    text
}

fn print_summary(args: &Args, s: &Summary) {
    if args.json {
        let json = serde_json::json!({
            "output": args.output,
            "folders": s.folders,
            "files": s.files,
            "records": s.records,
            "live": s.live,
            "replayed": s.replayed,
            "retries": s.retries,
            "retries_of_earlier_calls": s.retries_of_earlier_calls,
            "malformed": s.malformed,
            "out_of_order": s.out_of_order,
            "max_live_delay_secs": s.max_live_delay_secs,
            "max_replay_delay_secs": s.max_replay_delay_secs,
        });
        println!("{json}");
        return;
    }
    println!(
        "wrote {} records in {} files ({} hour folders) under {}",
        s.records,
        s.files,
        s.folders,
        args.output.display()
    );
    println!(
        "  live {}, replayed after outages {}, retries (duplicates) {}, malformed {}",
        s.live, s.replayed, s.retries, s.malformed
    );
    println!(
        "  out of order {}, longest live delay {} s, longest replay delay {} h",
        s.out_of_order,
        s.max_live_delay_secs,
        s.max_replay_delay_secs / 3600
    );
}
