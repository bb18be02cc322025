//! The local side of [`super::Location`]: files in folders. A file is replaced by writing a
//! temporary file, syncing it and renaming it over the old one; it is created only if absent by
//! hard-linking a written temporary file to its name (or, where the file system has no hard
//! links, by `O_EXCL`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Created, Version};
use crate::error::{Error, Result};

/// The file's size in bytes; an error if it does not exist.
pub(super) fn size(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io("reading", path, e))
}

/// The file's bytes, `None` if it does not exist.
pub(super) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Appends the file's bytes to `buf`; an error if it does not exist.
pub(super) fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    file.read_to_end(buf)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(())
}

/// Replaces `path` atomically with `bytes`: a temporary file, fsync, rename, fsync the folder.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming", &tmp, e))?;
    sync_dir(dir)
}

/// Writes `bytes` to `path` only if it does not exist yet: written whole under a temporary
/// name, then linked to its name (a link fails if the name exists, and a crash leaves no
/// half-written file under it).
pub(super) fn create_new(path: &Path, bytes: &[u8]) -> Result<Created> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    let tmp = temporary_sibling(path);
    let written = write_synced(&tmp, bytes);
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(Created::Yes(Version::default())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Created::AlreadyExists),
        // A file system without hard links: create the name exclusively and write it.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            create_exclusive(path, bytes)
        }
        Err(e) => Err(Error::io("creating", path, e)),
    });
    let removed = std::fs::remove_file(&tmp);
    let created = linked?;
    removed.map_err(|e| Error::io("removing", &tmp, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(created)
}

/// Removes the file; a missing file is not an error.
pub(super) fn remove(path: &Path) -> Result<()> {
    missing_is_removed(std::fs::remove_file(path), path)
}

/// Removes the folder and everything below it; a missing folder is not an error.
pub(super) fn remove_all(path: &Path) -> Result<()> {
    missing_is_removed(std::fs::remove_dir_all(path), path)
}

/// The result of removing a local file or folder: one that is already gone is removed.
fn missing_is_removed(removed: std::io::Result<()>, path: &Path) -> Result<()> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to a new file `path` (replacing one of that name) and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| Error::io("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

/// Persists a rename or link in `dir`; not every file system supports syncing a folder, so a
/// folder that cannot be synced is not an error.
fn sync_dir(dir: &Path) -> Result<()> {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `path` only if it does not exist (`O_EXCL`) and writes `bytes` to it.
fn create_exclusive(path: &Path, bytes: &[u8]) -> Result<Created> {
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(Created::AlreadyExists);
        }
        Err(e) => return Err(Error::io("creating", path, e)),
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing", path, e))?;
    Ok(Created::Yes(Version::default()))
}

/// A hidden name beside `path` that no other process uses at the same time.
fn temporary_sibling(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}-{nanos}.tmp", std::process::id()));
    PathBuf::from(name)
}
