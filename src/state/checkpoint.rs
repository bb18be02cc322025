//! `checkpoint.json`: which input files earlier runs committed, the watermark, the next batch.
//! It advances last in a run, after every table has committed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ArchiveRef, Seen, Store, file};
use crate::error::{Error, Result};
use crate::storage::Created;

/// Layout version of the checkpoint folder: 3 may move old folders' committed files to an
/// archive (an earlier version would not look there: it refuses format 3); 2 keeps the dedup
/// state as integer keys (`dedup_keys`, `dedup_readings`); 1 kept it as strings in `dedup_state`.
const FORMAT: u32 = 3;

/// The layout before the archive, read as this one (it has none) and written as this one.
const FORMAT_NO_ARCHIVE: u32 = 2;

/// The earlier layout a rebuild can start from.
const FORMAT_REBUILDABLE: u32 = 1;

/// The dedup state's folder in layout 1, removed by the rebuild that replaces it.
pub const FORMAT_1_STATE: &str = "dedup_state";

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
    /// Committed files (path relative to the input root) and their size in bytes, but for those
    /// of old folders moved to the archive (see [`super::committed`]).
    pub files: BTreeMap<String, u64>,
    /// The archive holding the committed files of old folders, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
}

impl Checkpoint {
    /// Whether it is in this version's layout (an earlier one can only be rebuilt).
    pub fn is_current(&self) -> bool {
        self.format == FORMAT || self.format == FORMAT_NO_ARCHIVE
    }
}

impl Store {
    /// The checkpoint, or an empty one before the first run.
    pub fn load(&self) -> Result<Checkpoint> {
        let cp = self.load_for_rebuild()?;
        if cp.is_current() {
            return Ok(Checkpoint {
                format: FORMAT,
                ..cp
            });
        }
        Err(Error::Checkpoint {
            path: self.checkpoint_path().display_path(),
            reason: format!(
                "written by an earlier version of aquabill (format {}, this version reads \
                 {FORMAT}); run the notebook once with rebuild=true to recompute the tables and \
                 the dedup state from the log in this version's format",
                cp.format
            ),
        })
    }

    /// The checkpoint in this version's layout or in the earlier one a rebuild replaces.
    pub fn load_for_rebuild(&self) -> Result<Checkpoint> {
        let path = self.checkpoint_path();
        let found = file::read_json_versioned::<Checkpoint>(&path)?;
        *self.seen() = match &found {
            Some((_, version)) => Seen::At(version.clone()),
            None => Seen::Absent,
        };
        let Some((cp, _)) = found else {
            return Ok(Checkpoint {
                format: FORMAT,
                ..Checkpoint::default()
            });
        };
        if !cp.is_current() && cp.format != FORMAT_REBUILDABLE {
            return Err(Error::Checkpoint {
                path: path.display_path(),
                reason: format!("unknown format {} (this version reads {FORMAT})", cp.format),
            });
        }
        Ok(cp)
    }

    /// Records a finished batch: its files are committed and the next batch may start. On S3
    /// the checkpoint is replaced only if it is still the version this store read (`If-Match`;
    /// created only if absent when there was none): a run that another run overlapped stops
    /// here with [`Error::Conflict`] instead of overwriting the other's progress. A local folder
    /// has the run lock, an OS lock, for that.
    pub fn commit(&self, checkpoint: &Checkpoint) -> Result<()> {
        let path = self.checkpoint_path();
        if path.as_local().is_some() {
            file::write_json(&path, checkpoint)?;
        } else {
            let seen = self.seen().clone();
            let written = match seen {
                Seen::Unread => {
                    return Err(Error::Checkpoint {
                        path: path.display_path(),
                        reason: "it was about to be replaced without being read first".into(),
                    });
                }
                Seen::Absent => match file::create_json(&path, checkpoint)? {
                    Created::Yes(version) => Some(version),
                    Created::AlreadyExists => None,
                },
                Seen::At(version) => file::replace_json_if_unchanged(&path, checkpoint, &version)?,
            };
            let Some(version) = written else {
                return Err(Error::Conflict {
                    what: format!("the checkpoint {} since this run read it", path),
                });
            };
            *self.seen() = Seen::At(version);
        }
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
        let temp_dir = crate::testing::TempDir::new("cp");
        let dir = temp_dir.path().to_path_buf();
        let store = Store::new(&crate::storage::Location::Local(dir.clone()));
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
            clock_skew_minutes: Some(5),
            rebuild: false,
        };
        store.save_plan(&plan)?;
        assert_eq!(store.load_plan(0)?, Some(plan.clone()));
        // A plan is created once: the same plan again is a rerun's, another is a second run's.
        store.save_plan(&plan)?;
        let other = Plan {
            files: Vec::new(),
            ..plan.clone()
        };
        match store.save_plan(&other) {
            Err(e @ Error::Conflict { .. }) => {
                assert!(e.to_string().contains("the plan of batch 0"), "{e}");
            }
            found => panic!("a second plan of batch 0 must be refused, got {found:?}"),
        }
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
        // An earlier version's checkpoint is refused by runs, with the way out, and read by
        // the rebuild that replaces its dedup state.
        let earlier = Checkpoint {
            format: FORMAT_REBUILDABLE,
            ..cp.clone()
        };
        store.commit(&earlier)?;
        match store.load() {
            Err(e @ Error::Checkpoint { .. }) => {
                let message = e.to_string();
                assert!(message.contains("rebuild=true"), "{message}");
            }
            other => panic!("an earlier layout must be refused by runs, got {other:?}"),
        }
        assert_eq!(store.load_for_rebuild()?, earlier);
        Ok(())
    }
}
