"""Tools around the aquabill billing notebook: run it (test harness, papermill) on the evcxr
Rust kernel, with the build environment the kernel shares with cargo."""
