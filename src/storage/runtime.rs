//! The one async runtime: `deltalake` and `object_store` are async, the library's API is not.
//!
//! One multi-threaded runtime per process, built on first use: [`block_on`] runs a future to
//! completion on the calling thread (any thread: the writer threads encode files in parallel),
//! while the runtime's worker drives timers and I/O.
//!
//! One panic of those threads is known and harmless, and is not printed: when a data file's
//! upload fails (a full disk, a refused PUT), `deltalake` aborts the `object_store` writer
//! after its failed shutdown, which panics with "Already shut down" inside a runtime task;
//! tokio catches it and the upload's own error is what the write returns. Printed, it would
//! bury that error under two backtraces. Every other panic goes to the previous hook.

use std::sync::OnceLock;

use crate::error::{Error, Result};

const IO_THREAD: &str = "aquabill-io";

static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();

/// Runs `future` to completion on the calling thread.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = RUNTIME.get_or_init(|| {
        quiet_aborted_uploads();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(IO_THREAD)
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

/// Installs a panic hook that drops `object_store`'s "Already shut down" panic on the
/// runtime's threads (see the module's doc) and passes every other panic to the previous hook.
fn quiet_aborted_uploads() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let aborted_upload = message == Some("Already shut down")
            && std::thread::current().name() == Some(IO_THREAD)
            && info
                .location()
                .is_some_and(|at| at.file().contains("object_store"));
        if !aborted_upload {
            previous(info);
        }
    }));
}
