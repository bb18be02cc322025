//! What a run keeps besides the tables: the checkpoint, the plan of the batch in flight, the
//! rebuild marker, and the lock that keeps one run at a time on a set of tables.

mod checkpoint;
mod file;
mod lock;
pub mod marker;
mod plan;

use std::path::{Path, PathBuf};

pub use checkpoint::{Checkpoint, FORMAT_1_STATE};
pub use lock::RunLock;
pub use plan::Plan;

/// The checkpoint folder's files.
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
}
