#!/usr/bin/env bash
# Installs what is missing, then runs every test: formatting, the Rust unit tests of the library
# and the generator, and the pytest suite (which runs the notebook through the evcxr kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
# The library and the generator are tested one at a time so that the library's dependencies
# keep exactly the features the notebook kernel compiles them with (and are shared with it).
cargo test -p aquabill
cargo test -p aquabill-gen
# The facade's tests link the library's shared object, which `cargo test` does not build.
cargo build -p aquabill --lib
cargo test -p aquabill-notebook
.venv/bin/python -m pytest "$@"
