# Build environment shared by cargo, the evcxr kernel and the tests. Source it, don't run it.
#
# The notebook kernel (evcxr) compiles with RUSTFLAGS=-Cprefer-dynamic, `--target <host>` and the
# target directory `$EVCXR_TMPDIR/target`. Cargo builds run with exactly the same settings here, so
# Polars, deltalake and the rest are compiled once and reused by `cargo test`, the generator and
# every kernel start. The cache lives outside the clone so fresh clones on one machine reuse it.
AQUABILL_CACHE="${AQUABILL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aquabill}"
export AQUABILL_CACHE
export EVCXR_TMPDIR="$AQUABILL_CACHE/evcxr"
export CARGO_TARGET_DIR="$EVCXR_TMPDIR/target"
export CARGO_BUILD_BUILD_DIR="$CARGO_TARGET_DIR"
export RUSTFLAGS='-Cprefer-dynamic'
CARGO_BUILD_TARGET="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_BUILD_TARGET
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$EVCXR_TMPDIR"
# Notebook cells link the Rust standard library dynamically (-Cprefer-dynamic); the kernel loads
# them from the target folder, where their relative rpath to the toolchain does not resolve.
export LD_LIBRARY_PATH="$(rustc --print sysroot)/lib/rustlib/$CARGO_BUILD_TARGET/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The notebook's facade crate loads the pipeline library's shared object from the target folder.
export LD_LIBRARY_PATH="$CARGO_TARGET_DIR/$CARGO_BUILD_TARGET/debug:$LD_LIBRARY_PATH"
