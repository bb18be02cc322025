//! S3 clients: one per bucket per process, configured from the standard `AWS_*` environment
//! variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, web identity, container credentials or instance
//! metadata: what `object_store`'s `AmazonS3Builder::from_env` reads). The Delta tables use the
//! same clients (`table::stores`). `object_store`'s S3 client is already compiled for
//! `deltalake`'s kernel, so it costs no build time; the `deltalake` crate's own `s3` feature
//! would add the AWS SDK (42 crates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

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
