//! The record of the log's committed files, kept so that what every run reads and writes does not
//! grow with the log's history.
//!
//! `checkpoint.json` holds the files of the folders a run may still list (from a day before the
//! watermark's folder on; see [`ARCHIVE_AFTER_HOURS`]) and of any older folder a run took a file
//! from since the last archiving. The files of older folders are moved, about once a day, into
//! one archive file beside it (`committed/archive-<batch>-<digest>.json`), which only a run that
//! looks up an old folder's file reads (the daily whole listing of the log; a file put into a
//! folder the watermark passed). The archive is immutable: each archiving writes a new one,
//! created only if absent, named by the batch and a digest of its content, so a rerun of the
//! batch after a crash writes (or finds) the same file; the checkpoint that names it is
//! committed after it, and then the archives earlier batches wrote that it does not name (the
//! one replaced, any a crash left) are removed. A batch that will archive checks, before it
//! writes anything, that the archive its checkpoint names is readable.

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, Store, file};
use crate::error::{Error, Result};
use crate::input::{Committed, folder_hour};
use crate::storage::Created;

/// Folders this many hours or more before the watermark's are archived (kept in
/// `checkpoint.json` until a whole day of them has gathered).
pub const ARCHIVE_AFTER_HOURS: i64 = 24;

/// The archive a checkpoint names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveRef {
    /// The file's name in `committed/`.
    pub name: String,
    /// Every committed file of a folder before this hour that is not in `checkpoint.json` is in
    /// the archive.
    pub before_hour: i64,
    /// How many files it records (for messages and checks).
    pub files: u64,
}

/// An archive file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Archive {
    /// Committed files (path relative to the input root) and their size in bytes.
    files: BTreeMap<String, u64>,
}

/// The ingestion hour of a committed file's folder, from its path relative to the log's root.
fn file_hour(rel_path: &str) -> Option<i64> {
    folder_hour(rel_path.split('/').next()?)
}

/// Whether a checkpoint holding `files` (paths relative to the log's root) moves some of them
/// to the archive at watermark `watermark`: once the oldest folder is a day older than the
/// folders it keeps.
fn archiving_due<'a>(files: impl Iterator<Item = &'a str>, watermark: i64) -> bool {
    let oldest = files.filter_map(file_hour).min();
    oldest.is_some_and(|oldest| oldest < watermark - 2 * ARCHIVE_AFTER_HOURS)
}

/// What runs committed, as a checkpoint and its archive record it; the archive is read on the
/// first lookup that needs it.
pub struct CommittedFiles<'a> {
    store: &'a Store,
    checkpoint: &'a Checkpoint,
    archive: OnceLock<BTreeMap<String, u64>>,
}

impl Committed for CommittedFiles<'_> {
    fn size_of(&self, rel_path: &str) -> Result<Option<u64>> {
        if let Some(&size) = self.checkpoint.files.get(rel_path) {
            return Ok(Some(size));
        }
        let Some(archive) = &self.checkpoint.archive else {
            return Ok(None);
        };
        if file_hour(rel_path).is_some_and(|hour| hour >= archive.before_hour) {
            return Ok(None);
        }
        Ok(self.archived()?.get(rel_path).copied())
    }
}

impl CommittedFiles<'_> {
    /// The archive's files (none without an archive), read once.
    fn archived(&self) -> Result<&BTreeMap<String, u64>> {
        if let Some(files) = self.archive.get() {
            return Ok(files);
        }
        let files = match &self.checkpoint.archive {
            Some(archive) => self.store.read_archive(archive)?,
            None => BTreeMap::new(),
        };
        Ok(self.archive.get_or_init(|| files))
    }

    /// Every committed file: the checkpoint's and the archive's.
    pub fn all(&self) -> Result<BTreeMap<String, u64>> {
        let mut all = self.archived()?.clone();
        all.extend(self.checkpoint.files.iter().map(|(k, &v)| (k.clone(), v)));
        Ok(all)
    }
}

