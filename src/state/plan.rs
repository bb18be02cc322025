//! The plan of the batch in flight (`batches/<id>.json`): the exact files a run takes, written
//! before any table is touched, so a rerun after a crash processes the very same files and every
//! Delta commit of the batch is recognized by its application transaction `(aquabill, id)`.

use serde::{Deserialize, Serialize};

use super::{Store, file};
use crate::error::Result;
use crate::input::PlannedFile;

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

impl Store {
    /// The plan of batch `batch_id`, if it was written.
    pub fn load_plan(&self, batch_id: i64) -> Result<Option<Plan>> {
        file::read_json(&self.plan_path(batch_id))
    }

    /// Records the plan of a batch before it touches any table.
    pub fn save_plan(&self, plan: &Plan) -> Result<()> {
        file::write_json(&self.plan_path(plan.batch_id), plan)?;
        crate::faults::durable("plan written");
        Ok(())
    }
}
