#!/usr/bin/env bash
# Keep what a sweep needs to resume without retraining -- its config, dataset record and results table, not its
# checkpoints -- under studies/snapshots/NAME (tracked), so that a new machine loses only the store (deterministic:
# the sweep regenerates it from its config's `generate` block) and the jobs that were in flight.
#   bash studies/snapshot_runs.sh runs/paper-default [RUNDIR ...]
# Restore on a new machine: mkdir -p runs && cp -r studies/snapshots/paper-default runs/, then the same sweep
# command; finished runs are skipped (their rows are in the table). predict/errors need checkpoints: retrain.
set -euo pipefail
cd "$(dirname "$0")/.."
for rd in "$@"; do
  dest="studies/snapshots/$(basename "$rd")"
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  cp -r "$rd/config.yaml" "$rd/dataset.json" "$rd/results.parquet" "$dest.tmp/"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  echo "$rd -> $dest ($(ls "$dest/results.parquet" | wc -l) result parts)"
done
