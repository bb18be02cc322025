#!/usr/bin/env bash
# Regenerates docs/hourly_billing.example.ipynb: an ordinary hourly run, executed and kept with
# its outputs. A generated 30-meter log of March 24 to April 9, 2026 is processed in one run,
# then the next ingestion hour arrives and the example is that second run (late readings,
# March closed, April to date). Log and tables live under $EXAMPLE_ROOT (default
# /tmp/aquabill-example), so the outputs show those paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
root="${EXAMPLE_ROOT:-/tmp/aquabill-example}"
rm -rf "$root"
gen="$(.venv/bin/python -c 'from aquabill_tools.env import built; print(built("aquabill-gen"))')"
args=(--output "$root/usage-log" --meters 30 --seed 4 --duplicate-rate 0.02 --offline-share 0.1 --leak-share 0.05
      --malformed-rate 0.002 --files-per-hour 2)
"$gen" "${args[@]}" --start-hour 2026-03-24T00 --end-hour 2026-04-09T00 >/dev/null
params=(-p input_root "$root/usage-log" -p output_root "$root/tables")
.venv/bin/aquabill-papermill notebooks/hourly_billing.ipynb "$root/first-run.ipynb" \
    --no-progress-bar "${params[@]}" 2>/dev/null
"$gen" "${args[@]}" --start-hour 2026-04-09T00 --end-hour 2026-04-09T01 >/dev/null
.venv/bin/aquabill-papermill notebooks/hourly_billing.ipynb docs/hourly_billing.example.ipynb \
    --no-progress-bar "${params[@]}" 2>/dev/null
echo "wrote docs/hourly_billing.example.ipynb"