impl Store {
    /// What runs committed, as `checkpoint` (a checkpoint of this store) records it.
    pub fn committed<'a>(&'a self, checkpoint: &'a Checkpoint) -> CommittedFiles<'a> {
        CommittedFiles {
            store: self,
            checkpoint,
            archive: OnceLock::new(),
        }
    }

    /// Before a batch writes anything: if finishing it (its files `new_files` committed, the
    /// watermark at `watermark_after`) will archive, the archive the checkpoint names must be
    /// readable, or the batch would commit every table and then fail at its checkpoint, again
    /// on every rerun. Refused here instead, naming the archive.
    pub fn check_archive_before(
        &self,
        checkpoint: &Checkpoint,
        new_files: &[crate::input::PlannedFile],
        watermark_after: Option<i64>,
    ) -> Result<()> {
        let (Some(_), Some(watermark)) = (&checkpoint.archive, watermark_after) else {
            return Ok(());
        };
        let files = checkpoint.files.keys().map(String::as_str);
        if archiving_due(
            files.chain(new_files.iter().map(|f| f.rel_path.as_str())),
            watermark,
        ) {
            self.committed(checkpoint).archived()?;
        }
        Ok(())
    }

    fn archive_path(&self, name: &str) -> crate::storage::Location {
        self.dir.join(&format!("committed/{name}"))
    }

    /// The files archive `archive` records; an error naming it if it is missing or unreadable
    /// or does not hold as many files as the checkpoint says.
    fn read_archive(&self, archive: &ArchiveRef) -> Result<BTreeMap<String, u64>> {
        let path = self.archive_path(&archive.name);
        let unreadable = |reason: String| Error::Checkpoint {
            path: path.display_path(),
            reason,
        };
        let found: Archive = file::read_json(&path)?.ok_or_else(|| {
            unreadable(
                "the checkpoint names this archive of committed files, and it is missing (restore \
                 the checkpoint folder whole, with its committed/ folder)"
                    .into(),
            )
        })?;
        if found.files.len() as u64 != archive.files {
            return Err(unreadable(format!(
                "it records {} files, the checkpoint says {}",
                found.files.len(),
                archive.files
            )));
        }
        Ok(found.files)
    }

