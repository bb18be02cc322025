#!/usr/bin/env bash
# Installs what is missing (and builds: scripts/setup.sh), then runs every test: formatting,
# lints (clippy, ruff), the Rust unit tests of the library, the generator and the notebook
# facade, and the pytest suite (which runs the notebook through the evcxr kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
.venv/bin/ruff check tests tools bench
# One package at a time, so that the library's dependencies keep exactly the features the
# notebook's library build compiles them with (and are shared with it).
cargo test -p aquabill
cargo test -p aquabill-gen
cargo test -p aquabill-notebook
.venv/bin/python -m pytest "$@"
