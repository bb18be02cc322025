//! The plan of the batch in flight (`batches/<id>.json`): the exact files a run takes, written
//! before any table is touched, so a rerun after a crash processes the very same files and every
//! Delta commit of the batch is recognized by its application transaction `(aquabill, id)`.

use serde::{Deserialize, Serialize};

use super::{Store, file};
use crate::error::{Error, Result};
use crate::input::PlannedFile;
use crate::storage::Created;

/// A batch planned before any table was touched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Batch id: the version of every application transaction the batch commits.
    pub batch_id: i64,
    /// Watermark before the batch.
    pub watermark_before: Option<i64>,
    /// The batch's files, in ingestion order.
    pub files: Vec<PlannedFile>,
    /// `clock_skew_minutes` the batch decides with: a replay of the batch (a rerun, a rebuild)
    /// accepts exactly what it accepted. `None` in plans of earlier versions: the run's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_minutes: Option<i64>,
    /// The batch was a rebuild, which replaced every table and took no files: a later rebuild
    /// passes over it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuild: bool,
}

impl Store {
    /// The plan of batch `batch_id`, if it was written.
    pub fn load_plan(&self, batch_id: i64) -> Result<Option<Plan>> {
        file::read_json(&self.plan_path(batch_id))
    }

    /// Records the plan of a batch before it touches any table. Created only if absent: if
    /// another run planned the same batch first, with other files, this run stops before it
    /// writes anything (the same plan, written by a crashed attempt of this one, is fine).
    pub fn save_plan(&self, plan: &Plan) -> Result<()> {
        let path = self.plan_path(plan.batch_id);
        if file::create_json(&path, plan)? == Created::AlreadyExists
            && self.load_plan(plan.batch_id)?.as_ref() != Some(plan)
        {
            return Err(Error::Conflict {
                what: format!(
                    "the plan of batch {} ({}): another run planned the batch first",
                    plan.batch_id,
                    path.display_path().display()
                ),
            });
        }
        crate::faults::durable("plan written");
        Ok(())
    }

    /// Replaces the plan of a batch: a rebuild records the sizes of the files it replayed.
    pub fn replace_plan(&self, plan: &Plan) -> Result<()> {
        file::write_json(&self.plan_path(plan.batch_id), plan)?;
        crate::faults::durable("plan written");
        Ok(())
    }
}