    /// Moves the files of folders [`ARCHIVE_AFTER_HOURS`] before the watermark's out of
    /// `checkpoint` into a new archive (with the files of the one it names), once a day of such
    /// folders has gathered; the new archive is written here, before the checkpoint that names
    /// it is committed. Returns whether it archived: once the checkpoint is committed, the
    /// replaced archive is removed ([`Store::remove_old_archives`]).
    pub fn archive_old_files(&self, checkpoint: &mut Checkpoint, batch: i64) -> Result<bool> {
        let Some(watermark) = checkpoint.watermark_hour else {
            return Ok(false);
        };
        let before_hour = watermark - ARCHIVE_AFTER_HOURS;
        if !archiving_due(checkpoint.files.keys().map(String::as_str), watermark) {
            return Ok(false);
        }
        let mut files = self.committed(checkpoint).archived()?.clone();
        let (old, recent): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut checkpoint.files)
            .into_iter()
            .partition(|(f, _)| file_hour(f).is_some_and(|hour| hour < before_hour));
        files.extend(old);
        checkpoint.files = recent;
        let archive = Archive { files };
        let bytes = serde_json::to_vec(&archive).map_err(|e| Error::Checkpoint {
            path: self.archive_path("").display_path(),
            reason: e.to_string(),
        })?;
        let digest = crate::hashing::Fast::default().hash_one(&bytes);
        let name = format!("archive-{batch:09}-{digest:016x}.json");
        // A rerun of the batch writes the same bytes under the same name.
        self.create_archive(&name, bytes)?;
        crate::faults::durable("checkpoint archive written");
        checkpoint.archive = Some(ArchiveRef {
            name,
            before_hour: before_hour.max(
                checkpoint
                    .archive
                    .as_ref()
                    .map_or(i64::MIN, |a| a.before_hour),
            ),
            files: archive.files.len() as u64,
        });
        Ok(true)
    }

    /// Removes the archives the committed `checkpoint` (of batch `batch`) does not name and
    /// that earlier batches wrote: the one it replaced, and any a crash between a checkpoint
    /// commit and this removal left. Archives of this batch or later are left alone (a run that
    /// lost its lock may be writing one). Best effort: the batch is done whatever happens here,
    /// and a failure is reported on stderr for the next archiving to finish.
    pub fn remove_old_archives(&self, checkpoint: &Checkpoint, batch: i64) {
        let current = checkpoint.archive.as_ref().map(|a| a.name.as_str());
        let removed = self.archive_names().and_then(|names| {
            for name in names {
                let written_by = name
                    .strip_prefix("archive-")
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|b| b.parse::<i64>().ok());
                if Some(name.as_str()) != current && written_by.is_some_and(|b| b < batch) {
                    self.archive_path(&name).remove()?;
                }
            }
            Ok(())
        });
        if let Err(e) = removed {
            eprintln!(
                "aquabill: warning: an archive of committed files no checkpoint names was left: {e}"
            );
        }
    }

    /// The names of the files in `committed/`.
    fn archive_names(&self) -> Result<Vec<String>> {
        let folder = self.dir.join("committed");
        match folder.as_local() {
            Some(dir) => match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .map(|e| {
                        e.map(|e| e.file_name().to_string_lossy().into_owned())
                            .map_err(|e| Error::io("listing", dir, e))
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::io("listing", dir, e)),
            },
            None => Ok(folder
                .list_files(None)?
                .into_iter()
                .map(|f| f.rel_path)
                .collect()),
        }
    }

    /// Copies the archive `checkpoint` (a checkpoint of `from`) names into this store, before a
    /// checkpoint naming it is committed here (a rebuild's staged checkpoint); a file of the same
    /// name already here must hold the same bytes.
    pub fn copy_archive_from(&self, from: &Store, checkpoint: &Checkpoint) -> Result<()> {
        let Some(archive) = &checkpoint.archive else {
            return Ok(());
        };
        let bytes = from.archive_path(&archive.name).read_existing()?;
        self.create_archive(&archive.name, bytes)
    }

    /// Writes archive `name` only if absent; one already there must hold the same bytes (the
    /// name carries a digest of them: anything else there is not this run's to replace).
    fn create_archive(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.archive_path(name);
        if path.create_new(bytes.clone())? == Created::AlreadyExists
            && path.read()?.as_deref() != Some(bytes.as_slice())
        {
            return Err(Error::Conflict {
                what: format!(
                    "the archive of committed files {}: another run wrote other files under its name",
                    path.display_path().display()
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::{format_hour, parse_hour};
    use crate::input::FOLDER_PREFIX;
    use crate::storage::Location;

    /// A file of the folder `hours` after 2026-03-01T00.
    fn file(hours: i64, name: &str) -> String {
        let hour = parse_hour("2026-03-01T00").unwrap_or_default() + hours;
        format!("{FOLDER_PREFIX}{}/{name}", format_hour(hour))
    }

    fn hour(hours: i64) -> i64 {
        parse_hour("2026-03-01T00").unwrap_or_default() + hours
    }

    #[test]
    fn old_folders_move_to_an_archive_that_lookups_still_find() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("committed");
        let store = Store::new(&Location::Local(temp_dir.path().to_path_buf()));
        // One file an hour for 100 hours; the watermark at hour 80.
        let mut checkpoint = Checkpoint {
            files: (0..100)
                .map(|h| (file(h, "a.jsonl"), 10 + h as u64))
                .collect(),
            ..store.load()?
        };
        assert!(
            !store.archive_old_files(&mut checkpoint, 7)?,
            "no watermark yet"
        );
        checkpoint.watermark_hour = Some(hour(80));
        let before = checkpoint.clone();
        assert!(store.archive_old_files(&mut checkpoint, 7)?);
        // Folders before hour 56 (a day before the watermark's) are archived, the rest kept.
        let archive = checkpoint.archive.clone().ok_or(Error::Hour { hour: 0 })?;
        assert_eq!((archive.before_hour, archive.files), (hour(56), 56));
        assert_eq!(checkpoint.files.len(), 44);
        assert!(
            checkpoint
                .files
                .keys()
                .all(|f| file_hour(f) >= Some(hour(56)))
        );
        let committed = store.committed(&checkpoint);
        assert_eq!(committed.size_of(&file(3, "a.jsonl"))?, Some(13));
        assert_eq!(
            committed.size_of(&file(3, "b.jsonl"))?,
            None,
            "never committed"
        );
        assert_eq!(committed.size_of(&file(90, "a.jsonl"))?, Some(100));
        assert_eq!(
            committed.all()?,
            before.files,
            "nothing lost, nothing added"
        );
        // A rerun of the batch after a crash writes (finds) the same archive.
        let mut rerun = before.clone();
        store.archive_old_files(&mut rerun, 7)?;
        assert_eq!(rerun, checkpoint);

        // Less than a day of old folders gathered: nothing moves.
        checkpoint.watermark_hour = Some(hour(100));
        let unchanged = checkpoint.clone();
        assert!(!store.archive_old_files(&mut checkpoint, 8)?);
        assert_eq!(checkpoint, unchanged);
        // A file taken late from an archived folder is kept in the checkpoint until the next
        // archiving, which replaces the archive with one holding both.
        checkpoint.files.insert(file(1, "late.jsonl"), 5);
        checkpoint.watermark_hour = Some(hour(101));
        let batch_9 = checkpoint.clone();
        assert!(store.archive_old_files(&mut checkpoint, 9)?);
        let newer = checkpoint.archive.clone().ok_or(Error::Hour { hour: 0 })?;
        assert_eq!((newer.before_hour, newer.files), (hour(77), 78));
        assert_ne!(newer.name, archive.name);
        // Other files under the archive's name are not this batch's to replace.
        let path = temp_dir.path().join("committed").join(&newer.name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let other = String::from_utf8_lossy(&bytes).replace("late.jsonl", "other.jsonl");
        std::fs::write(&path, other).map_err(|e| Error::io("writing", &path, e))?;
        match store.archive_old_files(&mut batch_9.clone(), 9) {
            Err(e @ Error::Conflict { .. }) => assert!(e.to_string().contains(&newer.name)),
            found => panic!("another archive under the same name must be refused, got {found:?}"),
        }
        std::fs::write(&path, &bytes).map_err(|e| Error::io("writing", &path, e))?;
        // Once the checkpoint naming the new archive is committed, the replaced one (and any
        // other an earlier batch left) goes; the one named, and later batches', stay.
        let stray = temp_dir
            .path()
            .join("committed")
            .join("archive-000000003-0.json");
        let later = temp_dir
            .path()
            .join("committed")
            .join("archive-000000010-0.json");
        for file in [&stray, &later] {
            std::fs::write(file, b"{}").map_err(|e| Error::io("writing", file, e))?;
        }
        store.remove_old_archives(&checkpoint, 9);
        let mut left = store.archive_names()?;
        left.sort();
        assert_eq!(
            left,
            [newer.name.clone(), "archive-000000010-0.json".to_owned()]
        );
        let committed = store.committed(&checkpoint);
        assert_eq!(committed.size_of(&file(1, "late.jsonl"))?, Some(5));
        assert_eq!(committed.size_of(&file(60, "a.jsonl"))?, Some(70));
        store.commit(&checkpoint)?;
        assert_eq!(
            store.load()?,
            checkpoint,
            "the checkpoint names its archive"
        );

        // A missing archive is an error naming it, never an empty record.
        std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        match store.committed(&checkpoint).size_of(&file(2, "a.jsonl")) {
            Err(e @ Error::Checkpoint { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&newer.name), "{message}");
                assert!(message.contains("missing"), "{message}");
            }
            found => panic!("a missing archive must be an error, got {found:?}"),
        }
        // Lookups of recent folders never need it.
        assert_eq!(
            store.committed(&checkpoint).size_of(&file(90, "a.jsonl"))?,
            Some(100)
        );
        Ok(())
    }
}
