//! A local folder served as an S3 bucket at a fixed latency per request, for benchmarks: what a
//! view costs on object storage at real latency, without a test server's own cost per request
//! (the tests' S3 server, moto, answers one request at a time, about 1.8 ms each, so a view of
//! a thousand requests measures the server). Every request waits `latency` on a timer, so
//! requests overlap as they do on S3, then goes to the folder; a listing waits once more per
//! 1,000 entries (S3's page). The requests are counted by method, with how many were in flight
//! when each one started.
//!
//! Reads and listings are what it is for. Writes reach the folder with what `object_store`'s
//! local store offers (create-if-absent, but no replace-if-unchanged), so a run that needs
//! S3's conditional replace cannot run on it.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::{Error, Result};

/// Entries in one page of an S3 listing.
const PAGE: usize = 1_000;

/// The requests a [`Remote`] store served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// GETs, ranged or whole, and HEADs.
    pub gets: usize,
    /// Listing pages.
    pub lists: usize,
    /// PUTs, copies and deletes.
    pub writes: usize,
    /// Requests in flight when each request started, itself included, in the order they
    /// started.
    pub in_flight: Vec<usize>,
}

impl Requests {
    /// Requests in all.
    pub fn total(&self) -> usize {
        self.gets + self.lists + self.writes
    }

    /// The requests served since `earlier` (an earlier reading of the same store).
    pub fn since(&self, earlier: &Requests) -> Requests {
        Requests {
            gets: self.gets.saturating_sub(earlier.gets),
            lists: self.lists.saturating_sub(earlier.lists),
            writes: self.writes.saturating_sub(earlier.writes),
            in_flight: self
                .in_flight
                .get(earlier.in_flight.len()..)
                .unwrap_or_default()
                .to_vec(),
        }
    }

    /// The median of [`Self::in_flight`] (0 without requests).
    pub fn median_in_flight(&self) -> usize {
        let mut sorted = self.in_flight.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(0)
    }
}

/// What a request is, for [`Requests`].
#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    List,
    Write,
}

/// A local folder behind a fixed latency per request (see the module's doc).
#[derive(Debug)]
pub struct Remote {
    folder: LocalFileSystem,
    latency: Duration,
    flying: AtomicUsize,
    requests: Mutex<Requests>,
}

impl Remote {
    /// The folder `root` (which must exist) at `latency` per request.
    pub fn new(root: &Path, latency: Duration) -> Result<Self> {
        let folder = LocalFileSystem::new_with_prefix(root).map_err(|e| Error::Storage {
            action: "opening",
            location: root.display().to_string(),
            source: Box::new(e),
        })?;
        Ok(Self {
            folder,
            latency,
            flying: AtomicUsize::new(0),
            requests: Mutex::new(Requests::default()),
        })
    }

    /// The requests served so far.
    pub fn requests(&self) -> Requests {
        match self.requests.lock() {
            Ok(requests) => requests.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Counts a request of `method` and waits the latency; the request is in flight until the
    /// returned guard drops.
    async fn request(&self, method: Method) -> Flying<'_> {
        let now = self.flying.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut requests = match self.requests.lock() {
                Ok(requests) => requests,
                Err(poisoned) => poisoned.into_inner(),
            };
            match method {
                Method::Get => requests.gets += 1,
                Method::List => requests.lists += 1,
                Method::Write => requests.writes += 1,
            }
            requests.in_flight.push(now);
        }
        let flying = Flying(&self.flying);
        tokio::time::sleep(self.latency).await;
        flying
    }

    /// `entries` in key order, as S3 lists them (the local store lists in the folder's order),
    /// each page of [`PAGE`] after a request's wait (an empty listing is one request too).
    fn paged(
        self: &Arc<Self>,
        entries: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = Arc::clone(self);
        let empty = Arc::clone(self);
        let sorted = async move {
            let mut all: Vec<_> = entries.collect().await;
            all.sort_by_key(|entry| entry.as_ref().ok().map(|meta| meta.location.clone()));
            if all.is_empty() {
                // An empty page is a request too.
                drop(empty.request(Method::List).await);
            }
            futures::stream::iter(all)
        };
        futures::stream::once(sorted)
            .flatten()
            .enumerate()
            .then(move |(i, entry)| {
                let this = Arc::clone(&this);
                async move {
                    if i % PAGE == 0 {
                        drop(this.request(Method::List).await);
                    }
                    entry
                }
            })
            .boxed()
    }
}

/// A request in flight; it lands when dropped.
struct Flying<'a>(&'a AtomicUsize);

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({}, {:?})", self.folder, self.latency)
    }
}

/// The store as the tables take it: a [`Remote`] shared with the caller, who reads its
/// [`Requests`].
#[derive(Debug)]
pub struct Shared(pub Arc<Remote>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for Shared {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let _flying = self.0.request(Method::Write).await;
        self.0.folder.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let _flying = self.0.request(Method::Write).await;
        self.0.folder.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Key,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let _flying = self.0.request(Method::Get).await;
        self.0.folder.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Key>>,
    ) -> BoxStream<'static, object_store::Result<Key>> {
        let this = Arc::clone(&self.0);
        let located = locations
            .then(move |location| {
                let this = Arc::clone(&this);
                async move {
                    drop(this.request(Method::Write).await);
                    location
                }
            })
            .boxed();
        self.0.folder.delete_stream(located)
    }

    fn list(&self, prefix: Option<&Key>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.paged(self.0.folder.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Key>,
        offset: &Key,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.paged(self.0.folder.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<ListResult> {
        let _flying = self.0.request(Method::List).await;
        self.0.folder.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Key,
        to: &Key,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let _flying = self.0.request(Method::Write).await;
        self.0.folder.copy_opts(from, to, options).await
    }
}

/// Serves `bucket` (`s3://bucket/...` in `output_root`) from the folder `root` at `latency` per
/// request, in this process, in place of a client built from the `AWS_*` environment; the
/// returned store counts the requests.
pub fn serve_folder_as_bucket(bucket: &str, root: &Path, latency: Duration) -> Result<Arc<Remote>> {
    let remote = Arc::new(Remote::new(root, latency)?);
    super::s3::serve(bucket, Arc::new(Shared(Arc::clone(&remote))));
    Ok(remote)
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt as _;

    use super::*;
    use crate::storage::block_on;

    /// Requests wait the latency side by side, and are counted with those in flight; a listing
    /// is a request a page, an empty one too.
    #[test]
    fn requests_overlap_and_are_counted() -> Result<()> {
        let folder = crate::testing::TempDir::new("remote");
        let remote = Arc::new(Remote::new(folder.path(), Duration::from_millis(50))?);
        let store = Shared(Arc::clone(&remote));
        let (a, b) = block_on(async {
            let a = Key::from("a/1.parquet");
            let b = Key::from("a/2.parquet");
            futures::join!(
                store.put(&a, PutPayload::from_static(b"one")),
                store.put(&b, PutPayload::from_static(b"two"))
            )
        })?;
        assert!(a.is_ok() && b.is_ok());
        let listed = block_on(store.list(Some(&Key::from("a"))).collect::<Vec<_>>())?;
        assert_eq!(listed.len(), 2);
        let nothing = block_on(store.list(Some(&Key::from("b"))).collect::<Vec<_>>())?;
        assert!(nothing.is_empty());
        let requests = remote.requests();
        assert_eq!((requests.writes, requests.lists, requests.gets), (2, 2, 0));
        // The second PUT started while the first waited.
        assert_eq!(requests.in_flight, vec![1, 2, 1, 1]);
        Ok(())
    }
}
