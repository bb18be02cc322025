//! A hand-worked log through whole runs: duplicates, a malformed line, a conflict, a late reading,
//! a customer new to the month, and the dedup state's compaction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::compaction::STATE_SMALL_FILES;
use super::*;
use crate::config::Params;
use crate::error::Error;
use crate::hours::{format_hour, parse_hour};
use crate::table::{CUMULATIVE_USAGE, DEDUP_STATE, HOURLY_USAGE, Spec, Table, block_on};

fn line(meter: &str, customer: &str, recorded: &str, liters: &str) -> String {
    format!(
        r#"{{"meter_id":"{meter}","customer_id":"{customer}","recorded_at":"2026-03-01T{recorded}:00Z","usage_liters":{liters},"ingested_at":"2026-03-01T07:00:00Z"}}"#
    )
}

fn add_file(root: &Path, folder: &str, name: &str, lines: &[String]) -> Result<()> {
    let dir = root.join(format!("ingest_hour={folder}"));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(name), lines.join("\n") + "\n"))
        .map_err(|e| Error::io("writing", &dir, e))
}

type Rows = BTreeMap<(String, String), Vec<i64>>;

/// `hourly_usage` as `(customer, hour) -> [usage_ml, reading_count, meter_count]`.
fn hourly_rows(config: &Config) -> Result<Rows> {
    table(
        config,
        &HOURLY_USAGE,
        &["usage_ml", "reading_count", "meter_count"],
    )
}

/// `cumulative_usage` as `(customer, hour) -> [usage_ml, cumulative_ml]`.
fn cumulative_rows(config: &Config) -> Result<Rows> {
    table(config, &CUMULATIVE_USAGE, &["usage_ml", "cumulative_ml"])
}

fn run_once(config: &Config) -> Result<RunMetrics> {
    Run::start(config)?.run_steps().map(|(_, metrics)| metrics)
}

/// The notebook's cells call the steps in their order (`Run::run_steps`, with the rebuild
/// before the plan and the backlog after the first batch), each once.
#[test]
fn the_notebook_calls_the_steps_in_their_order()
-> std::result::Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/notebooks/hourly_billing.ipynb"
    );
    let notebook: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let steps = [
        "rebuild",
        "plan",
        "parse",
        "dedup",
        "write_hourly",
        "write_cumulative",
        "finish",
        "catch_up",
    ];
    let mut called = Vec::new();
    for cell in notebook["cells"].as_array().into_iter().flatten() {
        if cell["cell_type"] != "code" {
            continue;
        }
        let source: String = match &cell["source"] {
            serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        for (at, _) in source.match_indices("pipeline.") {
            let name: String = source[at + "pipeline.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if steps.contains(&name.as_str()) {
                called.push(name);
            }
        }
    }
    assert_eq!(called, steps);
    Ok(())
}

/// `(customer, hour) -> [columns...]` of a table, for comparisons.
fn table(
    config: &Config,
    spec: &'static Spec,
    values: &[&str],
) -> Result<BTreeMap<(String, String), Vec<i64>>> {
    let t = block_on(Table::open_or_create(&spec.dir(config), spec))??;
    let df = block_on(t.read_hours(&t.partitions()))??;
    let customers = df
        .column("customer_id")
        .and_then(|c| c.str().cloned())
        .map_err(Error::polars("test"))?;
    let hour_col = df
        .column("usage_hour")
        .and_then(|c| c.i64().cloned())
        .map_err(Error::polars("test"))?;
    let mut out = BTreeMap::new();
    for i in 0..df.height() {
        let mut row = Vec::new();
        for v in values {
            let c = df.column(v).map_err(Error::polars("test"))?;
            row.push(match c.bool() {
                Ok(b) => i64::from(b.get(i).unwrap_or_default()),
                Err(_) => c
                    .i64()
                    .map_err(Error::polars("test"))?
                    .get(i)
                    .unwrap_or_default(),
            });
        }
        let key = (
            customers.get(i).unwrap_or_default().to_owned(),
            format_hour(hour_col.get(i).unwrap_or_default()),
        );
        assert!(
            out.insert(key, row).is_none(),
            "one row per customer and hour"
        );
    }
    Ok(out)
}

