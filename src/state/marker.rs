//! The rebuild marker (`<output_root>/_rebuild/rebuild.json`): written before a rebuild replaces
//! the first table, removed once it finished; while it exists ordinary runs refuse to start, and
//! the next rebuild finishes with the batch id it names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file;
use crate::error::{Error, Result};

/// The staging folder of a rebuild, under the output root.
pub const STAGING: &str = "_rebuild";
const MARKER: &str = "rebuild.json";

/// What the marker records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Marker {
    batch: i64,
}

fn path(output_root: &Path) -> PathBuf {
    output_root.join(STAGING).join(MARKER)
}

/// True while a rebuild of the tables under `output_root` is unfinished.
pub fn in_progress(output_root: &Path) -> bool {
    path(output_root).is_file()
}

/// The batch id of the unfinished rebuild, if there is one.
pub fn batch(output_root: &Path) -> Result<Option<i64>> {
    Ok(file::read_json::<Marker>(&path(output_root))?.map(|m| m.batch))
}

/// Marks a rebuild with batch id `batch` as started.
pub fn write(output_root: &Path, batch: i64) -> Result<()> {
    file::write_json(&path(output_root), &Marker { batch })?;
    crate::faults::durable("rebuild marker written");
    Ok(())
}

/// Marks the rebuild finished (the marker goes first: once it is gone the rebuild is over,
/// whatever is left behind) and removes the staging folder.
pub fn finish(output_root: &Path) -> Result<()> {
    let marker = path(output_root);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|e| Error::io("removing", &marker, e))?;
    }
    let staging = output_root.join(STAGING);
    std::fs::remove_dir_all(&staging).map_err(|e| Error::io("removing", &staging, e))
}
