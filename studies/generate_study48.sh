#!/usr/bin/env bash
# The three stores of the 48 px variant study (issue 10, docs/results.md §5), one after another on every core.
# Resumable: rerun it; a finished store is verified and left as it is.
#   bash studies/generate_study48.sh [variant ...]     # default: fss default fse
set -euo pipefail
cd "$(dirname "$0")/.."
for v in ${@:-fss default fse}; do
  .venv/bin/moirescale generate --config configs/study48/$v.yaml --out data/study48/$v --no-progress
  echo "store $v done $(date +%T)"
done
