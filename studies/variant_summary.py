"""Markdown table of a variant study (docs/results.md §4 pilot, §5 48 px study) from its runs' fits.

    .venv/bin/python studies/variant_summary.py pilot      # after `moirescale fit runs/pilot-<variant>`
    .venv/bin/python studies/variant_summary.py study48    # after `moirescale fit runs/study48-<variant>`

One row per (variant, grid, model, target): alpha_D with its 95 % interval, the geometric-mean test MSE at the
smallest and largest N_D, and the convergence check (MSE with the larger budget / MSE on the curve; < 0.9 is
flagged "not converged").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from moirescale.analysis.convergence import curve_check
from moirescale.models import model_label
from moirescale.rundir import fits_path, read_fits
from moirescale.stats import geomean, load_results

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"default": "random, seeded, top", "default-resnet": "random, seeded, top",
            "fss": "fixed, shared, net", "fse": "fixed, seeded, both",
            "fssh": "fixed, shared, net, shift",
            "fss-fcn1024": "fixed, shared, net", "default-fcn1024-check": "random, seeded, top",
            "default-fcn1024": "random, seeded, top", "fse-fcn1024": "fixed, seeded, both",
            "default-fcn64-wd": "random, seeded, top", "fss-fcn64-steps": "fixed, shared, net"}
TARGETS = ("theta", "J", "D")
# The pilot was trained before labels were scaled by each dataset's own ranges: its theta MSEs are in units of
# the global theta range [0.5, 2] deg. Today's units use the store's [1.5, 2]: (1.5 / 0.5)^2 = 9x larger.
# J and D ranges are the global ones, so they are unchanged. (alpha is a slope: the factor does not move it.)
UNITS_TODAY = {"pilot": {"theta": 9.0, "J": 1.0, "D": 1.0}, "study48": {"theta": 1.0, "J": 1.0, "D": 1.0}}


def model_name(f: dict) -> str:
    return model_label(f["arch"], f.get("n_layers"), f.get("width"))


def rows(study: str):
    """(variant, fit, geometric-mean MSE by N_D, convergence check) for each data-scaling fit of a study."""
    for v in VARIANTS:
        run = ROOT / "runs" / f"{study}-{v}"
        if not fits_path(run).exists():
            continue
        doc = read_fits(run)
        df = load_results(run)
        df = df[df["status"] == "ok"]
        for f in doc["fits"]:
            if f["variable"] != "n_train" or f["target"] not in TARGETS:
                continue
            g = df[(df["grid"] == f["grid"]) & (df["target"] == f["target"])]
            if f.get("width") is not None:
                g = g[g["width"] == f["width"]]
            k = UNITS_TODAY[study][f["target"]]
            gm = k * g.groupby("n_train")["test_mse"].agg(geomean)
            yield v, f, gm, curve_check(doc.get("convergence", []), f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", choices=sorted(UNITS_TODAY))
    study = ap.parse_args().study
    out = list(rows(study))
    print("| variant | grid | model | target | α_D [95 %] | points | MSE at the smallest N_D "
          "| MSE at the largest N_D | budget check ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v, f, gm, c in out:
        flag = " (not converged)" if c and not c["converged"] else ""
        ratio = f"{c['ratio']:.2f}{flag}" if c else "–"
        lo, hi = (f"{gm.iloc[i]:.2e} ({int(gm.index[i])})" if len(gm) else "–" for i in (0, -1))
        alpha = f"{f['alpha']:.2f} [{f['alpha_lo']:.2f}, {f['alpha_hi']:.2f}]"
        print(f"| {v} ({VARIANTS[v]}) | {f['grid']} | {model_name(f)} | {f['target']} | {alpha} "
              f"| {f['n_points']} | {lo} | {hi} | {ratio} |")


if __name__ == "__main__":
    main()
