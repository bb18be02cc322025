#!/usr/bin/env bash
# Installs what is missing, then runs the billing notebook on the bundled sample log
# (data/sample) the way the hourly schedule does, through papermill. Tables go to out/tables,
# the executed notebook to out/hourly_billing.ipynb. Running it again processes only files
# added since (none: nothing changes). Extra arguments go to papermill (`-p batch_cap 10`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
.venv/bin/aquabill-papermill notebooks/hourly_billing.ipynb out/hourly_billing.ipynb "$@"
