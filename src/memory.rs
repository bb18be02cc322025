//! The process's memory under glibc's allocator: how many arenas it keeps, and giving what a
//! batch freed back to the system before the next batch.
//!
//! glibc gives each thread that allocates an arena of its own, up to 8 per core, and keeps what
//! is freed in the arena it came from: memory one thread freed is not reused by the next
//! thread, and a run starts many (Polars' and tokio's workers, the writers, the alert step's
//! and the dedup step's threads). [`limit_arenas`] allows one arena per core. Measured on an
//! hourly run at 100,000 meters on 2 cores (peak resident, median of 4): 512 and 499 MB with
//! glibc's default, 337 and 364 MB with 2 arenas, in the same wall time.
//!
//! Without [`release_freed`] each batch of a backlog starts from a higher resident floor than
//! the one before, and its peak with it (measured over a week's backlog at 100 k meters: 0.88
//! GB resident after the first batch, 1.53 GB after the twelfth, for the same work). A catch-up
//! releases once more after its last batch: in the notebook the views run next in the same
//! process (measured on a 6-hour backlog at 100 k meters: the views' cells at 0.36-0.41 GB for
//! the whole process tree instead of 0.78-0.83 GB).

/// Allows glibc's allocator one arena per core (at least 2), instead of 8 per core: threads
/// share arenas, and what one frees the next reuses. Nothing on other platforms. Called when a
/// run, a rebuild or a notebook call starts; it takes effect for arenas not yet created.
pub fn limit_arenas() {
    static LIMITED: std::sync::Once = std::sync::Once::new();
    LIMITED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
            let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
            // SAFETY: `mallopt` takes no pointer; it sets a limit under the allocator's lock.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, arenas);
            }
        }
    });
}

/// Returns the allocator's free pages to the system: glibc's `malloc_trim(0)`, which trims
/// every arena. Nothing on other platforms. Costs milliseconds; called between a backlog's
/// batches, after its last, and after the alert step's write.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer; it walks the allocator's own free lists under
    // the allocator's locks, as `malloc` and `free` do.
    unsafe {
        libc::malloc_trim(0);
    }
}
