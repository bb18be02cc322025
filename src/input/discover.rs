//! Finding the work of a run: the input files present now that no earlier run committed.
//!
//! The log has one folder per ingestion hour (`ingest_hour=YYYY-MM-DDTHH`) holding `.jsonl`
//! files. Hidden files are writes in progress and are skipped; anything else that does not fit
//! the layout is reported as ignored (never silently).
//!
//! The log is listed from the folder of the tables' watermark on (on S3, `ListObjectsV2` with
//! `start-after`; a local log reads its root and then only the folders from the watermark's on),
//! so the listing does not grow with the log's history: no record of an older folder can be
//! accepted any more. Every [`FULL_LISTING_EVERY_BATCHES`]th batch (about daily), and every run
//! that finds nothing new from the watermark on, lists the log whole, so that a file put into a
//! folder older than the watermark is still found within a day and quarantined as too late,
//! never lost.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hours::{format_hour, parse_hour};
use crate::storage::{Listed, Location};

/// Prefix of an ingestion-hour folder name.
pub const FOLDER_PREFIX: &str = "ingest_hour=";

/// The ingestion hour an hour folder's name (`ingest_hour=YYYY-MM-DDTHH`) names, if it names one.
pub fn folder_hour(name: &str) -> Option<i64> {
    name.strip_prefix(FOLDER_PREFIX).and_then(parse_hour)
}

/// One input file of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the input root, with `/` separators: the file's identity.
    pub rel_path: String,
    /// Absolute path, or the object's `s3://` URL.
    pub path: PathBuf,
    /// Size in bytes when planned; a different size later is an error.
    pub size: u64,
    /// Hour index of the file's ingestion-hour folder.
    pub ingest_hour: i64,
}

impl PlannedFile {
    /// The file's bytes into `buf` (see [`Location::read_existing_into`]); an error if it is
    /// gone.
    pub fn read_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        Location::of_path(&self.path).read_existing_into(buf)
    }
}

/// What a listing of the log found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Files not committed yet, in ingestion order (folder, then name).
    pub new_files: Vec<PlannedFile>,
    /// Paths that do not fit the layout, with the reason, for the run report.
    pub ignored: Vec<(String, &'static str)>,
    /// Ingestion-hour folders named after the latest hour a run may take (a clock ahead of
    /// this one wrote them): not taken, and reported by every run until their files are moved.
    pub held_back: Vec<HeldBack>,
}

/// An ingestion-hour folder dated in the future, held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// The folder's name (`ingest_hour=...`).
    pub folder: String,
    /// The `.jsonl` files in it that no run committed.
    pub files: usize,
}

/// What earlier runs committed: the size each committed file had, by its path relative to the
/// log's root.
pub trait Committed {
    /// The size `rel_path` had when a run committed it, `None` if none did.
    fn size_of(&self, rel_path: &str) -> Result<Option<u64>>;
}

impl Committed for BTreeMap<String, u64> {
    fn size_of(&self, rel_path: &str) -> Result<Option<u64>> {
        Ok(self.get(rel_path).copied())
    }
}

/// How often the log is listed whole: every this many batches (about daily).
pub const FULL_LISTING_EVERY_BATCHES: i64 = 24;

/// Lists the log's files not among `committed` for batch
/// `batch`, from the folder of hour `watermark` on (see [`listed_from`]). Folders of
/// hours after `latest_hour` (see [`crate::clock::latest_ingest_hour`]) are held back. Fails if
/// a committed file changed size.
pub fn list_new_files(
    input_root: &Location,
    committed: &dyn Committed,
    watermark: Option<i64>,
    batch: i64,
    latest_hour: i64,
) -> Result<Listing> {
    let list = |from: Option<i64>| match input_root.as_local() {
        Some(dir) => list_folder(dir, committed, from),
        None => {
            let start_after = from.map(|hour| format!("{FOLDER_PREFIX}{}", format_hour(hour)));
            list_objects(input_root, committed, start_after)
        }
    };
    let from = listed_from(watermark, batch);
    let mut listing = list(from)?;
    if from.is_some() && listing.new_files.is_empty() {
        // Nothing new from the watermark on: a run with nothing else to do lists the log whole.
        listing = list(None)?;
    }
    hold_back(&mut listing, latest_hour);
    Ok(listing)
}

