//! Where a step's time and memory go, for measurements: with `AQUABILL_TRACE=1` in the
//! environment each [`phase`] prints its wall time and the process's memory to stderr
//! (`trace: dedup/classify 412 ms, rss 1.21 GB, peak 3.40 GB`); unset, the default, nothing is
//! printed and nothing is measured beyond one `Instant`.

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
        let memory = std::fs::read_to_string("/proc/self/status")
            .map(|status| memory(&status))
            .unwrap_or_default();
        eprintln!("trace: {what} {} ms{memory}", (now - since).as_millis());
    }
    now
}

/// `, rss X GB, peak Y GB` from the text of `/proc/self/status` (resident now, and the most
/// resident since the process started); empty where the fields are missing.
fn memory(status: &str) -> String {
    let gigabytes = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb as f64 / 1_048_576.0)
    };
    match (gigabytes("VmRSS:"), gigabytes("VmHWM:")) {
        (Some(now), Some(peak)) => format!(", rss {now:.2} GB, peak {peak:.2} GB"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_the_resident_and_peak_sizes() {
        let status = "Name:\taquabill\nVmHWM:\t 3565158 kB\nVmRSS:\t 1268776 kB\nThreads:\t4\n";
        assert_eq!(memory(status), ", rss 1.21 GB, peak 3.40 GB");
        assert_eq!(memory("Name:\taquabill\n"), "");
    }
}
