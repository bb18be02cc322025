//! What a run keeps besides the tables: the checkpoint, the plan of the batch in flight, the
//! rebuild marker, and the lock that keeps one run at a time on a set of tables.

mod checkpoint;
mod file;
mod lock;
pub mod marker;
mod plan;

use crate::storage::Location;

pub use checkpoint::{Checkpoint, FORMAT_1_STATE};
pub use lock::RunLock;
pub use plan::Plan;

/// The checkpoint folder's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: Location,
}

impl Store {
    /// The checkpoint store in `dir` (created on first write).
    pub fn new(dir: &Location) -> Self {
        Self { dir: dir.clone() }
    }

    fn checkpoint_path(&self) -> Location {
        self.dir.join("checkpoint.json")
    }

    fn plan_path(&self, batch_id: i64) -> Location {
        self.dir.join(&format!("batches/{batch_id:09}.json"))
    }
}