/// Moves the files of folders dated after `latest_hour` out of the listing's new files.
fn hold_back(listing: &mut Listing, latest_hour: i64) {
    let (taken, future): (Vec<_>, Vec<_>) = std::mem::take(&mut listing.new_files)
        .into_iter()
        .partition(|f| f.ingest_hour <= latest_hour);
    listing.new_files = taken;
    for file in future {
        let folder = folder_of(&file.rel_path).to_owned();
        match listing.held_back.last_mut() {
            Some(last) if last.folder == folder => last.files += 1,
            _ => listing.held_back.push(HeldBack { folder, files: 1 }),
        }
    }
}

/// The first ingestion-hour folder batch `batch` lists: the watermark's (on S3, the listing
/// starts after the folder's name, which its files sort after), or every folder (`None`)
/// without a watermark and on every [`FULL_LISTING_EVERY_BATCHES`]th batch.
fn listed_from(watermark: Option<i64>, batch: i64) -> Option<i64> {
    if batch % FULL_LISTING_EVERY_BATCHES == 0 {
        return None;
    }
    watermark
}

fn list_objects(
    input_root: &Location,
    committed: &dyn Committed,
    start_after: Option<String>,
) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut folders = Vec::new();
    for (folder, files) in by_folder(input_root.list_files(start_after.as_deref())?) {
        if folder.starts_with('.') {
            continue;
        }
        match folder_hour(&folder) {
            _ if files.iter().all(|f| f.rel_path == folder) => listing
                .ignored
                .push((folder, "file outside an ingestion-hour folder")),
            Some(hour) => folders.push((hour, folder, files)),
            None => listing
                .ignored
                .push((folder, "folder name is not an ingestion hour")),
        }
    }
    folders.sort_by_key(|(hour, ..)| *hour);
    for (hour, folder, files) in folders {
        for file in files {
            let name = &file.rel_path[folder.len() + 1..];
            if name.starts_with('.') {
                continue;
            }
            if !name.ends_with(".jsonl") || name.contains('/') {
                listing.ignored.push((file.rel_path, "not a .jsonl file"));
                continue;
            }
            let location = input_root.join(&file.rel_path);
            if let Some(new) = check_committed(
                location.display_path(),
                file.rel_path,
                file.size,
                hour,
                committed,
            )? {
                listing.new_files.push(new);
            }
        }
    }
    Ok(listing)
}

/// The first part of a path relative to the log's root: its ingestion-hour folder.
fn folder_of(rel_path: &str) -> &str {
    rel_path.split('/').next().unwrap_or_default()
}

/// Groups `files` (paths relative to one folder) by their first path part.
fn by_folder(files: Vec<Listed>) -> BTreeMap<String, Vec<Listed>> {
    let mut folders: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for file in files {
        let folder = folder_of(&file.rel_path).to_owned();
        folders.entry(folder).or_default().push(file);
    }
    folders
}

/// The file as a new file of the batch, `None` if it was committed with this size; an error if
/// it was committed with another.
fn check_committed(
    path: PathBuf,
    rel_path: String,
    size: u64,
    ingest_hour: i64,
    committed: &dyn Committed,
) -> Result<Option<PlannedFile>> {
    match committed.size_of(&rel_path)? {
        Some(before) if before == size => Ok(None),
        Some(before) => Err(Error::InputChanged {
            path,
            when: "committed",
            before,
            now: size,
        }),
        None => Ok(Some(PlannedFile {
            rel_path,
            path,
            size,
            ingest_hour,
        })),
    }
}

