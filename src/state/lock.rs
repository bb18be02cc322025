//! One run at a time per set of tables: a run holds the lock `<checkpoint>/run.lock` from
//! planning to its checkpoint commit.
//!
//! **Local folder:** an exclusive OS file lock. It belongs to the open file, not to the file's
//! existence, so it can never go stale: when the process holding it ends in any way (finished,
//! crashed, killed, a kernel restarted), the operating system releases it and the next run
//! proceeds.
//!
//! **S3:** object storage has no locks, so the lock is an object (`run.lock`) created only if
//! absent (`If-None-Match: *`), naming its holder by a random token drawn by each run (host and
//! process id are only shown in messages) and holding a lease ([`LEASE_SECONDS`], or
//! `AQUABILL_LOCK_LEASE_SECONDS` for tests). While the run works, a thread renews the lease
//! every third of it, each renewal a write conditional on the lock's version (`If-Match`), so
//! an interactive kernel left between two cells keeps its lock as long as its process lives,
//! and a killed one lets it go within a lease. A renewal that finds the lock changed means
//! another run took it over: the run is told ([`RunLock::check`]) before its checkpoint commit,
//! which is itself conditional on the checkpoint's version, as batch plans are created only if
//! absent: those are the fences, the lock only keeps runs from overlapping in the first place.
//! The lock is released by a conditional write that marks it released, never by a delete: a
//! holder whose lock was taken over leaves its successor's alone.
//!
//! A lock is taken over, conditionally on its version, when it is released, when its lease
//! expired, or when its holder was a process of this very machine and process namespace (same
//! boot id and pid namespace, not just the same host name) that is gone (a crashed or restarted
//! kernel here need not wait for the lease).
//!
//! The holder's text is shown in the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Created, Location, Version};

/// How long an S3 lock holds without a renewal by its holder.
pub const LEASE_SECONDS: i64 = 300;

/// The environment variable that sets the lease (seconds) for tests.
pub const LEASE_VARIABLE: &str = "AQUABILL_LOCK_LEASE_SECONDS";

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
    Object(Lease),
}

/// An S3 lock held, and the thread that renews it.
#[derive(Debug)]
struct Lease {
    shared: Arc<Shared>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// What the holder and its renewing thread share.
#[derive(Debug)]
struct Shared {
    lock: Location,
    /// The lease's length.
    lease: std::time::Duration,
    mine: Mutex<Mine>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The lock as this run last wrote it.
#[derive(Debug)]
struct Mine {
    holder: Holder,
    /// Its version; `None` once another run changed it (the lock is lost).
    version: Option<Version>,
    /// When it was last written: once a lease has passed since, another run may hold it.
    written: std::time::Instant,
}

/// What an S3 lock object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    holder: String,
    host: String,
    pid: u32,
    expires_unix: i64,
    /// Drawn by each run: who holds the lock.
    #[serde(default)]
    token: String,
    /// The machine and process namespace of `pid` (boot id and pid namespace): a process id
    /// means something only there.
    #[serde(default)]
    machine: String,
    #[serde(default)]
    released: bool,
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

