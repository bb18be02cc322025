//! Small JSON files replaced atomically (see [`Location::write_atomic`]): the checkpoint, batch
//! plans and the rebuild marker.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Location;

/// The file's value, `None` if it does not exist; an unreadable file is an error naming it.
pub(super) fn read_json<T: for<'de> Deserialize<'de>>(file: &Location) -> Result<Option<T>> {
    match file.read()? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint {
                path: file.display_path(),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Replaces `file` atomically with the JSON of `value`.
pub(super) fn write_json<T: Serialize>(file: &Location, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Checkpoint {
        path: file.display_path(),
        reason: e.to_string(),
    })?;
    file.write_atomic(bytes)
}
