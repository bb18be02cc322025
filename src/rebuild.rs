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

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::checkpoint::Store;
use crate::config::Config;
use crate::delta::{self, Committed, Table};
use crate::error::{Error, Result};
use crate::html;
use crate::lock::RunLock;
use crate::report::Shown;
use crate::run::{Run, block_on};

/// The staging folder under the output root.
pub const STAGING: &str = "_rebuild";
const MARKER: &str = "rebuild.json";

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

/// True while a rebuild of the tables under `output_root` is unfinished.
pub fn in_progress(output_root: &Path) -> bool {
    output_root.join(STAGING).join(MARKER).is_file()
}

fn staging_config(config: &Config) -> Config {
    let root = config.output_root.join(STAGING);
    Config {
        checkpoint_dir: root.join("_checkpoint"),
        output_root: root,
        batch_cap: None,
        ..config.clone()
    }
}

/// Rebuilds every table from the log; see the module documentation.
pub fn rebuild(config: &Config) -> Result<RebuildReport> {
    let _lock = RunLock::acquire(&config.checkpoint_dir)?;
    let store = Store::new(&config.checkpoint_dir);
    let staging = staging_config(config);
    let marker = staging.output_root.join(MARKER);
    // An interrupted rebuild is finished with the batch id it started with.
    let rebuild_batch = match std::fs::read_to_string(&marker) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["batch"].as_i64())
            .ok_or_else(|| Error::Checkpoint {
                path: marker.clone(),
                reason: "unreadable rebuild marker".to_owned(),
            })?,
        Err(_) => store.load()?.next_batch,
    };
    if !in_progress(&config.output_root) && store.load_plan(rebuild_batch)?.is_some() {
        return Err(Error::Protocol(format!(
            "batch {rebuild_batch} is planned but not finished: run the notebook once without \
             rebuild to finish it, then rebuild"
        )));
    }

    // 1. Replay batches 0..rebuild_batch into the staging folder, with the files' sizes now.
    let staged = Store::new(&staging.checkpoint_dir);
    for batch in staged.load()?.next_batch..rebuild_batch {
        let Some(mut plan) = store.load_plan(batch)? else {
            return Err(Error::Checkpoint {
                path: config.checkpoint_dir.join("batches"),
                reason: format!("the plan of batch {batch} is missing: cannot replay it"),
            });
        };
        for file in &mut plan.files {
            file.path = config.input_root.join(&file.rel_path);
            file.size = std::fs::metadata(&file.path)
                .map_err(|e| Error::io("reading", &file.path, e))?
                .len();
        }
        staged.save_plan(&plan)?;
        let mut run = Run::start(&staging)?;
        run.parse()?;
        run.dedup()?;
        run.write_hourly()?;
        run.write_cumulative()?;
        run.finish()?;
    }

    // 2. From here on ordinary runs must wait for the rebuild to finish.
    std::fs::write(&marker, format!("{{\"batch\": {rebuild_batch}}}\n"))
        .map_err(|e| Error::io("writing", &marker, e))?;
    crate::faults::durable("rebuild marker written");

    // 3. Replace each table by the staged one, one commit each.
    let mut tables = Vec::new();
    for spec in delta::ALL {
        let (live_dir, staged_dir) = (config.table_dir(spec), staging.table_dir(spec));
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
    remove_staging(&staging.output_root)?;
    Ok(RebuildReport {
        requested: true,
        batches: rebuild_batch,
        tables,
    })
}

fn replace_table(
    live_dir: &Path,
    staged_dir: &Path,
    spec: &'static delta::Spec,
    batch: i64,
) -> Result<(usize, Committed)> {
    let staged = block_on(Table::open_or_create(staged_dir, spec))??;
    // Every staged row (an unpartitioned table has no partitions and is read whole).
    let partitions = block_on(staged.partitions())??;
    let rows = block_on(staged.read_hours(&partitions))??;
    // Every live file: by partition, or for an unpartitioned table by path.
    let mut live = block_on(Table::open_or_create(live_dir, spec))??;
    let live_partitions = block_on(live.partitions())??;
    let live_files = block_on(live.appended_files(0))??;
    let replace: BTreeSet<i64> = live_partitions.union(&partitions).copied().collect();
    let committed = block_on(live.commit_removing(batch, Some(&rows), &replace, &live_files))??;
    Ok((rows.height(), committed))
}

fn remove_staging(dir: &Path) -> Result<()> {
    // The marker goes first: once it is gone the rebuild is over, whatever is left behind.
    let marker = dir.join(MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|e| Error::io("removing", &marker, e))?;
    }
    std::fs::remove_dir_all(dir).map_err(|e| Error::io("removing", dir, e))
}

impl fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.requested {
            return write!(
                f,
                "no rebuild requested (set rebuild = true to recompute every table from the log)"
            );
        }
        writeln!(f, "rebuilt from the log: {} batches replayed", self.batches)?;
        for (name, rows, committed) in &self.tables {
            let what = match committed {
                Committed::Version(v) => format!("replaced in version {v}"),
                Committed::AlreadyCommitted => "already replaced".to_owned(),
                Committed::Nothing => "empty, unchanged".to_owned(),
            };
            writeln!(f, "  {name}: {rows} rows, {what}")?;
        }
        Ok(())
    }
}

impl Shown for RebuildReport {
    fn html(&self) -> String {
        let text = self.to_string();
        let mut lines = text.lines();
        let mut out = html::para(lines.next().unwrap_or_default());
        let rows: Vec<Vec<&str>> = lines
            .filter_map(|l| l.trim().split_once(": "))
            .map(|(name, what)| vec![name, what])
            .collect();
        if !rows.is_empty() {
            out += &html::table(&["table", "result"], &rows);
        }
        out
    }
}
