//! The S3 side of [`super::Location`]: an object (or a key prefix) in a bucket, read and
//! written with `object_store`'s client, the conditional writes as `If-None-Match: *` and
//! `If-Match: <etag>`.
//!
//! Clients: one per bucket per process, configured from the standard `AWS_*` environment
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, web identity, container credentials or instance
//! metadata: what `object_store`'s `AmazonS3Builder::from_env` reads). The Delta tables use the
//! same clients (`table::stores`). `object_store`'s S3 client is already compiled for
//! `deltalake`'s kernel, so it costs no build time; the `deltalake` crate's own `s3` feature
//! would add the AWS SDK (42 crates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use super::{Created, Listed, Version, block_on};
use crate::error::{Error, Result};

static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();

/// The client of `bucket`, built on first use.
pub fn client(bucket: &str) -> object_store::Result<Arc<dyn ObjectStore>> {
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = clients.get(bucket) {
        return Ok(client.clone());
    }
    let client: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?,
    );
    clients.insert(bucket.to_owned(), client.clone());
    Ok(client)
}

/// Serves `bucket` from `store` in this process from now on, in place of a client built from the
/// environment (benchmarks: `remote::serve_folder_as_bucket`).
pub(super) fn serve(bucket: &str, store: Arc<dyn ObjectStore>) {
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    clients.insert(bucket.to_owned(), store);
}

/// An object, or a key prefix for a folder, with its bucket's client.
pub(super) struct Object {
    store: Arc<dyn ObjectStore>,
    key: Key,
    /// Its `s3://` URL, for messages.
    url: String,
}

impl Object {
    /// The object `key` of `bucket` (`url` names it in messages).
    pub(super) fn new(bucket: &str, key: &str, url: String) -> Result<Self> {
        let store = client(bucket).map_err(|source| Error::Storage {
            action: "connecting to",
            location: url.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            store,
            key: Key::from(key),
            url,
        })
    }

    fn error(&self, action: &'static str) -> impl Fn(object_store::Error) -> Error + '_ {
        move |source| Error::Storage {
            action,
            location: self.url.clone(),
            source: Box::new(source),
        }
    }

    /// The object's size in bytes; an error if it does not exist.
    pub(super) fn size(&self) -> Result<u64> {
        block_on(self.store.head(&self.key))?
            .map(|meta| meta.size)
            .map_err(self.error("reading"))
    }

    /// The object's bytes and version, `None` if it does not exist.
    pub(super) fn read_versioned(&self) -> Result<Option<(Vec<u8>, Version)>> {
        block_on(async {
            match self.store.get(&self.key).await {
                Ok(got) => {
                    let version = Version {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await.map_err(self.error("reading"))?;
                    Ok(Some((bytes.to_vec(), version)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.error("reading")(e)),
            }
        })?
    }

    /// Replaces the object with `bytes` (one PUT, atomic per object).
    pub(super) fn write(&self, bytes: Vec<u8>) -> Result<()> {
        block_on(self.store.put(&self.key, PutPayload::from(bytes)))?
            .map(drop)
            .map_err(self.error("writing"))
    }

    /// Writes `bytes` only if the object does not exist yet (`If-None-Match: *`).
    pub(super) fn create_new(&self, bytes: Vec<u8>) -> Result<Created> {
        let options = PutOptions::from(PutMode::Create);
        match block_on(
            self.store
                .put_opts(&self.key, PutPayload::from(bytes), options),
        )? {
            Ok(put) => Ok(Created::Yes(put.into())),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.error("creating")(e)),
        }
    }

    /// Replaces the object with `bytes` only if it is still at `version` (`If-Match`).
    pub(super) fn replace_if_unchanged(
        &self,
        bytes: Vec<u8>,
        version: &Version,
    ) -> Result<Option<Version>> {
        let options = PutOptions::from(PutMode::Update(version.update()));
        match block_on(
            self.store
                .put_opts(&self.key, PutPayload::from(bytes), options),
        )? {
            Ok(put) => Ok(Some(put.into())),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(None),
            Err(e) => Err(self.error("replacing")(e)),
        }
    }

    /// Whether the object, or anything below the prefix, exists.
    pub(super) async fn exists(&self) -> Result<bool> {
        if self.store.head(&self.key).await.is_ok() {
            return Ok(true);
        }
        let mut below = self.store.list(Some(&self.key));
        below
            .try_next()
            .await
            .map(|first| first.is_some())
            .map_err(self.error("listing"))
    }

    /// Removes the object; a missing one is not an error.
    pub(super) fn remove(&self) -> Result<()> {
        match block_on(self.store.delete(&self.key))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("removing")(e)),
        }
    }

    /// Removes every object below the prefix.
    pub(super) fn remove_all(&self) -> Result<()> {
        block_on(async {
            let keys = self
                .store
                .list(Some(&self.key))
                .map_ok(|meta| meta.location)
                .boxed();
            self.store
                .delete_stream(keys)
                .try_for_each(|_| async { Ok(()) })
                .await
                .map_err(self.error("removing"))
        })?
    }

    /// The objects below the prefix whose relative path sorts after `start_after` (all of them
    /// if `None`), in key order: one paged `ListObjectsV2` from that key on.
    pub(super) fn list_files(&self, start_after: Option<&str>) -> Result<Vec<Listed>> {
        let prefix = if self.key.as_ref().is_empty() {
            String::new()
        } else {
            format!("{}/", self.key)
        };
        block_on(async {
            let listing = match start_after {
                Some(after) => self
                    .store
                    .list_with_offset(Some(&self.key), &Key::from(format!("{prefix}{after}"))),
                None => self.store.list(Some(&self.key)),
            };
            let metas: Vec<_> = listing.try_collect().await.map_err(self.error("listing"))?;
            Ok(metas
                .into_iter()
                .filter_map(|meta| {
                    let rel = meta.location.as_ref().strip_prefix(&prefix)?.to_owned();
                    Some(Listed {
                        rel_path: rel,
                        size: meta.size,
                    })
                })
                .collect())
        })?
    }
}
