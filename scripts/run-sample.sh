#!/usr/bin/env bash
# Installs what is missing, then runs the billing notebook on the bundled sample log
# (data/sample). Tables go to out/tables, the executed notebook to out/hourly_billing.ipynb.
# Running it again processes only files added since (none: nothing changes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
.venv/bin/python scripts/nbexec.py notebooks/hourly_billing.ipynb out/hourly_billing.ipynb "$@"
