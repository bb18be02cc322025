//! Fault injection for the reliability tests, armed by environment variables (unset, the
//! default, it does nothing). `AQUABILL_CRASH_AT=<k>` aborts the process right after its k-th
//! durable step (a table created, a table's data files written, a Delta commit, a plan or
//! checkpoint written), as abruptly as a killed process: no destructors, no cleanup.
//! `AQUABILL_STALL_AT=<k>:<ms>` sleeps `ms` milliseconds after the k-th durable step instead,
//! so a test can start a second run while the first one holds the run lock. Steps are counted
//! per process, in one order ([`armed`]); the tests crash at every k in turn and check that the
//! next run finishes the batch exactly as a run that never crashed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms the crash.
pub const CRASH_AT: &str = "AQUABILL_CRASH_AT";
/// The environment variable that arms the stall.
pub const STALL_AT: &str = "AQUABILL_STALL_AT";

static DURABLE_STEPS: AtomicU64 = AtomicU64::new(0);

/// Whether a crash or a stall is armed. Then work that runs beside other work runs one task
/// after the other (`run::cores::both`), so that the k-th durable step is the same step in
/// every run and crashing at every k in turn reaches every step.
pub fn armed() -> bool {
    std::env::var_os(CRASH_AT).is_some() || std::env::var_os(STALL_AT).is_some()
}

/// Marks a durable step done; aborts (or stalls) the process if it is the one armed.
pub fn durable(step: &str) {
    let crash = std::env::var(CRASH_AT).ok();
    let stall = std::env::var(STALL_AT).ok();
    if crash.is_none() && stall.is_none() {
        return;
    }
    let n = DURABLE_STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if crash.and_then(|v| v.trim().parse::<u64>().ok()) == Some(n) {
        eprintln!("aquabill: crash injected after durable step {n}: {step}");
        std::process::abort();
    }
    let stall = stall.and_then(|v| {
        let (k, ms) = v.trim().split_once(':')?;
        Some((k.parse::<u64>().ok()?, ms.parse::<u64>().ok()?))
    });
    if let Some((k, ms)) = stall.filter(|(k, _)| *k == n) {
        eprintln!("aquabill: stalling {ms} ms after durable step {k}: {step}");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
