//! Small JSON files replaced atomically (see [`Location::write_atomic`]) or created only if absent:
//! the checkpoint, batch plans and the rebuild marker.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Created, Location, Version};

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

/// The file's value and version (see [`Location::read_versioned`]), `None` if it does not
/// exist.
pub(super) fn read_json_versioned<T: for<'de> Deserialize<'de>>(
    file: &Location,
) -> Result<Option<(T, Version)>> {
    match file.read_versioned()? {
        Some((bytes, version)) => serde_json::from_slice(&bytes)
            .map(|value| Some((value, version)))
            .map_err(|e| Error::Checkpoint {
                path: file.display_path(),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Replaces `file` with the JSON of `value` only if it is still at `version`; its new
/// version, or `None` if another writer changed it first (S3 only).
pub(super) fn replace_json_if_unchanged<T: Serialize>(
    file: &Location,
    value: &T,
    version: &Version,
) -> Result<Option<Version>> {
    file.replace_if_unchanged(to_json(file, value)?, version)
}

/// Replaces `file` atomically with the JSON of `value`.
pub(super) fn write_json<T: Serialize>(file: &Location, value: &T) -> Result<()> {
    file.write_atomic(to_json(file, value)?)
}

/// Writes the JSON of `value` to `file` only if it does not exist yet (see
/// [`Location::create_new`]).
pub(super) fn create_json<T: Serialize>(file: &Location, value: &T) -> Result<Created> {
    file.create_new(to_json(file, value)?)
}

fn to_json<T: Serialize>(file: &Location, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Checkpoint {
        path: file.display_path(),
        reason: e.to_string(),
    })
}