fn key(customer: &str, hour: &str) -> (String, String) {
    (customer.to_owned(), format!("2026-03-01T{hour}"))
}

/// A hand-worked log: two runs, a duplicate, a malformed line, a conflict, a late reading.
#[test]
fn hand_worked_runs() -> Result<()> {
    let temp_dir = crate::testing::TempDir::new("run");
    let dir = temp_dir.path().to_path_buf();
    let log = dir.join("log");
    add_file(
        &log,
        "2026-03-01T06",
        "a.jsonl",
        &[
            line("M1", "C1", "05:10", "1.5"),
            line("M2", "C1", "05:20", "0.25"),
            line("M1", "C1", "06:05", "2"),
            line("M1", "C1", "05:10", "1.5"),
            "not json".to_owned(),
            line("M3", "C2", "06:10", "0.001"),
        ],
    )?;
    let (log_s, out_s) = (
        log.to_string_lossy().into_owned(),
        dir.join("out").to_string_lossy().into_owned(),
    );
    let config = Config::new(&Params {
        input_root: &log_s,
        output_root: &out_s,
        ..Params::default()
    })?;

    let m = run_once(&config)?;
    let c = m.counts;
    assert_eq!(
        (c.lines_read, c.accepted, c.duplicates, c.malformed),
        (6, 4, 1, 1)
    );
    let hourly = hourly_rows(&config)?;
    assert_eq!(
        hourly,
        BTreeMap::from([
            (key("C1", "05"), vec![1750, 2, 2]),
            (key("C1", "06"), vec![2000, 1, 1]),
            (key("C2", "06"), vec![1, 1, 1]),
        ])
    );
    let cumulative = cumulative_rows(&config)?;
    assert_eq!(
        cumulative.len(),
        2 * 7,
        "two customers, hours 00 through 06"
    );
    assert_eq!(cumulative[&key("C1", "04")], vec![0, 0]);
    assert_eq!(cumulative[&key("C1", "05")], vec![1750, 1750]);
    assert_eq!(cumulative[&key("C1", "06")], vec![2000, 3750]);
    assert_eq!(cumulative[&key("C2", "05")], vec![0, 0]);
    assert_eq!(cumulative[&key("C2", "06")], vec![1, 1]);

    // Nothing new: nothing changes.
    assert_eq!(run_once(&config)?.files, 0);

    // A conflicting copy of M1's 05:10 reading, a new reading for 06, one 8 days late.
    add_file(&log, "2026-03-01T07", "b.jsonl", &[
        line("M1", "C1", "05:10", "9"),
        line("M2", "C1", "06:30", "1"),
        r#"{"meter_id":"M2","customer_id":"C1","recorded_at":"2026-02-21T06:30:00Z","usage_liters":1,"ingested_at":"x"}"#.to_owned(),
    ])?;
    let c = run_once(&config)?.counts;
    assert_eq!(
        (c.lines_read, c.accepted, c.conflicts, c.late),
        (3, 1, 1, 1)
    );
    let hourly = hourly_rows(&config)?;
    assert_eq!(
        hourly[&key("C1", "05")],
        vec![1750, 2, 2],
        "the first copy wins"
    );
    assert_eq!(hourly[&key("C1", "06")], vec![3000, 2, 2]);
    let cumulative = table(&config, &CUMULATIVE_USAGE, &["cumulative_ml", "is_final"])?;
    assert_eq!(cumulative[&key("C1", "06")], vec![4750, 0]);
    assert_eq!(cumulative.len(), 2 * 7);

    // A new customer two hours later: every customer gets rows up to 08, the newcomer zero
    // rows from the month's first hour, and earlier totals carry forward.
    add_file(
        &log,
        "2026-03-01T09",
        "c.jsonl",
        &[line("M9", "C3", "08:30", "0.75")],
    )?;
    assert_eq!(run_once(&config)?.counts.accepted, 1);
    let cumulative = cumulative_rows(&config)?;
    assert_eq!(
        cumulative.len(),
        3 * 9,
        "three customers, hours 00 through 08"
    );
    assert_eq!(cumulative[&key("C1", "07")], vec![0, 4750]);
    assert_eq!(cumulative[&key("C1", "08")], vec![0, 4750]);
    assert_eq!(cumulative[&key("C2", "08")], vec![0, 1]);
    assert_eq!(cumulative[&key("C3", "00")], vec![0, 0]);
    assert_eq!(cumulative[&key("C3", "07")], vec![0, 0]);
    assert_eq!(cumulative[&key("C3", "08")], vec![750, 750]);

    // Runs that each reach back into hour 06 leave small dedup-state files there; they are
    // compacted, and what they held still deduplicates.
    for (i, folder) in [
        "2026-03-01T10",
        "2026-03-01T11",
        "2026-03-01T12",
        "2026-03-01T13",
    ]
    .iter()
    .enumerate()
    {
        let meter = format!("M2{i}");
        add_file(
            &log,
            folder,
            "d.jsonl",
            &[line(&meter, "C4", &format!("06:4{i}"), "1")],
        )?;
        assert_eq!(run_once(&config)?.counts.accepted, 1);
    }
    let state = block_on(Table::open_or_create(
        &DEDUP_STATE.dir(&config),
        &DEDUP_STATE,
    ))??;
    let six_o_clock = parse_hour("2026-03-01T06").ok_or(Error::Hour { hour: 6 })?;
    let six = BTreeSet::from([six_o_clock]);
    let files = state
        .small_files(&six, usize::MAX, 1)
        .into_values()
        .flatten()
        .collect::<Vec<_>>();
    assert!(
        files.len() < STATE_SMALL_FILES,
        "{} files in hour 06",
        files.len()
    );
    let stored = block_on(state.read_hours(&six))??;
    assert_eq!(stored.height(), 3 + 4);
    // Read from several files, returned as one chunk per column: Polars' joins over a frame of
    // many chunks are many times slower.
    assert!(files.len() > 1, "{} files in hour 06", files.len());
    assert_eq!(stored.max_n_chunks(), 1);
    add_file(
        &log,
        "2026-03-01T14",
        "e.jsonl",
        &[line("M20", "C4", "06:40", "1")],
    )?;
    let c = run_once(&config)?.counts;
    assert_eq!((c.accepted, c.duplicates), (0, 1));
    assert_eq!(cumulative_rows(&config)?[&key("C4", "08")], vec![0, 4000]);
    Ok(())
}

