#!/usr/bin/env bash
# Installs whatever is missing to build the pipeline and run its notebook: a fast linker (mold,
# optional), the evcxr Jupyter kernel, and the pinned Python tools (in .venv, from uv.lock).
# Idempotent: a second call finds everything in place and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

EVCXR_VERSION=0.22.0

if ! command -v mold >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo '== installing mold (faster linking of notebook cells)'
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mold; } >/dev/null 2>&1 \
        || echo 'mold not installed; linking uses the system linker'
fi

if ! cargo install --list | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; then
    echo "== installing evcxr_jupyter $EVCXR_VERSION (about 5 minutes on 2 cores)"
    cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked --quiet
fi
kernels="${JUPYTER_DATA_DIR:-$HOME/.local/share/jupyter}/kernels/rust/kernel.json"
if [ ! -f "$kernels" ]; then
    echo '== registering the Rust kernel with Jupyter'
    evcxr_jupyter --install >/dev/null
fi

if [ ! -x "$AQUABILL_CACHE/tools/bin/uv" ]; then
    echo '== installing uv (Python package manager)'
    python3 -m venv "$AQUABILL_CACHE/tools"
    "$AQUABILL_CACHE/tools/bin/pip" install --quiet 'uv==0.13.9'
fi
"$AQUABILL_CACHE/tools/bin/uv" sync --frozen --quiet
