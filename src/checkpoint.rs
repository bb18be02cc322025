//! The run checkpoint: which input files are committed, the watermark, and the batch in flight.
//!
//! A run first writes its *plan* (`batches/<id>.json`, the exact files it takes) and only then
//! touches a table; a rerun after a crash finds the plan and processes the very same files, so
//! every Delta commit of the batch can be recognized by its application transaction
//! `(aquabill, batch id)`. The checkpoint itself (`checkpoint.json`) advances last, after every
//! table has committed. Both files are replaced atomically (write to a temporary file, fsync,
//! rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::discover::PlannedFile;
use crate::error::{Error, Result};

/// Layout version of `checkpoint.json`.
const FORMAT: u32 = 1;

/// What earlier runs committed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Layout version.
    pub format: u32,
    /// Id of the next batch.
    pub next_batch: i64,
    /// Tables' watermark (hour index): no record recorded before it can still be accepted.
    pub watermark_hour: Option<i64>,
    /// Latest ingestion hour processed.
    pub latest_ingest_hour: Option<i64>,
    /// Committed files (path relative to the input root) and their size in bytes.
    pub files: BTreeMap<String, u64>,
}

/// A batch planned before any table was touched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Batch id: the version of every application transaction the batch commits.
    pub batch_id: i64,
    /// Watermark before the batch.
    pub watermark_before: Option<i64>,
    /// The batch's files, in ingestion order.
    pub files: Vec<PlannedFile>,
}

/// Location of the checkpoint files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The checkpoint store in `dir` (created on first write).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }

    fn plan_path(&self, batch_id: i64) -> PathBuf {
        self.dir.join("batches").join(format!("{batch_id:09}.json"))
    }

    /// The checkpoint, or an empty one before the first run.
    pub fn load(&self) -> Result<Checkpoint> {
        let path = self.checkpoint_path();
        let Some(cp) = read_json::<Checkpoint>(&path)? else {
            return Ok(Checkpoint {
                format: FORMAT,
                ..Checkpoint::default()
            });
        };
        if cp.format != FORMAT {
            return Err(Error::Checkpoint {
                path,
                reason: format!("unknown format {}", cp.format),
            });
        }
        Ok(cp)
    }

    /// The plan of batch `batch_id`, if it was written.
    pub fn load_plan(&self, batch_id: i64) -> Result<Option<Plan>> {
        read_json(&self.plan_path(batch_id))
    }

    /// Records the plan of a batch before it touches any table.
    pub fn save_plan(&self, plan: &Plan) -> Result<()> {
        write_json(&self.plan_path(plan.batch_id), plan)?;
        crate::faults::durable("plan written");
        Ok(())
    }

    /// Records a finished batch: its files are committed and the next batch may start.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<()> {
        write_json(&self.checkpoint_path(), checkpoint)?;
        crate::faults::durable("checkpoint written");
        Ok(())
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Replaces `path` atomically with the JSON of `value`.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Checkpoint {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut file = fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e))?;
    if let Ok(d) = fs::File::open(dir) {
        // Persist the rename itself; not every file system supports syncing a folder.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_and_plan_round_trip() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("aquabill-cp-{}", std::process::id()));
        let store = Store::new(&dir);
        assert_eq!(store.load()?.next_batch, 0);
        assert_eq!(store.load_plan(0)?, None);
        let plan = Plan {
            batch_id: 0,
            watermark_before: None,
            files: vec![PlannedFile {
                rel_path: "ingest_hour=2026-03-01T00/a.jsonl".into(),
                path: dir.join("a.jsonl"),
                size: 12,
                ingest_hour: 10,
            }],
        };
        store.save_plan(&plan)?;
        assert_eq!(store.load_plan(0)?, Some(plan));
        let mut cp = store.load()?;
        cp.next_batch = 1;
        cp.files
            .insert("ingest_hour=2026-03-01T00/a.jsonl".into(), 12);
        store.commit(&cp)?;
        assert_eq!(store.load()?, cp);
        fs::remove_dir_all(&dir).map_err(|e| Error::io("removing", &dir, e))
    }
}
