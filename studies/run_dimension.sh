#!/usr/bin/env bash
# Intrinsic dimension of each variant's training images, on the channels its networks read (docs/results.md §4).
#   bash studies/run_dimension.sh            # writes runs/dimension/pilot-<variant>-<channels>.json
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A CH=([default]=top [fss]=net [fse]=both [fssh]=net)
for v in default fss fse fssh; do
  [ -f data/variants/pilot-$v/manifest.json ] || continue
  for ch in $(printf "%s\n" ${CH[$v]} top | sort -u); do
    out=runs/dimension/pilot-$v-$ch.json
    mkdir -p runs/dimension
    if [ ! -s "$out" ]; then
      .venv/bin/moirescale dimension data/variants/pilot-$v --channels $ch --n 2000 --json > "$out.part"
      mv "$out.part" "$out"
    fi
    echo "$v $ch: $(cat $out)"
  done
done
