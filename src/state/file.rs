//! Small JSON files replaced atomically (write a temporary file, fsync, rename, fsync the
//! folder): the checkpoint, batch plans and the rebuild marker.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file's value, `None` if it does not exist; an unreadable file is an error naming it.
pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Replaces `path` atomically with the JSON of `value`.
pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Checkpoint {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut file = fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e))?;
    if let Ok(d) = fs::File::open(dir) {
        // Persist the rename itself; not every file system supports syncing a folder.
        let _ = d.sync_all();
    }
    Ok(())
}
