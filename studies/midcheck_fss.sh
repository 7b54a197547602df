#!/bin/bash
# Mid-curve budget check (issue 25, tenth session): FCN 3 x 512, theta, nuisance-free variant (net), N_D 7168
# (where the curve is flattest, budget at its 2000-step floor) with 2x the step budget (the sweep's
# convergence-check options), realizations 0-2 (paired with the curve's r0-2). Resumable: rerun the same command.
cd /work/main
taskset -c 0 .venv/bin/moirescale train --data data/paper-fss --model fcn --n-layers 3 --width 512 --target theta \
  --n-train 7168 --realizations 3 --schedule adjustable --schedule-opt min_steps=4000 --schedule-opt min_epochs=40 \
  --lr 1e-3 --batch-size 128 --channels net --seed 0 --own-data --out runs/paper-fss-midcheck --no-progress
