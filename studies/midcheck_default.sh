#!/bin/bash
# Mid-curve budget check (issue 25, tenth session): FCN 3 x 512, theta, default variant, N_D 14 336 with 2x the
# step budget (the sweep's convergence-check options), realizations 0-2 (paired with the curve's r0-2).
# Resumable: the same command continues from its saved state.
cd /work/main
taskset -c 0 .venv/bin/moirescale train --data data/paper --model fcn --n-layers 3 --width 512 --target theta \
  --n-train 14336 --realizations 3 --schedule adjustable --schedule-opt min_steps=4000 --schedule-opt min_epochs=40 \
  --lr 1e-3 --batch-size 128 --channels top --seed 0 --own-data --out runs/paper-default-midcheck --no-progress
