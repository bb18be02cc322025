#!/usr/bin/env bash
# One scheduled run of the billing notebook through papermill, as cron or a systemd timer start
# it every hour (examples in deploy/). Never two at once: if the previous run still holds the
# schedule lock, this one exits at once with status 75 (the next hour's run takes all files that
# arrived meanwhile). Each run keeps its executed notebook and its log under a dated folder:
#   $AQUABILL_RUNS/YYYY/MM/DD/<UTC time>.ipynb and .log   (default AQUABILL_RUNS: <repo>/runs)
# Arguments go to papermill, typically the deployment's paths:
#   scripts/scheduled-run.sh -p input_root /data/usage-log -p output_root /data/tables
# The exit status is papermill's: non-zero when a cell failed (the notebook shows which).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
. "$repo/scripts/env.sh"
if [ ! -x "$repo/.venv/bin/aquabill-papermill" ]; then
    echo "aquabill: run scripts/setup.sh once before scheduling runs" >&2
    exit 78
fi
runs="${AQUABILL_RUNS:-$repo/runs}"
mkdir -p "$runs"
exec 9>"$runs/.schedule.lock"
if ! flock --nonblock 9; then
    echo "aquabill: the previous run is still going; skipping this one" >&2
    exit 75
fi
stamp="$(date -u +%Y-%m-%dT%H%M%SZ)"
dir="$runs/$(date -u +%Y/%m/%d)"
mkdir -p "$dir"
status=0
"$repo/.venv/bin/aquabill-papermill" "$repo/notebooks/hourly_billing.ipynb" "$dir/$stamp.ipynb" \
    --log-output --no-progress-bar "$@" >"$dir/$stamp.log" 2>&1 || status=$?
echo "aquabill: run $stamp ended with status $status ($dir/$stamp.ipynb)" | tee -a "$dir/$stamp.log"
exit "$status"
