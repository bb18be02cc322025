//! One run at a time per set of tables: a run holds an exclusive OS file lock on
//! `<checkpoint>/run.lock` from planning to its checkpoint commit.
//!
//! The lock belongs to the open file, not to the file's existence, so it can never go stale: when
//! the process holding it ends in any way (finished, crashed, killed, a kernel restarted), the
//! operating system releases it and the next run proceeds. The file's text names the holder
//! (process id, host, start time) only to make the refusal message useful.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock in `dir`, or fails at once with [`Error::Busy`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let path = Self::path(dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::Busy {
                    path,
                    holder: holder.trim().to_owned(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let holder = format!(
            "pid {} on {} since {}",
            std::process::id(),
            host.trim(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(|e| Error::io("writing", &path, e))?;
        Ok(Self { _file: file })
    }

    /// Where the lock of the tables with checkpoint folder `dir` lives.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("run.lock")
    }
}
