//! One run at a time per set of tables: a run holds the lock `<checkpoint>/run.lock` from
//! planning to its checkpoint commit.
//!
//! **Local folder:** an exclusive OS file lock. It belongs to the open file, not to the file's
//! existence, so it can never go stale: when the process holding it ends in any way (finished,
//! crashed, killed, a kernel restarted), the operating system releases it and the next run
//! proceeds.
//!
//! **S3:** object storage has no locks, so the lock is an object created only if absent
//! (`If-None-Match: *`) and deleted on release. It names its holder (host, process id) and a
//! lease ([`LEASE_MINUTES`], longer than any batch: a run takes the lock anew for every batch).
//! A lock left by a process that ended without releasing it is taken over, with `If-Match` on
//! the lock's version so that of two runs taking it over at once exactly one wins, when its
//! lease has expired or when its holder was a process on this host that no longer exists
//! (a crashed or restarted kernel here need not wait for the lease).
//!
//! The holder's text is shown in the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Created, Location};

/// How long an S3 lock holds without its holder: longer than any one batch.
pub const LEASE_MINUTES: i64 = 60;

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// The open lock file: closing it releases the lock.
    Local {
        _file: File,
    },
    Object(Location),
}

/// What an S3 lock object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
    host: String,
    pid: u32,
    expires_unix: i64,
}

impl RunLock {
    /// Takes the lock in `dir`, or fails at once with [`Error::Busy`] naming the holder.
    pub fn acquire(dir: &Location) -> Result<Self> {
        let path = Self::path(dir);
        let held = match dir.as_local() {
            Some(local) => Held::Local {
                _file: lock_file(local, &path)?,
            },
            None => Held::Object(lock_object(path)?),
        };
        Ok(Self { held })
    }

    /// Where the lock of the tables with checkpoint folder `dir` lives.
    pub fn path(dir: &Location) -> Location {
        dir.join("run.lock")
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Held::Object(lock) = &self.held {
            // A lock that cannot be removed expires with its lease.
            let _ = lock.remove();
        }
    }
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn holder_text(host: &str) -> String {
    format!(
        "pid {} on {} since {}",
        std::process::id(),
        host,
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn lock_file(dir: &std::path::Path, lock: &Location) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let path = lock.display_path();
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
    let holder = holder_text(&host());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(holder.as_bytes()))
        .map_err(|e| Error::io("writing", &path, e))?;
    Ok(file)
}

fn lock_object(lock: Location) -> Result<Location> {
    let host = host();
    let now = chrono::Utc::now().timestamp();
    let mine = Holder {
        holder: holder_text(&host),
        host: host.clone(),
        pid: std::process::id(),
        expires_unix: now + LEASE_MINUTES * 60,
    };
    let bytes = serde_json::to_vec(&mine).map_err(|e| Error::Checkpoint {
        path: lock.display_path(),
        reason: e.to_string(),
    })?;
    if lock.create_new(bytes.clone())? == Created::Yes {
        return Ok(lock);
    }
    let busy = |holder: String| Error::Busy {
        path: lock.display_path(),
        holder,
    };
    let Some((found, version)) = lock.read_versioned()? else {
        // Released between the two requests: the next run takes it.
        return Err(busy("a run that just finished".to_owned()));
    };
    let theirs: Option<Holder> = serde_json::from_slice(&found).ok();
    let stale = match &theirs {
        // Unreadable (written half by hand?): only its lease would tell; treat as expired.
        None => true,
        Some(h) => h.expires_unix <= now || (h.host == host && !process_exists(h.pid)),
    };
    let shown = theirs.map_or_else(
        || String::from_utf8_lossy(&found).into_owned(),
        |h| h.holder,
    );
    if stale && lock.replace_if_unchanged(bytes, version)? {
        return Ok(lock);
    }
    Err(busy(shown))
}

/// Whether process `pid` exists on this host.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
