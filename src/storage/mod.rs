//! Where the product's files live: a local folder, or a prefix of an S3-compatible bucket
//! (`s3://bucket/prefix`: AWS S3, MinIO, Ceph, R2).
//!
//! A [`Location`] names a folder or a file in either, and offers the few operations the
//! checkpoint, the batch plans, the rebuild marker, the run lock and the log need: read, replace
//! atomically, create only if absent, replace only if unchanged, list, remove. A local file is
//! replaced by writing a temporary file, syncing it and renaming it over the old one; an object
//! is replaced by one PUT, which S3 makes atomic per object. "Create only if absent" is a
//! temporary file hard-linked to its name locally and a PUT with `If-None-Match: *` on S3;
//! "replace only if unchanged" is a PUT with `If-Match: <etag>` (S3 only).
//!
//! `local.rs` and `s3.rs` hold each side's operations; every method of [`Location`] picks one.
//! `uploads.rs` lets a table's data files upload many at a time. `remote.rs` serves a local
//! folder as a bucket at a fixed latency per request, for benchmarks (`aquabill::fixture`).
//!
//! S3 settings (endpoint, region, credentials) come from the standard `AWS_*` environment
//! variables only, never from notebook parameters, and are never printed; the Delta tables use
//! the same clients (`table::stores`).

mod local;
mod remote;
mod runtime;
mod s3;
mod uploads;

use std::fmt;
use std::path::{Path, PathBuf};

use object_store::UpdateVersion;

pub use remote::{Remote, Requests, serve_folder_as_bucket};
pub use runtime::block_on;
pub use s3::client as s3_client;
pub use uploads::{IN_FLIGHT, Overlapping, Uploads};

use crate::error::{Error, Result};

/// A folder or file, local or on S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute local path.
    Local(PathBuf),
    /// A key (or key prefix, for a folder) in a bucket; no leading or trailing `/`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key, `""` for the bucket's root.
        key: String,
    },
}

/// What [`Location::create_new`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The file did not exist and now holds the bytes, at this version.
    Yes(Version),
    /// The file already existed; nothing was written.
    AlreadyExists,
}

/// A version of an object as the store reported it (on S3 its ETag), for
/// [`Location::replace_if_unchanged`]; local files have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version {
    e_tag: Option<String>,
    version: Option<String>,
}

