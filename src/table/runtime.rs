//! The one async runtime: `deltalake` and `object_store` are async, the library's API is not.
//!
//! One multi-threaded runtime per process, built on first use: [`block_on`] runs a future to
//! completion on the calling thread (any thread: the writer threads encode files in parallel),
//! while the runtime's worker drives timers and I/O.

use std::sync::OnceLock;

use crate::error::{Error, Result};

static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();

/// Runs `future` to completion on the calling thread.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aquabill-io")
            .enable_all()
            .build()
    });
    match runtime {
        Ok(runtime) => Ok(runtime.block_on(future)),
        Err(e) => Err(Error::io(
            "starting the async runtime",
            "",
            std::io::Error::new(e.kind(), e.to_string()),
        )),
    }
}
