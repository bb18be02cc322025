//! Giving the memory a batch freed back to the system before the next batch. glibc's allocator
//! keeps freed memory in its arenas (one per thread that allocated: Polars' and tokio's
//! workers), fragmented, so without this each batch of a backlog starts from a higher resident
//! floor than the one before, and its peak with it (measured over a week's backlog at 100 k
//! meters: 0.88 GB resident after the first batch, 1.53 GB after the twelfth, for the same
//! work).

/// Returns the allocator's free pages to the system: glibc's `malloc_trim(0)`, which trims
/// every arena. Nothing on other platforms. Costs milliseconds; called between batches.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer; it walks the allocator's own free lists under
    // the allocator's locks, as `malloc` and `free` do.
    unsafe {
        libc::malloc_trim(0);
    }
}