impl Version {
    fn update(&self) -> UpdateVersion {
        UpdateVersion {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

impl From<object_store::PutResult> for Version {
    fn from(put: object_store::PutResult) -> Self {
        Self {
            e_tag: put.e_tag,
            version: put.version,
        }
    }
}

/// One file found by [`Location::list_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the listed folder, with `/` separators.
    pub rel_path: String,
    /// Size in bytes.
    pub size: u64,
}

impl Location {
    /// `text` as an S3 location if it is an `s3://` (or `s3a://`) URL, `None` if it has no
    /// scheme (a local path); an error for any other scheme or a malformed bucket or key.
    pub fn parse_url(text: &str) -> std::result::Result<Option<Self>, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(None);
        };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "s3" | "s3a") {
            return Err(format!(
                "`{scheme}://` is not supported: use a local path or s3://bucket/prefix"
            ));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(format!(
                "`{bucket}` is not an S3 bucket name (3 to 63 lowercase letters, digits, `.`, `-`)"
            ));
        }
        let key = key.trim_end_matches('/');
        if key
            .split('/')
            .any(|part| matches!(part, "." | "..") || (part.is_empty() && !key.is_empty()))
        {
            return Err(format!("`{key}` has an empty, `.` or `..` part"));
        }
        Ok(Some(Self::S3 {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// The location a planned input file's `path` names: an `s3://` URL or a local path.
    pub fn of_path(path: &Path) -> Self {
        match path.to_str().map(Self::parse_url) {
            Some(Ok(Some(location))) => location,
            _ => Self::Local(path.to_owned()),
        }
    }

    /// `rel` (with `/` separators) below this folder.
    pub fn join(&self, rel: &str) -> Self {
        match self {
            Self::Local(path) => Self::Local(path.join(rel)),
            Self::S3 { bucket, key } => {
                let rel = rel.trim_matches('/');
                let key = match (key.is_empty(), rel.is_empty()) {
                    (_, true) => key.clone(),
                    (true, false) => rel.to_owned(),
                    (false, false) => format!("{key}/{rel}"),
                };
                Self::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
        }
    }

    /// The local path, if the location is local.
    pub fn as_local(&self) -> Option<&Path> {
        match self {
            Self::Local(path) => Some(path),
            Self::S3 { .. } => None,
        }
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local(a), Self::Local(b)) => a.starts_with(b),
            (Self::S3 { bucket: a, key: ka }, Self::S3 { bucket: b, key: kb }) => {
                a == b && (kb.is_empty() || ka == kb || ka.starts_with(&format!("{kb}/")))
            }
            _ => false,
        }
    }

    /// The location as a path for error messages (an S3 location as its URL).
    pub fn display_path(&self) -> PathBuf {
        match self {
            Self::Local(path) => path.clone(),
            Self::S3 { .. } => PathBuf::from(self.to_string()),
        }
    }

    /// The object, for an S3 location; `None` for a local one.
    fn object(&self) -> Result<Option<s3::Object>> {
        match self {
            Self::Local(_) => Ok(None),
            Self::S3 { bucket, key } => s3::Object::new(bucket, key, self.to_string()).map(Some),
        }
    }

    /// The file's bytes, `None` if it does not exist.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.read_versioned()?.map(|(bytes, _)| bytes))
    }

    /// The file's bytes; an error if it does not exist.
    pub fn read_existing(&self) -> Result<Vec<u8>> {
        self.read()?.ok_or_else(|| self.not_found())
    }

    /// The error for reading a file that does not exist.
    fn not_found(&self) -> Error {
        Error::io(
            "reading",
            self.display_path(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    }

    /// The file's bytes into `buf` (its old contents dropped, its memory kept); an error if it
    /// does not exist. Reading a run of large files into one buffer maps and zeroes its pages
    /// once, not once a file.
    pub fn read_existing_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        match self.object()? {
            // An object arrives as one body; it replaces the buffer rather than being copied in.
            Some(object) => {
                *buf = object.read_versioned()?.ok_or_else(|| self.not_found())?.0;
                Ok(())
            }
            None => local::read_into(&self.display_path(), buf),
        }
    }

    /// The file's size in bytes; an error if it does not exist.
    pub fn size(&self) -> Result<u64> {
        match self.object()? {
            Some(object) => object.size(),
            None => local::size(&self.display_path()),
        }
    }

    /// The file's bytes and (on S3) its version for [`Location::replace_if_unchanged`].
    pub fn read_versioned(&self) -> Result<Option<(Vec<u8>, Version)>> {
        match self.object()? {
            Some(object) => object.read_versioned(),
            None => Ok(local::read(&self.display_path())?.map(|b| (b, Version::default()))),
        }
    }

    /// Replaces the file with `bytes` atomically: readers see the old or the new bytes, and a
    /// crash leaves one or the other.
    pub fn write_atomic(&self, bytes: Vec<u8>) -> Result<()> {
        match self.object()? {
            Some(object) => object.write(bytes),
            None => local::write_atomic(&self.display_path(), &bytes),
        }
    }

    /// Writes `bytes` only if the file does not exist yet (on S3 `If-None-Match: *`).
    pub fn create_new(&self, bytes: Vec<u8>) -> Result<Created> {
        match self.object()? {
            Some(object) => object.create_new(bytes),
            None => local::create_new(&self.display_path(), &bytes),
        }
    }

    /// Replaces the object with `bytes` only if it is still at `version` (on S3 `If-Match`);
    /// its new version, or `None` if another writer changed it first. Local files have no
    /// versions: an error.
    pub fn replace_if_unchanged(
        &self,
        bytes: Vec<u8>,
        version: &Version,
    ) -> Result<Option<Version>> {
        match self.object()? {
            Some(object) => object.replace_if_unchanged(bytes, version),
            None => Err(Error::io(
                "replacing only if unchanged",
                self.display_path(),
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )),
        }
    }

    /// Whether a file exists here, or (for a folder) anything below it.
    pub fn exists(&self) -> Result<bool> {
        block_on(self.exists_async())?
    }

    /// [`Location::exists`], for async callers.
    pub async fn exists_async(&self) -> Result<bool> {
        match self.object()? {
            Some(object) => object.exists().await,
            None => Ok(self.display_path().exists()),
        }
    }

    /// Removes the file; a missing file is not an error.
    pub fn remove(&self) -> Result<()> {
        match self.object()? {
            Some(object) => object.remove(),
            None => local::remove(&self.display_path()),
        }
    }

    /// Removes the folder and everything below it; a missing folder is not an error.
    pub fn remove_all(&self) -> Result<()> {
        match self.object()? {
            Some(object) => object.remove_all(),
            None => local::remove_all(&self.display_path()),
        }
    }

    /// The files below this S3 folder whose relative path sorts after `start_after` (all of
    /// them if `None`), in key order: one paged `ListObjectsV2` from that key on, so the
    /// listing does not grow with what sorts before it. (A local log is listed folder by
    /// folder: `input::discover`.)
    pub fn list_files(&self, start_after: Option<&str>) -> Result<Vec<Listed>> {
        match self.object()? {
            Some(object) => object.list_files(start_after),
            None => Err(Error::io(
                "listing by key",
                self.display_path(),
                std::io::Error::from(std::io::ErrorKind::Unsupported),
            )),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, key } if key.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_and_join() {
        let loc = Location::parse_url("s3://my-bucket/tables/prod/").unwrap_or_default();
        assert_eq!(
            loc,
            Some(Location::S3 {
                bucket: "my-bucket".into(),
                key: "tables/prod".into()
            })
        );
        let loc = loc.unwrap_or_else(|| Location::Local("/".into()));
        assert_eq!(
            loc.join("_checkpoint/checkpoint.json").to_string(),
            "s3://my-bucket/tables/prod/_checkpoint/checkpoint.json"
        );
        assert!(loc.join("x").starts_with(&loc));
        assert!(!loc.starts_with(&loc.join("x")));
        let sibling = Location::parse_url("s3://my-bucket/tables/production");
        assert!(
            !sibling
                .unwrap_or_default()
                .is_some_and(|s| s.starts_with(&loc))
        );
        let root = Location::parse_url("s3a://bkt").unwrap_or_default();
        assert_eq!(
            root.as_ref().map(|r| r.join("a/b").to_string()),
            Some("s3://bkt/a/b".into())
        );
        assert_eq!(Location::parse_url("/data/log"), Ok(None));
        for bad in [
            "gs://bucket/x",
            "s3://B/x",
            "s3://ab/x",
            "s3://bucket/a/../b",
            "s3://bucket//a",
        ] {
            assert!(Location::parse_url(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn planned_paths_name_their_location() {
        assert_eq!(
            Location::of_path(Path::new("s3://bkt/log/ingest_hour=2026-03-01T00/a.jsonl")),
            Location::S3 {
                bucket: "bkt".into(),
                key: "log/ingest_hour=2026-03-01T00/a.jsonl".into()
            }
        );
        assert_eq!(
            Location::of_path(Path::new("/log/a.jsonl")),
            Location::Local("/log/a.jsonl".into())
        );
    }

    #[test]
    fn local_files_are_created_once_and_replaced_atomically() -> Result<()> {
        let temp_dir = crate::testing::TempDir::new("storage");
        let dir = temp_dir.path().to_path_buf();
        let file = Location::Local(dir.join("sub/f.json"));
        assert_eq!(file.read()?, None);
        assert_eq!(
            file.create_new(b"one".to_vec())?,
            Created::Yes(Version::default())
        );
        assert_eq!(file.create_new(b"two".to_vec())?, Created::AlreadyExists);
        assert_eq!(file.read()?, Some(b"one".to_vec()));
        // No temporary file is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .map_err(|e| Error::io("listing", &dir, e))?
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        file.write_atomic(b"three".to_vec())?;
        assert_eq!(file.read()?, Some(b"three".to_vec()));
        assert!(file.exists()?);
        file.remove()?;
        file.remove()?;
        assert!(!file.exists()?);
        Location::Local(dir.clone()).remove_all()?;
        assert!(!dir.exists());
        Ok(())
    }
}
