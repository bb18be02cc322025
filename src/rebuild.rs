//! Rebuild: recompute every table from the input log as it is now, after a data error in the
//! log was fixed (a corrected file put in place of a bad one).
//!
//! The committed batches are replayed with the same files as before (their plans are kept in
//! the checkpoint folder), so the result is exactly what the incremental runs would have
//! produced had the log been right from the start: same batches, same watermark decisions. The
//! replay writes into a staging folder (`<output_root>/_rebuild`) that no reader looks at; then
//! each table is replaced by one Delta commit (readers see the old version or the new one, never
//! a mix within a table), the dedup state likewise, and the checkpoint last.
//!
//! The rebuild is a batch of its own: its id is past every batch the checkpoint and the tables
//! hold, every table records it, and its plan (`rebuild: true`, no files) stays in the checkpoint
//! folder, so a later rebuild replays the batches before it, passes over it and replays those
//! after it: a rebuild works any number of times. Before anything is written the tables must
//! agree with the checkpoint, as for a run.
//!
//! With `rebuild_from_log`, the batches are not replayed but planned afresh from the log, as
//! runs from scratch would plan them now (folders dated in the future held back): the way back
//! for tables whose committed plans are themselves wrong.
//!
//! Closed bills: the rebuild recomputes them like every other row, so a corrected log file can
//! change a bill already sent. Before it replaces anything, it writes a report of every closed
//! bill that differs (`<output_root>/_reports/bill-changes-batch-<id>.jsonl`). Tables built
//! with another `billing_timezone` are refused unless `rewrite_closed_bills` is set: then they
//! are all recomputed in the run's zone, in place, and store it.
//!
//! Crash safety: a marker (`_rebuild/rebuild.json`) written before the first replacement makes
//! ordinary runs refuse until a rebuild finished; a rebuild started again after a crash finishes
//! with the marker's batch id and skips the replacements already committed (they carry it as
//! their application transaction). A rebuild that finds no marker removes whatever an
//! interrupted replay left in the staging folder and replays from batch 0.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::query::bills::changed_bills;
use crate::run::{Run, catch_up, checked_tables_pinned};
use crate::state::{Checkpoint, FORMAT_1_STATE, Plan, RunLock, Store, marker};
use crate::storage::Location;
use crate::table::{self, Committed, MONTHLY_BILLS, Pin, Spec, Table, block_on, pins};

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// False when no rebuild was asked for.
    pub requested: bool,
    /// Batches replayed.
    pub batches: i64,
    /// Per table: name, rows now, what the replacing commit did.
    pub tables: Vec<(&'static str, usize, Committed)>,
    /// The closed bills it changed.
    pub bill_changes: BillChanges,
}

/// The closed bills a rebuild changed, reported before its first replacement.
#[derive(Debug, Clone, Default)]
pub struct BillChanges {
    /// How many (`None`: the rebuild finished an interrupted one, which wrote the report).
    pub bills: Option<usize>,
    /// The report, one JSON object per changed bill; `None` when no bill changed.
    pub report: Option<String>,
}

/// Where rebuild `batch` reports the closed bills it changed.
fn bill_changes_report(config: &Config, batch: i64) -> Location {
    config
        .output_root
        .join(REPORTS)
        .join(&format!("bill-changes-batch-{batch}.jsonl"))
}

/// The folder of the rebuilds' reports under `output_root`.
const REPORTS: &str = "_reports";

fn staging_config(config: &Config) -> Config {
    let root = config.output_root.join(marker::STAGING);
    Config {
        checkpoint_dir: root.join("_checkpoint"),
        output_root: root,
        batch_cap: None,
        chunk_bytes: None,
        copy_days: false,
        ..config.clone()
    }
}

