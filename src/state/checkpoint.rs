//! `checkpoint.json`: which input files earlier runs committed, the watermark, the next batch.
//! It advances last in a run, after every table has committed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Store, file};
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

impl Store {
    /// The checkpoint, or an empty one before the first run.
    pub fn load(&self) -> Result<Checkpoint> {
        let path = self.checkpoint_path();
        let Some(cp) = file::read_json::<Checkpoint>(&path)? else {
            return Ok(Checkpoint {
                format: FORMAT,
                ..Checkpoint::default()
            });
        };
        if cp.format != FORMAT {
            return Err(Error::Checkpoint {
                path,
                reason: format!("unknown format {} (this version reads {FORMAT})", cp.format),
            });
        }
        Ok(cp)
    }

    /// Records a finished batch: its files are committed and the next batch may start.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<()> {
        file::write_json(&self.checkpoint_path(), checkpoint)?;
        crate::faults::durable("checkpoint written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::PlannedFile;
    use crate::state::Plan;

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
        // A damaged checkpoint is an error naming the file, never a silent restart from zero.
        let path = dir.join("checkpoint.json");
        std::fs::write(&path, b"{\"format\": 1, \"next_ba")
            .map_err(|e| Error::io("w", &path, e))?;
        match store.load() {
            Err(e @ Error::Checkpoint { .. }) => {
                let message = e.to_string();
                assert!(message.contains("checkpoint.json"), "{message}");
                assert!(message.contains("restore the file"), "{message}");
            }
            other => panic!("a damaged checkpoint must be refused, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("removing", &dir, e))
    }
}