    /// Fails if the lock was lost: another run took it over after this run's lease lapsed, or
    /// no renewal got through for a whole lease (the store unreachable, the machine suspended),
    /// so another run may have.
    pub fn check(&self) -> Result<()> {
        let Held::Object(lease) = &self.held else {
            return Ok(());
        };
        let mine = lease.shared.mine();
        if mine.version.is_some() && mine.written.elapsed() < lease.shared.lease {
            return Ok(());
        }
        Err(Error::Conflict {
            what: format!(
                "the run lock {} (this run's lease lapsed: another run took the lock over, or no \
                 renewal got through for a whole lease and another run may have)",
                lease.shared.lock
            ),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Held::Object(lease) = &mut self.held {
            lease.release();
        }
    }
}

impl Shared {
    fn mine(&self) -> std::sync::MutexGuard<'_, Mine> {
        self.mine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the lock with `change` applied, conditionally on the version this run wrote last.
    fn rewrite(&self, change: impl FnOnce(&mut Holder)) -> Result<()> {
        let mut mine = self.mine();
        let Some(version) = mine.version.clone() else {
            return Ok(());
        };
        let mut holder = mine.holder.clone();
        change(&mut holder);
        let started = std::time::Instant::now();
        let written = self
            .lock
            .replace_if_unchanged(encode(&self.lock, &holder)?, &version)?;
        mine.version = written;
        if mine.version.is_some() {
            mine.holder = holder;
            // The lease counts from the request's start: the store may have written it then.
            mine.written = started;
        }
        Ok(())
    }

    /// Renews the lease every third of it until told to stop or the lock is lost. A renewal
    /// that fails (the store unreachable) is tried again at the next turn.
    fn renew(&self) {
        let every = (self.lease / 3).max(std::time::Duration::from_millis(100));
        let lease = i64::try_from(self.lease.as_secs()).unwrap_or(LEASE_SECONDS);
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let (guard, _) = self
                .wake
                .wait_timeout(stop, every)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            stop = guard;
            if *stop {
                return;
            }
            let renewed = self.rewrite(|h| h.expires_unix = unix_now() + lease);
            if renewed.is_ok() && self.mine().version.is_none() {
                return;
            }
        }
    }
}

impl Lease {
    /// Stops the renewals, then marks the lock released if it is still this run's.
    fn release(&mut self) {
        *self
            .shared
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        // A lock that cannot be marked released expires with its lease.
        let _ = self.shared.rewrite(|h| {
            h.released = true;
            h.expires_unix = unix_now();
        });
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lease_seconds() -> i64 {
    std::env::var(LEASE_VARIABLE)
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(LEASE_SECONDS)
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// This machine and process namespace: the boot id and the pid namespace, empty where they
/// cannot be read (then no process of any holder is taken to be gone).
fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    match (boot.trim(), namespace.to_string_lossy()) {
        ("", _) => String::new(),
        (_, ns) if ns.is_empty() => String::new(),
        (boot, ns) => format!("{boot} {ns}"),
    }
}

/// A token no other run draws: the process's random hash keys over its id and the time.
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let draw = |salt: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", draw(0), draw(1))
}

fn holder_text(host: &str) -> String {
    format!(
        "pid {} on {} since {}",
        std::process::id(),
        if host.is_empty() {
            "an unnamed host"
        } else {
            host
        },
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

fn encode(lock: &Location, holder: &Holder) -> Result<Vec<u8>> {
    serde_json::to_vec(holder).map_err(|e| Error::Checkpoint {
        path: lock.display_path(),
        reason: e.to_string(),
    })
}

fn lock_object(lock: Location) -> Result<Lease> {
    let host = host();
    let lease = lease_seconds();
    let now = unix_now();
    let machine = machine();
    let mine = Holder {
        holder: holder_text(&host),
        host,
        pid: std::process::id(),
        expires_unix: now + lease,
        token: token(),
        machine: machine.clone(),
        released: false,
    };
    let bytes = encode(&lock, &mine)?;
    let acquired = std::time::Instant::now();
    let version = match lock.create_new(bytes.clone())? {
        Created::Yes(version) => version,
        Created::AlreadyExists => {
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
                Some(h) => {
                    h.released
                        || h.expires_unix <= now
                        || (!machine.is_empty() && h.machine == machine && !process_exists(h.pid))
                }
            };
            let shown = theirs.map_or_else(
                || String::from_utf8_lossy(&found).into_owned(),
                |h| h.holder,
            );
            match stale.then(|| lock.replace_if_unchanged(bytes, &version)) {
                Some(Ok(Some(version))) => version,
                Some(Err(e)) => return Err(e),
                _ => return Err(busy(shown)),
            }
        }
    };
    let shared = Arc::new(Shared {
        lock,
        lease: std::time::Duration::from_secs(lease.unsigned_abs()),
        mine: Mutex::new(Mine {
            holder: mine,
            version: Some(version),
            written: acquired,
        }),
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let renewing = Arc::clone(&shared);
    let renewer = std::thread::Builder::new()
        .name("aquabill-lease".into())
        .spawn(move || renewing.renew())
        .map_err(|e| {
            Error::io(
                "starting the lease thread of",
                shared.lock.display_path(),
                e,
            )
        })?;
    Ok(Lease {
        shared,
        renewer: Some(renewer),
    })
}

/// Whether process `pid` exists in this process namespace.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
