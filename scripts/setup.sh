#!/usr/bin/env bash
# Installs whatever is missing to build the pipeline and run its notebook, then builds it:
#   1. a fast linker for notebook cells (mold, optional, when apt-get can install it);
#   2. the evcxr Jupyter kernel, built with plain flags (it must start in any environment);
#   3. the Jupyter kernel spec `aquabill` ("Rust (aquabill)"), which carries the project's build
#      environment itself (scripts/kernel/launch), so any Jupyter, VS Code or papermill starts it;
#   4. the pinned Python tools (uv, then .venv from uv.lock; with --lab also JupyterLab);
#   5. the pipeline library, its notebook facade, the generator and the single-run tool, with
#      cargo's progress on screen: on a fresh machine this compiles Polars and deltalake once
#      (about 25 minutes on 2 cores) into the shared target folder, before any kernel starts.
# Idempotent: a second call finds everything in place and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
groups=()
[ "${1:-}" = --lab ] && groups=(--group lab)

EVCXR_VERSION=0.22.0
UV_VERSION=0.13.9
step() { printf '== %s\n' "$*"; }

if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    step 'installing mold (faster linking of notebook cells)'
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mold; } >/dev/null 2>&1 \
        || echo 'mold not installed; notebook cells link with the system linker'
fi

# The kernel binary must run without any of the project's variables: a binary built with, say,
# -Cprefer-dynamic needs the toolchain's libstd at run time and dies in a plain Jupyter. So it is
# built in a clean environment, and rebuilt when the installed one does not start in one.
evcxr="$HOME/.cargo/bin/evcxr_jupyter"
if ! cargo install --list | grep -qx "evcxr_jupyter v$EVCXR_VERSION:" \
        || ! env -i "$evcxr" --help >/dev/null 2>&1; then
    step "installing evcxr_jupyter $EVCXR_VERSION (about 8 minutes on 2 cores)"
    env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_BUILD_TARGET \
        -u CARGO_TARGET_DIR -u CARGO_BUILD_BUILD_DIR -u LD_LIBRARY_PATH \
        cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --force
fi

# The kernel spec: a launcher and the environment file it sources, copied (not linked) so that
# the spec keeps working when this clone moves or is deleted; AQUABILL_CACHE is fixed to the
# cache this set-up built into, unless the kernel's own environment sets it.
spec="${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/kernels/aquabill"
mkdir -p "$spec"
{
    echo "# Written by scripts/setup.sh: the build cache this kernel uses unless AQUABILL_CACHE is set."
    printf ': "${AQUABILL_CACHE:=%s}"\n' "$AQUABILL_CACHE"
    cat scripts/env.sh
} >"$spec/env.sh.new"
cp scripts/kernel/launch "$spec/launch.new"
cat >"$spec/kernel.json.new" <<EOF
{
  "argv": ["$spec/launch", "--control_file", "{connection_file}"],
  "display_name": "Rust (aquabill)",
  "language": "rust",
  "interrupt_mode": "message",
  "metadata": {"debugger": false}
}
EOF
changed=0
for f in env.sh launch kernel.json; do
    if cmp -s "$spec/$f.new" "$spec/$f"; then
        rm "$spec/$f.new"
    else
        mv "$spec/$f.new" "$spec/$f"
        changed=1
    fi
done
chmod +x "$spec/launch"
[ "$changed" = 1 ] && step "registered the Jupyter kernel \"Rust (aquabill)\" in $spec"

if [ ! -x "$AQUABILL_CACHE/tools/bin/uv" ]; then
    step 'installing uv (Python package manager)'
    python3 -m venv "$AQUABILL_CACHE/tools"
    "$AQUABILL_CACHE/tools/bin/pip" install --quiet "uv==$UV_VERSION"
fi
# --inexact: keep what an earlier `--lab` installed. --compile-bytecode: Python reads its modules
# precompiled even where PYTHONDONTWRITEBYTECODE is set, which otherwise adds 1.5 s to the start
# of every scheduled run (papermill's imports).
"$AQUABILL_CACHE/tools/bin/uv" sync --frozen --inexact --quiet --compile-bytecode "${groups[@]}"

# One package per cargo call: packages built together would unify their dependencies' features
# and compile them twice (see scripts/test.sh).
step "building the pipeline library into $CARGO_TARGET_DIR (the first time about 25 minutes on 2 cores)"
cargo build -p aquabill --lib --examples
cargo build -p aquabill-gen