/// Rebuilds every table from the log; see the module documentation.
pub fn rebuild(config: &Config) -> Result<RebuildReport> {
    crate::memory::limit_arenas();
    let lock = RunLock::acquire(&config.checkpoint_dir)?;
    let store = Store::new(&config.checkpoint_dir);
    let staging = staging_config(config);
    let checkpoint = store.load_for_rebuild()?;
    // An interrupted rebuild is finished with the batch id it started with.
    let unfinished = marker::batch(&config.output_root)?;
    if unfinished.is_none() && store.load_plan(checkpoint.next_batch)?.is_some() {
        return Err(Error::BatchUnfinished {
            batch: checkpoint.next_batch,
        });
    }
    // The tables must agree with the checkpoint before anything is written (an earlier
    // layout's dedup state lives elsewhere: its rebuild starts from the output tables alone).
    // Agreeing, no table holds a batch after the checkpoint's last (or the unfinished
    // rebuild's), so the next batch id is past every batch any table holds.
    if checkpoint.is_current() {
        checked_tables_pinned(config, &checkpoint, unfinished, true, &live_pins(config))?;
    }
    let rebuild_batch = unfinished.unwrap_or(checkpoint.next_batch);

    // 1. Replay batches 0..rebuild_batch into the staging folder, with the files' sizes now, or
    // plan them afresh from the log. Without a marker the replay starts afresh: what an
    // interrupted replay left is removed.
    let staged = Store::new(&staging.checkpoint_dir);
    if unfinished.is_none() {
        staging.output_root.remove_all()?;
        if config.rebuild_from_log {
            replan(config, &staging)?;
        }
    }
    // (With a marker, the replay or the fresh plan finished before it was written.)
    let replayed_to = if unfinished.is_some() || config.rebuild_from_log {
        0
    } else {
        rebuild_batch
    };
    let staged_to = staged.load()?.next_batch;
    let rebuild_batch = rebuild_batch.max(staged_to);
    replay(config, &staging, &store, staged_to..replayed_to)?;

    // 2. The closed bills that change, reported; from here on ordinary runs must wait for the
    // rebuild to finish. (The lock still this rebuild's: no other run took a batch id
    // meanwhile.)
    lock.check()?;
    let report = bill_changes_report(config, rebuild_batch);
    let bill_changes = if unfinished.is_none() {
        report_bill_changes(config, &staging, &report)?
    } else {
        BillChanges {
            bills: None,
            report: report.exists()?.then(|| report.to_string()),
        }
    };
    if unfinished.is_none() {
        marker::write(&config.output_root, rebuild_batch)?;
    }

    // 3. Replace each table by the staged one, one commit each.
    let tables = table::ALL
        .into_iter()
        .map(|spec| {
            let (live_dir, staged_dir) = (spec.dir(config), spec.dir(&staging));
            let (rows, committed) =
                replace_table(&live_dir, &staged_dir, spec, rebuild_batch, config)?;
            Ok((spec.name, rows, committed))
        })
        .collect::<Result<Vec<_>>>()?;

    // 4. The plans the tables now stand for, then the checkpoint.
    lock.check()?;
    let replayed = record_plans(&store, &staged, rebuild_batch)?;
    store.copy_archive_from(&staged, &replayed)?;
    lock.check()?;
    store.commit(&replayed)?;
    store.remove_old_archives(&replayed, rebuild_batch);
    // The dedup state of the earlier layout, replaced by this version's tables above.
    config.checkpoint_dir.join(FORMAT_1_STATE).remove_all()?;
    marker::finish(&config.output_root)?;
    Ok(RebuildReport {
        requested: true,
        batches: rebuild_batch,
        tables,
        bill_changes,
    })
}

/// Replays the committed plans of `batches` into the staging tables, with the files' sizes
/// now; an earlier rebuild's batch is passed over.
fn replay(
    config: &Config,
    staging: &Config,
    store: &Store,
    batches: std::ops::Range<i64>,
) -> Result<()> {
    let staged = Store::new(&staging.checkpoint_dir);
    for batch in batches {
        let Some(mut plan) = store.load_plan(batch)? else {
            return Err(Error::Checkpoint {
                path: config.checkpoint_dir.join("batches").display_path(),
                reason: format!("the plan of batch {batch} is missing: cannot replay it"),
            });
        };
        if plan.rebuild {
            pass_over_rebuild(staging, &staged, &plan)?;
            continue;
        }
        for file in &mut plan.files {
            let input = config.input_root.join(&file.rel_path);
            file.path = input.display_path();
            file.size = input.size()?;
        }
        staged.replace_plan(&plan)?;
        // The saved plan, resumed as is (no listing: the replay takes no other file).
        Run::start_next(staging, &[])?.run_steps()?;
    }
    Ok(())
}

