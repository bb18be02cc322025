//! Where a step's time goes, for measurements: with `AQUABILL_TRACE=1` in the environment each
//! [`phase`] prints its wall time to stderr (`trace: dedup/classify 412 ms`); unset, the default,
//! nothing is printed and nothing is measured beyond one `Instant`.

use std::sync::OnceLock;
use std::time::Instant;

/// The environment variable that turns tracing on.
pub const TRACE: &str = "AQUABILL_TRACE";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(TRACE).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Reports the phase `what` that started at `since`, and returns now (the next phase's start).
pub fn phase(what: &str, since: Instant) -> Instant {
    let now = Instant::now();
    if enabled() {
        eprintln!("trace: {what} {} ms", (now - since).as_millis());
    }
    now
}
