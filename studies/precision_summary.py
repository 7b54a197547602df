"""The paired fp32/bf16 study (issue 27): docs/results/precision.csv and the table of docs/benchmarks.md.

    .venv/bin/python studies/precision_summary.py runs/study48-fss-precision [--csv OUT.csv]

One row per (width, target, N_D): the geometric-mean test MSE of each precision over the realizations both
finished, the paired ratio bf16 / fp32 (geometric mean of the per-realization ratios, with a 95 % t-interval
over realizations), and per curve alpha_D of each precision with its bootstrap interval. The decision rule of
the config (written before the run): bf16 becomes the default only if every geometric-mean MSE moves by < 5 %
and no alpha_D by more than its interval.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from scipy import stats as sps

from moirescale.analysis.fits import fit_power_law
from moirescale.fsio import atomic_write
from moirescale.stats import geomean, load_results

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["width", "target", "n_train", "n_pairs", "gm_mse_fp32", "gm_mse_bf16", "ratio_bf16_fp32",
           "ratio_lo95", "ratio_hi95", "alpha_fp32", "alpha_fp32_lo", "alpha_fp32_hi", "alpha_bf16",
           "alpha_bf16_lo", "alpha_bf16_hi"]


def paired(df, width: int, target: str):
    """Per N_D: (n_train, fp32 MSEs, bf16 MSEs) of the realizations that finished in both precisions."""
    g = df[(df["width"] == width) & (df["target"] == target) & (df["status"] == "ok")]
    for n, h in g.groupby("n_train"):
        a = h[h["precision"].fillna("fp32") == "fp32"].set_index("realization")["test_mse"]
        b = h[h["precision"] == "bf16"].set_index("realization")["test_mse"]
        both = a.index.intersection(b.index)
        if len(both):
            yield int(n), a[both].to_numpy(float), b[both].to_numpy(float)


def curve_rows(df, width: int, target: str) -> list[dict]:
    pts = list(paired(df, width, target))
    if not pts:
        return []
    fits = {}
    for j, prec in ((1, "fp32"), (2, "bf16")):
        if len(pts) >= 2:
            f = fit_power_law(np.array([p[0] for p in pts], float), [np.log(p[j]) for p in pts], n_boot=2000)
            fits[prec] = (f.alpha, *f.interval(1))
        else:
            fits[prec] = (np.nan, np.nan, np.nan)
    out = []
    for n, a, b in pts:
        lr = np.log(b / a)
        m = float(lr.mean())
        h = np.nan
        if lr.size > 1:
            h = float(sps.t.ppf(0.975, lr.size - 1) * lr.std(ddof=1) / np.sqrt(lr.size))
        out.append({
            "width": width, "target": target, "n_train": n, "n_pairs": a.size,
            "gm_mse_fp32": geomean(a), "gm_mse_bf16": geomean(b), "ratio_bf16_fp32": float(np.exp(m)),
            "ratio_lo95": float(np.exp(m - h)), "ratio_hi95": float(np.exp(m + h)),
            "alpha_fp32": fits["fp32"][0], "alpha_fp32_lo": fits["fp32"][1], "alpha_fp32_hi": fits["fp32"][2],
            "alpha_bf16": fits["bf16"][0], "alpha_bf16_lo": fits["bf16"][1], "alpha_bf16_hi": fits["bf16"][2],
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rundir", type=Path)
    ap.add_argument("--csv", type=Path, default=ROOT / "docs" / "results" / "precision.csv")
    args = ap.parse_args()
    df = load_results(args.rundir)
    rows = [r for w in sorted(df["width"].dropna().unique()) for t in ("theta", "J", "D")
            for r in curve_rows(df, int(w), t)]
    buf = io.StringIO()
    wr = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.csv, buf.getvalue())
    print("| width | target | N_D | pairs | MSE fp32 | MSE bf16 | bf16/fp32 [95 %] | α_D fp32 | α_D bf16 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']} | {r['target']} | {r['n_train']} | {r['n_pairs']} | {r['gm_mse_fp32']:.3e} | "
              f"{r['gm_mse_bf16']:.3e} | {r['ratio_bf16_fp32']:.3f} [{r['ratio_lo95']:.3f}, "
              f"{r['ratio_hi95']:.3f}] | {r['alpha_fp32']:.3f} [{r['alpha_fp32_lo']:.3f}, "
              f"{r['alpha_fp32_hi']:.3f}] | {r['alpha_bf16']:.3f} [{r['alpha_bf16_lo']:.3f}, "
              f"{r['alpha_bf16_hi']:.3f}] |")
    worst = max((abs(r["ratio_bf16_fp32"] - 1) for r in rows), default=float("nan"))
    alpha_ok = all(r["alpha_fp32_lo"] <= r["alpha_bf16"] <= r["alpha_fp32_hi"] for r in rows
                   if np.isfinite(r["alpha_bf16"]))
    print(f"\nlargest |geometric-mean change|: {worst:.1%}; every bf16 alpha_D inside the fp32 interval: "
          f"{alpha_ok}; rule met: {worst < 0.05 and alpha_ok}  -> {args.csv}")


if __name__ == "__main__":
    main()