/// Writes the plans the replaced tables stand for into the live checkpoint folder (replayed
/// with the files' sizes now, or planned afresh; the ids a fresh plan did not use, up to the
/// rebuild's, are passed over like the rebuild's own: a later rebuild replays none of them);
/// returns the checkpoint to commit: the staged one, past the rebuild batch.
fn record_plans(store: &Store, staged: &Store, rebuild_batch: i64) -> Result<Checkpoint> {
    let mut replayed = staged.load()?;
    let pass_over = |batch_id: i64| Plan {
        batch_id,
        watermark_before: replayed.watermark_hour,
        files: Vec::new(),
        clock_skew_minutes: None,
        rebuild: true,
    };
    for batch in 0..rebuild_batch {
        match staged.load_plan(batch)? {
            Some(plan) => store.replace_plan(&plan)?,
            None => store.replace_plan(&pass_over(batch))?,
        }
    }
    store.replace_plan(&pass_over(rebuild_batch))?;
    replayed.next_batch = rebuild_batch + 1;
    Ok(replayed)
}

/// The pins the live tables are checked against: the run's, or none when the rebuild may
/// replace tables built with another time zone.
fn live_pins(config: &Config) -> Vec<Pin> {
    if config.rewrite_closed_bills {
        Vec::new()
    } else {
        pins(config)
    }
}

/// Compares the live bills with the staged ones and writes the report of those that differ
/// (nothing when none does).
fn report_bill_changes(
    config: &Config,
    staging: &Config,
    report: &Location,
) -> Result<BillChanges> {
    let open = |config: &Config| {
        block_on(Table::open_existing(
            &MONTHLY_BILLS.dir(config),
            &MONTHLY_BILLS,
            &[],
        ))
    };
    let (live, staged) = (open(config)??, open(staging)??);
    let rows = |table: &Option<Table>| match table {
        Some(table) => block_on(table.read_hours(&Default::default()))?,
        None => MONTHLY_BILLS.empty_frame(),
    };
    let changed = changed_bills(&rows(&live)?, &rows(&staged)?)?;
    if changed.is_empty() {
        return Ok(BillChanges {
            bills: Some(0),
            report: None,
        });
    }
    let zone_before = match &live {
        Some(table) => table.stored_pin("billing_timezone")?,
        None => None,
    };
    let zone_after = config.billing_timezone.name();
    let mut lines = Vec::new();
    for bill in &changed {
        let mut line = serde_json::to_value(bill).map_err(|e| {
            Error::table_data(
                MONTHLY_BILLS.name,
                "*",
                format!("reporting a changed bill: {e}"),
            )
        })?;
        if let Some(fields) = line.as_object_mut() {
            fields.insert("billing_timezone_before".into(), zone_before.clone().into());
            fields.insert("billing_timezone_after".into(), zone_after.into());
        }
        lines.extend(line.to_string().into_bytes());
        lines.push(b'\n');
    }
    report.write_atomic(lines)?;
    Ok(BillChanges {
        bills: Some(changed.len()),
        report: Some(report.to_string()),
    })
}

/// Plans the staging tables' batches afresh from the log, as runs from scratch would now: the
/// files present, in batches of `chunk_mb`, folders dated in the future held back.
fn replan(config: &Config, staging: &Config) -> Result<()> {
    let fresh = Config {
        chunk_bytes: config.chunk_bytes,
        ..staging.clone()
    };
    let run = Run::start(&fresh)?;
    let later = run.later_files();
    run.run_steps()?;
    catch_up(&fresh, later)?;
    Ok(())
}

/// Replays an earlier rebuild's batch into the staging tables: it took no files, so each table
/// records the batch alone, as the live tables did, and the staged checkpoint moves past it.
fn pass_over_rebuild(staging: &Config, staged: &Store, plan: &Plan) -> Result<()> {
    for spec in table::ALL {
        let mut table = block_on(Table::open_pinned(&spec.dir(staging), spec, &pins(staging)))??;
        block_on(table.commit_removing(
            plan.batch_id,
            None,
            &Default::default(),
            &Default::default(),
        ))??;
    }
    staged.replace_plan(plan)?;
    let mut checkpoint = staged.load()?;
    checkpoint.next_batch = plan.batch_id + 1;
    staged.commit(&checkpoint)
}

fn replace_table(
    live_dir: &Location,
    staged_dir: &Location,
    spec: &'static Spec,
    batch: i64,
    config: &Config,
) -> Result<(usize, Committed)> {
    let pins = pins(config);
    let staged = block_on(Table::open_pinned(staged_dir, spec, &pins))??;
    let mut live = block_on(Table::open_pinned(live_dir, spec, &live_pins(config)))??;
    block_on(live.upgrade())??;
    let replaced = live.replace_with(&staged, batch)?;
    // The table now holds rows computed with the run's pins (a rewrite in another time zone:
    // its first rebuild stores the zone; a rebuild finishing it finds it stored).
    block_on(live.store_pins(&pins))??;
    Ok(replaced)
}
