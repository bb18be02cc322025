//! The rebuild marker (`<output_root>/_rebuild/rebuild.json`): written before a rebuild replaces
//! the first table, removed once it finished; while it exists ordinary runs refuse to start, and
//! the next rebuild finishes with the batch id it names.

use serde::{Deserialize, Serialize};

use super::file;
use crate::error::Result;
use crate::storage::Location;

/// The staging folder of a rebuild, under the output root.
pub const STAGING: &str = "_rebuild";
const MARKER: &str = "rebuild.json";

/// What the marker records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    batch: i64,
}

fn path(output_root: &Location) -> Location {
    output_root.join(STAGING).join(MARKER)
}

/// True while a rebuild of the tables under `output_root` is unfinished.
pub fn in_progress(output_root: &Location) -> Result<bool> {
    path(output_root).exists()
}

/// The batch id of the unfinished rebuild, if there is one.
pub fn batch(output_root: &Location) -> Result<Option<i64>> {
    Ok(file::read_json::<Marker>(&path(output_root))?.map(|m| m.batch))
}

/// Marks a rebuild with batch id `batch` as started.
pub fn write(output_root: &Location, batch: i64) -> Result<()> {
    file::write_json(&path(output_root), &Marker { batch })?;
    crate::faults::durable("rebuild marker written");
    Ok(())
}

/// Marks the rebuild finished (the marker goes first: once it is gone the rebuild is over,
/// whatever is left behind) and removes the staging folder.
pub fn finish(output_root: &Location) -> Result<()> {
    path(output_root).remove()?;
    output_root.join(STAGING).remove_all()
}
