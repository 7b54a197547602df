#!/bin/bash
# Budget ladder (issue 25, eleventh session): FCN 3 x 512, theta, default variant, N_D 14 336, realizations 0-2 on
# the curve's own subsets, at 4x and 8x the curve's step budget (80 and 160 epochs: 8960 and 17 920 steps; the
# curve ran 20 epochs, the mid-curve check 40). Where does the MSE stop falling with more steps? That converged
# value, beside the largest N_D's, gives alpha_D over a long baseline instead of the top two points' local slope.
# Into runs/paper-default-midcheck, so studies/paper_config_summary.py pairs each run with the curve's.
# Resumable: the same command skips a finished rung (its marker file) and continues the one in flight from its
# saved state (`train` itself would retrain a finished point and append its rows twice).
cd /work/main
for f in 4 8; do
  done_marker=runs/paper-default-midcheck/ladder-${f}x.done
  [ -e "$done_marker" ] && continue
  taskset -c 0 .venv/bin/moirescale train --data data/paper --model fcn --n-layers 3 --width 512 --target theta \
    --n-train 14336 --realizations 3 --schedule adjustable --schedule-opt min_steps=$((2000 * f)) \
    --schedule-opt min_epochs=$((20 * f)) --lr 1e-3 --batch-size 128 --channels top --seed 0 --own-data \
    --out runs/paper-default-midcheck --no-progress && touch "$done_marker"
done