fn list_folder(input_root: &Path, committed: &dyn Committed, from: Option<i64>) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut folders = Vec::new();
    for entry in read_dir(input_root)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let hour = folder_hour(&name);
        match (entry.path().is_dir(), hour) {
            (true, Some(hour)) if from.is_some_and(|from| hour < from) => {}
            (true, Some(hour)) => folders.push((hour, name, entry.path())),
            (true, None) => listing
                .ignored
                .push((name, "folder name is not an ingestion hour")),
            (false, _) => listing
                .ignored
                .push((name, "file outside an ingestion-hour folder")),
        }
    }
    folders.sort();
    for (hour, folder, path) in folders {
        let mut files = Vec::new();
        for entry in read_dir(&path)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{folder}/{name}");
            if name.starts_with('.') {
                continue;
            }
            if !name.ends_with(".jsonl") || !entry.path().is_file() {
                listing.ignored.push((rel, "not a .jsonl file"));
                continue;
            }
            let size = entry
                .metadata()
                .map_err(|e| Error::io("reading", entry.path(), e))?
                .len();
            if let Some(new) = check_committed(entry.path(), rel, size, hour, committed)? {
                files.push(new);
            }
        }
        files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        listing.new_files.extend(files);
    }
    Ok(listing)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::io("listing", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_after_the_latest_hour_are_held_back_whole() {
        let file = |folder: &str, name: &str| PlannedFile {
            rel_path: format!("{FOLDER_PREFIX}{folder}/{name}"),
            path: PathBuf::from(name),
            size: 1,
            ingest_hour: parse_hour(folder).unwrap_or(i64::MIN),
        };
        let mut listing = Listing {
            new_files: vec![
                file("2026-03-14T09", "a.jsonl"),
                file("2026-03-14T10", "b.jsonl"),
                file("2026-03-14T11", "c.jsonl"),
                file("2027-01-01T00", "d.jsonl"),
                file("2027-01-01T00", "e.jsonl"),
            ],
            ..Listing::default()
        };
        hold_back(&mut listing, parse_hour("2026-03-14T10").unwrap_or(0));
        let taken: Vec<&str> = listing
            .new_files
            .iter()
            .map(|f| &f.path)
            .filter_map(|p| p.to_str())
            .collect();
        assert_eq!(taken, ["a.jsonl", "b.jsonl"]);
        assert_eq!(
            listing.held_back,
            [
                HeldBack {
                    folder: "ingest_hour=2026-03-14T11".into(),
                    files: 1
                },
                HeldBack {
                    folder: "ingest_hour=2027-01-01T00".into(),
                    files: 2
                },
            ]
        );
    }

    #[test]
    fn listings_start_at_the_watermark_and_are_whole_about_daily() -> Result<()> {
        let hour = |h: &str| parse_hour(h).ok_or(Error::Hour { hour: 0 });
        let temp_root = crate::testing::TempDir::new("listing");
        let root = temp_root.path().to_path_buf();
        for (folder, file) in [
            ("2026-03-25T09", "old.jsonl"),
            ("2026-03-25T11", "at.jsonl"),
            ("2026-03-25T12", "new.jsonl"),
        ] {
            let dir = root.join(format!("{FOLDER_PREFIX}{folder}"));
            fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
            let path = dir.join(file);
            fs::write(&path, b"{}\n").map_err(|e| Error::io("writing", &path, e))?;
        }
        let watermark = Some(hour("2026-03-25T11")?);
        let latest = hour("2026-03-26T00")?;
        let listed = |batch: i64| -> Result<Vec<String>> {
            let location = Location::Local(root.clone());
            let none = BTreeMap::new();
            let listing = list_new_files(&location, &none, watermark, batch, latest)?;
            Ok(listing
                .new_files
                .into_iter()
                .map(|f| f.rel_path.rsplit('/').next().unwrap_or_default().to_owned())
                .collect())
        };
        // The watermark's own folder is listed, older ones only by every 24th batch, or when
        // nothing is new from the watermark on.
        assert_eq!(listed(1)?, ["at.jsonl", "new.jsonl"]);
        assert_eq!(listed(23)?, ["at.jsonl", "new.jsonl"]);
        assert_eq!(listed(24)?, ["old.jsonl", "at.jsonl", "new.jsonl"]);
        assert_eq!(listed(25)?, ["at.jsonl", "new.jsonl"]);
        assert_eq!(listed(48)?, ["old.jsonl", "at.jsonl", "new.jsonl"]);
        for file in ["at.jsonl", "new.jsonl"] {
            let folder = if file == "at.jsonl" {
                "2026-03-25T11"
            } else {
                "2026-03-25T12"
            };
            let path = root.join(format!("{FOLDER_PREFIX}{folder}")).join(file);
            fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
        assert_eq!(listed(1)?, ["old.jsonl"]);
        assert_eq!(listed_from(None, 1), None, "no watermark yet: everything");
        assert_eq!(
            listed_from(watermark, 0),
            None,
            "the first batch: everything"
        );
        Ok(())
    }
}
