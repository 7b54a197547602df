#!/usr/bin/env bash
# The 48 px variant study of issue 10 (docs/results.md §5): for each variant, its store (if missing), the sweep
# of configs/study48/<variant>-sweep.yaml into runs/study48-<variant>, its report, and the intrinsic dimension
# of its training images on the channels its networks read. Resumable: rerun it; finished runs are kept
# (--force: the study configs were reordered once, widest FCN first, after the first runs; ids do not change).
#   bash studies/run_study48.sh [variant ...]            # default: fss default fse
#   taskset -c 0 bash studies/run_study48.sh fss &       # two variants at once: pin one to each core
#   taskset -c 1 bash studies/run_study48.sh default &   # (unpinned, their threads oversubscribe: docs/sweeps.md)
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A CH=([default]=top [fss]=net [fse]=both)
for v in ${@:-fss default fse}; do
  mkdir -p runs/dimension
  out=runs/dimension/study48-$v-${CH[$v]}.json
  .venv/bin/moirescale generate --config configs/study48/$v.yaml --out data/study48/$v --no-progress
  if [ ! -s "$out" ]; then
    .venv/bin/moirescale dimension data/study48/$v --channels ${CH[$v]} --n 2000 --json > "$out.part"
    mv "$out.part" "$out"
  fi
  echo "$v d: $(cat "$out")"
  .venv/bin/moirescale sweep configs/study48/$v-sweep.yaml --out runs/study48-$v --workers 1 --no-progress --force
  .venv/bin/moirescale report runs/study48-$v || true
  echo "study48 $v done $(date +%T)"
done