/// One ingestion hour's readings: `(meter, customer, recorded, liters)`.
type HourReadings<'a> = (&'a str, Vec<(&'a str, &'a str, &'a str, &'a str)>);

/// What the last of a few hourly runs did, run step by step: its two table steps' reports.
struct LastRun {
    hourly: TableReport,
    cumulative: TableReport,
    config: Config,
    _dir: crate::testing::TempDir,
}

/// Runs `readings` (on 2026-03-01) one ingestion hour a run, and checks that the last run
/// left the main files of the hours `kept` as they were, in both tables.
fn runs_keeping_main_files(
    name: &str,
    readings: &[HourReadings<'_>],
    kept: &[&str],
) -> Result<LastRun> {
    let temp_dir = crate::testing::TempDir::new(name);
    let dir = temp_dir.path().to_path_buf();
    let log = dir.join("log");
    let (log_s, out_s) = (
        log.to_string_lossy().into_owned(),
        dir.join("out").to_string_lossy().into_owned(),
    );
    let config = || {
        Config::new(&Params {
            input_root: &log_s,
            output_root: &out_s,
            ..Params::default()
        })
    };
    let main_files = |config: &Config| -> Result<Vec<BTreeSet<String>>> {
        let mut files = Vec::new();
        for spec in [&HOURLY_USAGE, &CUMULATIVE_USAGE] {
            let t = block_on(Table::open_or_create(&spec.dir(config), spec))??;
            for hour in kept {
                let hour =
                    parse_hour(&format!("2026-03-01T{hour}")).ok_or(Error::Hour { hour: 0 })?;
                files.push(t.files_of(hour, crate::table::Role::Main));
            }
        }
        Ok(files)
    };
    let Some(((last_folder, last_lines), earlier)) = readings.split_last() else {
        return Err(Error::Hour { hour: 0 });
    };
    let lines = |lines: &[(&str, &str, &str, &str)]| -> Vec<String> {
        lines.iter().map(|&(m, c, t, l)| line(m, c, t, l)).collect()
    };
    for (folder, readings) in earlier {
        add_file(
            &log,
            &format!("2026-03-01T{folder}"),
            "a.jsonl",
            &lines(readings),
        )?;
        run_once(&config()?)?;
    }
    add_file(
        &log,
        &format!("2026-03-01T{last_folder}"),
        "a.jsonl",
        &lines(last_lines),
    )?;
    let config = config()?;
    let before = main_files(&config)?;
    let mut run = Run::start(&config)?;
    run.parse()?;
    run.dedup()?;
    let hourly = run.write_hourly()?;
    let cumulative = run.write_cumulative()?;
    run.finish()?;
    let after = main_files(&config)?;
    assert_eq!(before, after, "the main files of hours {kept:?} stay");
    assert!(after.iter().all(|files| files.len() == 1));
    Ok(LastRun {
        hourly,
        cumulative,
        config,
        _dir: temp_dir,
    })
}

/// A meter goes quiet and replays: the hours written while it was quiet keep it in their side
/// files, and the replay rewrites those alone, in both tables.
#[test]
fn a_replay_rewrites_side_files_only() -> Result<()> {
    // C1's meter reports steadily (1 L a reading); C2's meter reports at 00:10 (2 L), then is
    // silent until the hour 03 run, which brings what it recorded meanwhile.
    let readings = [
        (
            "00",
            vec![
                ("M1", "C1", "00:10", "1"),
                ("M1", "C1", "00:40", "1"),
                ("M2", "C2", "00:10", "2"),
            ],
        ),
        (
            "01",
            vec![("M1", "C1", "01:10", "1"), ("M1", "C1", "01:40", "1")],
        ),
        ("02", vec![("M1", "C1", "02:10", "1")]),
        (
            "03",
            vec![
                ("M1", "C1", "03:10", "1"),
                ("M2", "C2", "00:40", "2"),
                ("M2", "C2", "01:10", "2"),
                ("M2", "C2", "01:40", "2"),
                ("M2", "C2", "02:10", "2"),
            ],
        ),
    ];
    let last = runs_keeping_main_files("side", &readings, &["01", "02"])?;
    // Hours 01 and 02: side files only. Hour 00 was written before C2 went quiet, so its main
    // file holds C2 and is rewritten; 03 is new.
    assert_eq!((last.hourly.partitions, last.hourly.side_only), (4, 2));
    assert_eq!(
        (last.cumulative.partitions, last.cumulative.side_only),
        (4, 2)
    );
    let config = last.config;
    let hourly = hourly_rows(&config)?;
    let expected_hourly = BTreeMap::from([
        (key("C1", "00"), vec![2000, 2, 1]),
        (key("C1", "01"), vec![2000, 2, 1]),
        (key("C1", "02"), vec![1000, 1, 1]),
        (key("C1", "03"), vec![1000, 1, 1]),
        // M2's 00:40 reading joins its 00:10 one: still one meter.
        (key("C2", "00"), vec![4000, 2, 1]),
        (key("C2", "01"), vec![4000, 2, 1]),
        (key("C2", "02"), vec![2000, 1, 1]),
    ]);
    assert_eq!(hourly, expected_hourly);
    let cumulative = cumulative_rows(&config)?;
    let expected_cumulative = BTreeMap::from([
        (key("C1", "00"), vec![2000, 2000]),
        (key("C1", "01"), vec![2000, 4000]),
        (key("C1", "02"), vec![1000, 5000]),
        (key("C1", "03"), vec![1000, 6000]),
        (key("C2", "00"), vec![4000, 4000]),
        (key("C2", "01"), vec![4000, 8000]),
        (key("C2", "02"), vec![2000, 10000]),
        (key("C2", "03"), vec![0, 10000]),
    ]);
    assert_eq!(cumulative, expected_cumulative);
    Ok(())
}

/// A meter back from an outage sends its buffer across the start of an ingestion hour: the
/// run that hears it return keeps its customer apart still, so the rest of the replay, in the
/// next run, rewrites side files only.
#[test]
fn a_replay_across_two_runs_rewrites_side_files_only() -> Result<()> {
    // C2's meter reports at 00:10, then is silent; back near the end of hour 02, it sends its
    // 02:40 reading in the hour 02 folder and the rest of its buffer in the hour 03 one.
    let readings = [
        (
            "00",
            vec![
                ("M1", "C1", "00:10", "1"),
                ("M1", "C1", "00:40", "1"),
                ("M2", "C2", "00:10", "2"),
            ],
        ),
        (
            "01",
            vec![("M1", "C1", "01:10", "1"), ("M1", "C1", "01:40", "1")],
        ),
        (
            "02",
            vec![("M1", "C1", "02:10", "1"), ("M2", "C2", "02:40", "2")],
        ),
        (
            "03",
            vec![
                ("M1", "C1", "03:10", "1"),
                ("M2", "C2", "00:40", "2"),
                ("M2", "C2", "01:10", "2"),
                ("M2", "C2", "01:40", "2"),
                ("M2", "C2", "02:10", "2"),
                ("M2", "C2", "03:10", "2"),
            ],
        ),
    ];
    let last = runs_keeping_main_files("straddle", &readings, &["01", "02"])?;
    // Hour 00's main file holds C2 (written before its meter went quiet); 03 is new.
    assert_eq!((last.hourly.partitions, last.hourly.side_only), (4, 2));
    assert_eq!(
        (last.cumulative.partitions, last.cumulative.side_only),
        (4, 2)
    );
    let hourly = BTreeMap::from([
        (key("C1", "00"), vec![2000, 2, 1]),
        (key("C1", "01"), vec![2000, 2, 1]),
        (key("C1", "02"), vec![1000, 1, 1]),
        (key("C1", "03"), vec![1000, 1, 1]),
        (key("C2", "00"), vec![4000, 2, 1]),
        (key("C2", "01"), vec![4000, 2, 1]),
        (key("C2", "02"), vec![4000, 2, 1]),
        (key("C2", "03"), vec![2000, 1, 1]),
    ]);
    assert_eq!(hourly_rows(&last.config)?, hourly);
    let cumulative = BTreeMap::from([
        (key("C1", "00"), vec![2000, 2000]),
        (key("C1", "01"), vec![2000, 4000]),
        (key("C1", "02"), vec![1000, 5000]),
        (key("C1", "03"), vec![1000, 6000]),
        (key("C2", "00"), vec![4000, 4000]),
        (key("C2", "01"), vec![4000, 8000]),
        (key("C2", "02"), vec![4000, 12000]),
        (key("C2", "03"), vec![2000, 14000]),
    ]);
    assert_eq!(cumulative_rows(&last.config)?, cumulative);
    Ok(())
}

/// The customers in `spec`'s side files of an hour of 2026-03-01.
fn side_customers(config: &Config, spec: &'static Spec, hour: &str) -> Result<BTreeSet<String>> {
    let hour = parse_hour(&format!("2026-03-01T{hour}")).ok_or(Error::Hour { hour: 0 })?;
    let t = block_on(Table::open_or_create(&spec.dir(config), spec))??;
    let paths = t.files_of(hour, crate::table::Role::Side);
    let rows = block_on(t.read_files(&BTreeSet::from([hour]), &paths))??;
    Ok(super::layout::customers(&rows)?.into_iter().collect())
}

/// An hour's files taken in two batches: the second keeps apart the meter back from an outage,
/// not the steady meter the first batch happened not to hold.
#[test]
fn an_hour_in_two_batches_keeps_apart_only_meters_back_from_quiet() -> Result<()> {
    let temp_dir = crate::testing::TempDir::new("two-batches");
    let log = temp_dir.path().join("log");
    let out = temp_dir.path().join("out");
    let (log_s, out_s) = (log.to_string_lossy(), out.to_string_lossy());
    // M2 is silent in hour 01; M3 reports steadily, but hour 02's first file holds only M1.
    // The second file brings M3, a late reading of C1 (so hour 02 is written whole again,
    // split afresh) and M2's return with part of its buffer.
    let files = [
        (
            "00",
            "a.jsonl",
            vec![
                ("M1", "C1", "00:10", "1"),
                ("M2", "C2", "00:10", "2"),
                ("M3", "C3", "00:10", "3"),
            ],
        ),
        (
            "01",
            "a.jsonl",
            vec![("M1", "C1", "01:10", "1"), ("M3", "C3", "01:10", "3")],
        ),
        ("02", "a.jsonl", vec![("M1", "C1", "02:10", "1")]),
        (
            "02",
            "b.jsonl",
            vec![
                ("M1", "C1", "02:05", "1"),
                ("M3", "C3", "02:10", "3"),
                ("M2", "C2", "02:20", "2"),
                ("M2", "C2", "01:10", "2"),
            ],
        ),
    ];
    for (folder, name, readings) in files {
        let lines: Vec<String> = readings
            .iter()
            .map(|&(m, c, t, l)| line(m, c, t, l))
            .collect();
        add_file(&log, &format!("2026-03-01T{folder}"), name, &lines)?;
    }
    let mut config = Config::new(&Params {
        input_root: &log_s,
        output_root: &out_s,
        ..Params::default()
    })?;
    // Each file a batch of its own: a file is about 150 bytes a line.
    config.chunk_bytes = Some(100);
    let run = Run::start(&config)?;
    let later = run.later_files();
    run.run_steps()?;
    assert_eq!(
        catch_up(&config, later)?.batches.len(),
        3,
        "one file a batch"
    );
    let (hourly, cumulative) = (hourly_rows(&config)?, cumulative_rows(&config)?);
    assert_eq!(hourly[&key("C1", "02")], vec![2000, 2, 1]);
    assert_eq!(hourly[&key("C2", "02")], vec![2000, 1, 1]);
    assert_eq!(cumulative[&key("C2", "02")], vec![2000, 6000]);
    assert_eq!(cumulative[&key("C3", "02")], vec![3000, 9000]);
    for spec in [&HOURLY_USAGE, &CUMULATIVE_USAGE] {
        assert_eq!(
            side_customers(&config, spec, "02")?,
            BTreeSet::from(["C2".to_owned()]),
            "{}",
            spec.name
        );
    }
    Ok(())
}

/// A run takes what its listing found, in chunks; files that arrive meanwhile wait for the
/// next run.
#[test]
fn a_backlog_runs_in_chunks_of_what_was_there() -> Result<()> {
    let temp_dir = crate::testing::TempDir::new("chunks");
    let dir = temp_dir.path().to_path_buf();
    let log = dir.join("log");
    for (folder, reading) in [("00", "00:10"), ("01", "01:10"), ("02", "02:10")] {
        add_file(
            &log,
            &format!("2026-03-01T{folder}"),
            "a.jsonl",
            &[line("M1", "C1", reading, "1")],
        )?;
    }
    let (log_s, out_s) = (
        log.to_string_lossy().into_owned(),
        dir.join("out").to_string_lossy().into_owned(),
    );
    let mut config = Config::new(&Params {
        input_root: &log_s,
        output_root: &out_s,
        ..Params::default()
    })?;
    // Chunks of one file: each file is about 150 bytes.
    config.chunk_bytes = Some(100);
    let run = Run::start(&config)?;
    assert_eq!(run.plan_report().files.len(), 1);
    assert_eq!(run.plan_report().later, 2);
    let later = run.later_files();
    run.run_steps()?;
    // A file that arrives during the run is not part of it.
    add_file(
        &log,
        "2026-03-01T03",
        "a.jsonl",
        &[line("M1", "C1", "03:10", "1")],
    )?;
    let backlog = catch_up(&config, later)?;
    let batches: Vec<(i64, usize)> = backlog
        .batches
        .iter()
        .map(|b| (b.batch_id, b.files))
        .collect();
    assert_eq!(batches, [(1, 1), (2, 1)]);
    assert_eq!(
        cumulative_rows(&config)?[&key("C1", "02")],
        vec![1000, 3000]
    );
    // The next run takes it.
    let next = Run::start(&config)?;
    assert_eq!(
        next.plan_report().files[0].0,
        "ingest_hour=2026-03-01T03/a.jsonl"
    );
    drop(next);
    Ok(())
}
