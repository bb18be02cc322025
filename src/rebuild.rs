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
//! Crash safety: a marker (`_rebuild/rebuild.json`) written before the first replacement makes
//! ordinary runs refuse until a rebuild finished; a rebuild started again after a crash reuses
//! the staging folder and skips the replacements already committed (they carry the rebuild's
//! batch id as their application transaction).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::run::Run;
use crate::state::{FORMAT_1_STATE, RunLock, Store, marker};
use crate::storage::Location;
use crate::table::{self, Committed, Spec, Table, block_on};

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// False when no rebuild was asked for.
    pub requested: bool,
    /// Batches replayed.
    pub batches: i64,
    /// Per table: name, rows now, what the replacing commit did.
    pub tables: Vec<(&'static str, usize, Committed)>,
}

fn staging_config(config: &Config) -> Config {
    let root = config.output_root.join(marker::STAGING);
    Config {
        checkpoint_dir: root.join("_checkpoint"),
        output_root: root,
        batch_cap: None,
        chunk_bytes: None,
        ..config.clone()
    }
}

/// Rebuilds every table from the log; see the module documentation.
pub fn rebuild(config: &Config) -> Result<RebuildReport> {
    let _lock = RunLock::acquire(&config.checkpoint_dir)?;
    let store = Store::new(&config.checkpoint_dir);
    let staging = staging_config(config);
    // An interrupted rebuild is finished with the batch id it started with.
    let unfinished = marker::batch(&config.output_root)?;
    let rebuild_batch = match unfinished {
        Some(batch) => batch,
        None => store.load_for_rebuild()?.next_batch,
    };
    if unfinished.is_none() && store.load_plan(rebuild_batch)?.is_some() {
        return Err(Error::BatchUnfinished {
            batch: rebuild_batch,
        });
    }

    // 1. Replay batches 0..rebuild_batch into the staging folder, with the files' sizes now.
    let staged = Store::new(&staging.checkpoint_dir);
    for batch in staged.load()?.next_batch..rebuild_batch {
        let Some(mut plan) = store.load_plan(batch)? else {
            return Err(Error::Checkpoint {
                path: config.checkpoint_dir.join("batches").display_path(),
                reason: format!("the plan of batch {batch} is missing: cannot replay it"),
            });
        };
        for file in &mut plan.files {
            let input = config.input_root.join(&file.rel_path);
            file.path = input.display_path();
            file.size = input.size()?;
        }
        staged.save_plan(&plan)?;
        // The saved plan, resumed as is (no listing: the replay takes no other file).
        let mut run = Run::start_next(&staging, &[])?;
        run.parse()?;
        run.dedup()?;
        run.write_hourly()?;
        run.write_cumulative()?;
        run.finish()?;
    }

    // 2. From here on ordinary runs must wait for the rebuild to finish.
    marker::write(&config.output_root, rebuild_batch)?;

    // 3. Replace each table by the staged one, one commit each.
    let mut tables = Vec::new();
    for spec in table::ALL {
        let (live_dir, staged_dir) = (spec.dir(config), spec.dir(&staging));
        let (rows, committed) = replace_table(&live_dir, &staged_dir, spec, rebuild_batch)?;
        tables.push((spec.name, rows, committed));
    }

    // 4. The checkpoint: the replay's, with the batch plans' new sizes, past the rebuild batch.
    let mut replayed = staged.load()?;
    for batch in 0..rebuild_batch {
        if let Some(plan) = staged.load_plan(batch)? {
            store.save_plan(&plan)?;
        }
    }
    replayed.next_batch = rebuild_batch + 1;
    store.commit(&replayed)?;
    // The dedup state of the earlier layout, replaced by this version's tables above.
    config.checkpoint_dir.join(FORMAT_1_STATE).remove_all()?;
    marker::finish(&config.output_root)?;
    Ok(RebuildReport {
        requested: true,
        batches: rebuild_batch,
        tables,
    })
}

fn replace_table(
    live_dir: &Location,
    staged_dir: &Location,
    spec: &'static Spec,
    batch: i64,
) -> Result<(usize, Committed)> {
    let staged = block_on(Table::open_or_create(staged_dir, spec))??;
    let mut live = block_on(Table::open_or_create(live_dir, spec))??;
    live.replace_with(&staged, batch)
}
