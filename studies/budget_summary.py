"""The 48 px study's budget test (docs/results.md §5): does the FCN's MSE on fss follow the data or the steps?

    .venv/bin/python studies/budget_summary.py [RUN ...]  # default RUN: runs/study48-fss
    .venv/bin/python studies/budget_summary.py runs/study48-fss-fcn64-steps runs/study48-fss-fcn64-steps-check
    .venv/bin/python studies/budget_summary.py runs/study48-fse-fcn64-steps  # fse (one variant a call)

For FCN 3 x 64 on J and D, one table row per (budget rule, N_D): the optimiser steps the networks ran, the
geometric-mean test MSE over realizations and whether early stopping ended them before the budget did. Then
alpha_D of each budget rule over the whole curve and over the points where the budget grows with N_D (a fixed
number of epochs, N_D >= 7168 in `fcn64_long`), with 95 % bootstrap intervals (`fit_power_law`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from moirescale.analysis.fits import fit_power_law
from moirescale.stats import geomean, load_results, realization_labels

ROOT = Path(__file__).resolve().parents[1]
RULES = {  # grid -> how its step budget is set (configs/study48/fss-sweep.yaml)
    "fcn_narrow": "max(2000 steps, 20 epochs)",
    "fcn_narrow.budget_check": "2 x that",
    "fcn64_long": "max(4000 steps, 80 epochs)",
    "fcn64_long.budget_check": "2 x that",
    "fcn64_converged": "32 000 steps",
    "fcn64_J_128k": "128 000 steps",  # configs/study48/fss-fcn64-steps-sweep.yaml
    "fcn64_J_128k.budget_check": "2 x that",
    "fcn64_J_256k": "256 000 steps",  # fss-fcn64-steps-check-sweep.yaml, fse-fcn64-steps-sweep.yaml
    "fcn64_J_512k": "512 000 steps",
}


def main() -> None:
    runs = [Path(a) for a in sys.argv[1:]] or [ROOT / "runs" / "study48-fss"]
    df = pd.concat([load_results(run) for run in runs], ignore_index=True)
    keep = (df["status"] == "ok") & (df["arch"] == "fcn") & (df["width"] == 64) & df["grid"].isin(list(RULES))
    df = df[keep]
    print("| target | budget | N_D | steps run | budget | MSE (geo. mean) | realizations stopped early |")
    print("|---|---|---|---|---|---|---|")
    for (target, grid, n), g in df.groupby(["target", "grid", "n_train"]):
        budget = int(g["steps"].max())  # networks that ran out of steps all report the budget
        early = int((g["steps"] < budget).sum())
        gm = geomean(g["test_mse"])
        print(
            f"| {target} | {RULES[grid]} | {n} | {g['steps'].mean():.0f} | {budget} | {gm:.2e} "
            f"| {early} of {len(g)} |"
        )
    print()
    print("| target | budget | N_D range | α_D [95 %] |")
    print("|---|---|---|---|")
    for (target, grid), g in df[~df["grid"].str.endswith("budget_check")].groupby(["target", "grid"]):
        ranges = [(g["n_train"].min(), g["n_train"].max())]
        if grid == "fcn64_long":
            ranges.append((7168, g["n_train"].max()))
        for lo, hi in ranges:
            pts = g[(g["n_train"] >= lo) & (g["n_train"] <= hi)].groupby("n_train")
            if len(pts) < 3:
                continue
            ns = [float(n) for n, _ in pts]
            logs = [np.log(p["test_mse"].to_numpy()) for _, p in pts]
            labels = [realization_labels(p) for _, p in pts]
            f = fit_power_law(ns, logs, labels=labels)
            print(
                f"| {target} | {RULES[grid]} | {lo}–{hi} | {f.alpha:.2f} [{f.interval(1)[0]:.2f}, "
                f"{f.interval(1)[1]:.2f}] |"
            )


if __name__ == "__main__":
    main()
