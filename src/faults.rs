//! Crash injection for the reliability tests: with `AQUABILL_CRASH_AT=<k>` in its environment,
//! the process aborts right after its k-th durable step (a table created, a table's data files
//! written, a Delta commit, a plan or checkpoint written), as abruptly as a killed process: no
//! destructors, no cleanup. Unset (the default) it does nothing. `AQUABILL_CRASH_AT` counts the
//! steps of one process; the tests crash at every k in turn and check that the next run
//! finishes the batch exactly as a run that never crashed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms the crash.
pub const CRASH_AT: &str = "AQUABILL_CRASH_AT";

static DURABLE_STEPS: AtomicU64 = AtomicU64::new(0);

/// Marks a durable step done; aborts the process if it is the one `AQUABILL_CRASH_AT` names.
pub fn durable(step: &str) {
    let Some(at) = std::env::var(CRASH_AT)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return;
    };
    let n = DURABLE_STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if n == at {
        eprintln!("aquabill: crash injected after durable step {n}: {step}");
        std::process::abort();
    }
}
