//! Where `deltalake` finds a table: a local folder's `file://` URL, or an `s3://` URL served
//! by the storage layer's S3 clients (registered here for `s3://` and `s3a://`).
//!
//! Delta commits on S3 go through `deltalake`'s default log store, which writes each commit
//! file with `If-None-Match: *` (conditional create, on by default in `object_store` since
//! 0.12): of two writers committing the same version one gets "already exists" and retries on
//! top of the other, so no commit is lost or doubled, on any store that implements conditional
//! writes (AWS S3 since 2024, MinIO, Ceph RGW, R2). No lock table is needed.
//!
//! A table on S3 is opened on its bucket's client wrapped in `storage::uploads::Overlapping`, so
//! its data files upload many at a time while the writers encode the next ones; the table keeps
//! the [`Uploads`] to wait for them before anything is committed.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::path::Path as Key;

use crate::error::{Error, Result};
use crate::storage::{Location, Overlapping, Uploads, s3_client};

/// The table in `dir`, its log loaded if it has one (a location without a table is no error: the
/// caller may create it), and for a table on S3 the uploads its data files go through.
pub(super) async fn load(
    dir: &Location,
    url: url::Url,
) -> DeltaResult<(DeltaTable, Option<Arc<Uploads>>)> {
    let (builder, uploads) = match dir {
        Location::Local(_) => (DeltaTableBuilder::from_url(url)?, None),
        Location::S3 { bucket, .. } => {
            let uploads = Arc::new(Uploads::default());
            let store = Overlapping::new(s3_client(bucket)?, Arc::clone(&uploads));
            let builder = DeltaTableBuilder::from_url(url.clone())?
                .with_storage_backend(Arc::new(store), url);
            (builder, Some(uploads))
        }
    };
    let mut table = builder.build()?;
    match table.load().await {
        Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok((table, uploads)),
        Err(e) => Err(e),
    }
}

/// The URL `deltalake` opens the table in `dir` with.
pub(super) fn table_url(dir: &Location) -> Result<url::Url> {
    let url = match dir {
        Location::Local(path) => url::Url::from_directory_path(path)
            .map_err(|()| format!("{} is not an absolute path", path.display())),
        Location::S3 { .. } => {
            register();
            url::Url::parse(&format!("{dir}/")).map_err(|e| e.to_string())
        }
    };
    url.map_err(|reason| Error::Storage {
        action: "opening",
        location: dir.to_string(),
        source: reason.into(),
    })
}

/// Makes `deltalake` open `s3://` and `s3a://` tables with the storage layer's clients;
/// idempotent.
fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = url::Url::parse(scheme) {
                object_store_factories().insert(url.clone(), Arc::new(Clients));
                logstore_factories().insert(url, Arc::new(Clients));
            }
        }
    });
}

struct Clients;

impl ObjectStoreFactory for Clients {
    fn parse_url_opts(
        &self,
        url: &url::Url,
        _config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Key)> {
        let bucket = url
            .host_str()
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(url.to_string()))?;
        let store = s3_client(bucket)?;
        let path = Key::from_url_path(url.path())?;
        Ok((store, path))
    }
}

impl LogStoreFactory for Clients {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &url::Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
