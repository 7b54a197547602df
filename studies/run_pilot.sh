#!/usr/bin/env bash
# The 32 px variant pilot of issue 10 (docs/results.md §4): for each variant, sweep FCN 3 x 256 over
# N_D = 224 ... 3584 for theta, J, D (5 realizations, own data each), then fit and report. Resumable: rerun it.
#   bash studies/run_pilot.sh [variant ...]      # default: default fss fse fssh
set -euo pipefail
cd "$(dirname "$0")/.."
for v in "${@:-default fss fse fssh}"; do
  for w in $v; do
    .venv/bin/moirescale generate --config configs/variants/pilot-$w.yaml --out data/variants/pilot-$w --workers 1 --no-progress
    # --force: the pilot configs gained grids (features, convergence_check) after the first runs began;
    # finished runs are kept (their ids do not change)
    .venv/bin/moirescale sweep configs/variants/pilot-$w-sweep.yaml --out runs/pilot-$w --workers 1 --no-progress --force
    .venv/bin/moirescale report runs/pilot-$w || true
    echo "pilot $w done $(date +%T)"
  done
done
