//! Data files uploaded while the writers encode the next ones. On object storage a file's
//! upload waits a round trip or more (tens of milliseconds on S3) and the writers would wait
//! with it: one upload per writer thread in flight. [`Overlapping`] is the store a table on S3
//! writes through: it takes over each plain PUT of a `.parquet` object outside `_delta_log/`,
//! starts it on the runtime with at most [`IN_FLIGHT`] in flight, and answers at once; the
//! table's [`Uploads`] then waits for every upload started and gives the first error. Everything
//! else (commits and checkpoints of the Delta log, conditional writes, multipart uploads, reads,
//! lists, deletes) goes straight to the store.
//!
//! Nothing may be committed before [`Uploads::finish`] returned: a data file is in the store only
//! then. A table's writes (`Table::write_frames`) call it before they return their files.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The most data-file uploads in flight at once, per table.
pub const IN_FLIGHT: usize = 32;

/// The uploads a table's store started and nobody waited for yet.
#[derive(Debug)]
pub struct Uploads {
    slots: Arc<Semaphore>,
    started: Mutex<Vec<(Key, JoinHandle<object_store::Result<PutResult>>)>>,
}

impl Default for Uploads {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            started: Mutex::new(Vec::new()),
        }
    }
}

/// An upload that failed: the object's key and why.
#[derive(Debug)]
pub struct Failed {
    /// The object's key.
    pub key: String,
    /// The store's error.
    pub source: object_store::Error,
}

impl Uploads {
    /// Waits for every upload started so far; the first that failed, if any. Every upload is
    /// waited for, failed or not, so none is still running when this returns.
    pub async fn finish(&self) -> Result<usize, Failed> {
        let started = match self.started.lock() {
            Ok(mut started) => std::mem::take(&mut *started),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let count = started.len();
        let mut first = None;
        for (key, upload) in started {
            let failed = match upload.await {
                Ok(Ok(_)) => continue,
                Ok(Err(source)) => source,
                Err(joined) => object_store::Error::Generic {
                    store: "upload",
                    source: Box::new(joined),
                },
            };
            first.get_or_insert(Failed {
                key: key.to_string(),
                source: failed,
            });
        }
        first.map_or(Ok(count), Err)
    }
}

/// A store whose plain data-file PUTs overlap (see the module's doc).
#[derive(Debug)]
pub struct Overlapping {
    inner: Arc<dyn ObjectStore>,
    uploads: Arc<Uploads>,
}

impl Overlapping {
    /// `inner`, with its data-file PUTs started in the background and tracked by `uploads`.
    pub fn new(inner: Arc<dyn ObjectStore>, uploads: Arc<Uploads>) -> Self {
        Self { inner, uploads }
    }

    /// Whether a PUT of `key` with `opts` is a data file's, which may overlap.
    fn overlaps(key: &Key, opts: &PutOptions) -> bool {
        matches!(opts.mode, PutMode::Overwrite)
            && key.extension() == Some("parquet")
            && !key.parts().any(|part| part.as_ref() == "_delta_log")
    }
}

impl fmt::Display for Overlapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Overlapping({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Overlapping {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !Self::overlaps(location, &opts) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let slot = Arc::clone(&self.uploads.slots)
            .acquire_owned()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "upload",
                source: Box::new(e),
            })?;
        let inner = Arc::clone(&self.inner);
        let key = location.clone();
        let upload = tokio::spawn(async move {
            let put = inner.put_opts(&key, payload, opts).await;
            drop(slot);
            put
        });
        match self.uploads.started.lock() {
            Ok(mut started) => started.push((location.clone(), upload)),
            Err(poisoned) => poisoned.into_inner().push((location.clone(), upload)),
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Key,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Key,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Key>>,
    ) -> BoxStream<'static, object_store::Result<Key>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Key>,
        offset: &Key,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Key,
        to: &Key,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt as _, PutMode};

    use super::*;
    use crate::storage::block_on;

    /// Data files are in the store once `finish` returned, not necessarily before; a commit (a
    /// conditional create under `_delta_log/`) is in the store when its PUT returns.
    #[test]
    fn data_files_land_by_finish_and_commits_at_once() -> crate::error::Result<()> {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let uploads = Arc::new(Uploads::default());
        let store = Overlapping::new(Arc::clone(&inner), Arc::clone(&uploads));
        let data_file = |i: u8| Key::from(format!("usage_hour=2026-03-01T00/part-{i}.parquet"));
        block_on(async {
            for i in 0..100 {
                store
                    .put(&data_file(i), PutPayload::from(vec![i; 10]))
                    .await?;
            }
            let commit = Key::from("_delta_log/00000000000000000001.json");
            let create = PutOptions::from(PutMode::Create);
            store
                .put_opts(&commit, PutPayload::from("{}"), create.clone())
                .await?;
            // The commit is there at once, and a second create of it is refused.
            assert!(inner.head(&commit).await.is_ok());
            assert!(
                store
                    .put_opts(&commit, PutPayload::from("{}"), create)
                    .await
                    .is_err()
            );
            assert_eq!(uploads.finish().await.map_err(|f| f.source)?, 100);
            for i in 0..100 {
                let bytes = inner.get(&data_file(i)).await?.bytes().await?;
                assert_eq!(bytes.as_ref(), &[i; 10]);
            }
            // Nothing is left to wait for.
            assert_eq!(uploads.finish().await.map_err(|f| f.source)?, 0);
            Ok::<_, object_store::Error>(())
        })?
        .map_err(|e| crate::error::Error::Storage {
            action: "testing",
            location: "memory".to_owned(),
            source: Box::new(e),
        })
    }
}
