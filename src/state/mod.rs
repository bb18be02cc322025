//! What a run keeps besides the tables: the checkpoint (and the archive of old folders' committed
//! files), the plan of the batch in flight, the rebuild marker, and the lock that keeps one run
//! at a time on a set of tables.

mod checkpoint;
mod committed;
mod file;
mod lock;
pub mod marker;
mod plan;

use std::sync::{Arc, Mutex};

use crate::storage::{Location, Version};

pub use checkpoint::{Checkpoint, FORMAT_1_STATE};
pub use committed::ArchiveRef;
pub use lock::RunLock;
pub use plan::Plan;

/// The checkpoint folder's files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: Location,
    /// The version of `checkpoint.json` this store last read or wrote: on S3 the checkpoint is
    /// replaced only if it is still that version.
    seen: Arc<Mutex<Seen>>,
}

/// What a store knows of its checkpoint's version.
#[derive(Debug, Clone)]
enum Seen {
    /// Not read yet.
    Unread,
    /// Read, and there was none.
    Absent,
    /// Read or written at this version.
    At(Version),
}

impl Store {
    /// The checkpoint store in `dir` (created on first write).
    pub fn new(dir: &Location) -> Self {
        Self {
            dir: dir.clone(),
            seen: Arc::new(Mutex::new(Seen::Unread)),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A panic elsewhere cannot leave a half-written `Seen`: it is replaced whole.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn checkpoint_path(&self) -> Location {
        self.dir.join("checkpoint.json")
    }

    fn plan_path(&self, batch_id: i64) -> Location {
        self.dir.join(&format!("batches/{batch_id:09}.json"))
    }
}
