//! A reference point for benchmarks: the least work an hourly run could do on one core. One
//! pass over the JSON Lines files given, each line parsed with serde_json, the first copy of each
//! `(meter_id, recorded_at)` kept in a hash set, usage summed per customer and recording hour in
//! a hash map of exact milliliters. No state, no output tables, no quarantine.
//!
//! `bare_pass <file.jsonl>...` prints lines, kept readings, customer-hours and seconds.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::time::Instant;

use serde::Deserialize;

#[derive(Deserialize)]
struct Reading<'a> {
    #[serde(borrow)]
    meter_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    customer_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    recorded_at: std::borrow::Cow<'a, str>,
    usage_liters: serde_json::Number,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let began = Instant::now();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut sums: HashMap<(String, String), i64> = HashMap::new();
    let (mut lines, mut kept) = (0u64, 0u64);
    let mut line = String::new();
    for path in std::env::args().skip(1) {
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path)?);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            lines += 1;
            let Ok(r) = serde_json::from_str::<Reading>(&line) else {
                continue;
            };
            // The recording hour is the timestamp's first 13 characters (`YYYY-MM-DDTHH`).
            let (Some(hour), Some(liters)) = (r.recorded_at.get(..13), r.usage_liters.as_f64())
            else {
                continue;
            };
            if !seen.insert((r.meter_id.into_owned(), r.recorded_at.to_string())) {
                continue;
            }
            kept += 1;
            let ml = (liters * 1000.0).round() as i64;
            *sums
                .entry((r.customer_id.into_owned(), hour.to_owned()))
                .or_default() += ml;
        }
    }
    println!(
        "{lines} lines, {kept} readings kept, {} customer-hours, {:.3} s",
        sums.len(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
