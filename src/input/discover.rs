//! Finding the work of a run: the input files present now that no earlier run committed.
//!
//! The log has one folder per ingestion hour (`ingest_hour=YYYY-MM-DDTHH`) holding `.jsonl`
//! files. Hidden files are writes in progress and are skipped; anything else that does not fit
//! the layout is reported as ignored (never silently).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hours::parse_hour;

/// Prefix of an ingestion-hour folder name.
pub const FOLDER_PREFIX: &str = "ingest_hour=";

/// One input file of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the input root, with `/` separators: the file's identity.
    pub rel_path: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes when planned; a different size later is an error.
    pub size: u64,
    /// Hour index of the file's ingestion-hour folder.
    pub ingest_hour: i64,
}

/// What a listing of the log found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Files not committed yet, in ingestion order (folder, then name).
    pub new_files: Vec<PlannedFile>,
    /// Paths that do not fit the layout, with the reason, for the run report.
    pub ignored: Vec<(String, &'static str)>,
}

/// Lists the log's files not among `committed` (relative path -> size in bytes). Fails if a
/// committed file changed size.
pub fn list_new_files(input_root: &Path, committed: &BTreeMap<String, u64>) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut folders = Vec::new();
    for entry in read_dir(input_root)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let hour = name.strip_prefix(FOLDER_PREFIX).and_then(parse_hour);
        match (entry.path().is_dir(), hour) {
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
            match committed.get(&rel) {
                Some(&before) if before == size => {}
                Some(&before) => {
                    return Err(Error::InputChanged {
                        path: entry.path(),
                        when: "committed",
                        before,
                        now: size,
                    });
                }
                None => files.push(PlannedFile {
                    rel_path: rel,
                    path: entry.path(),
                    size,
                    ingest_hour: hour,
                }),
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
