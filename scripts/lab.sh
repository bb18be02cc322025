#!/usr/bin/env bash
# Installs what is missing (JupyterLab included), then opens the billing notebook in JupyterLab.
# Nothing needs sourcing: the notebook's kernel, "Rust (aquabill)", carries its own environment,
# and any number of kernels (this one, the schedule, the tests) run side by side. Extra
# arguments go to `jupyter lab` (`--no-browser --port 8890`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --lab
exec .venv/bin/jupyter lab notebooks/hourly_billing.ipynb "$@"
