"""The paired fp32/bf16 study (issue 27): docs/results/precision.csv and the table of docs/benchmarks.md.

    .venv/bin/python studies/precision_summary.py runs/study48-fss-precision [--csv OUT.csv]

One row per (width, target, N_D): the geometric-mean test MSE of each precision over the realizations both
finished, the paired ratio bf16 / fp32 (geometric mean of the per-realization ratios, with a 95 % t-interval
over realizations), per curve alpha_D of each precision with its bootstrap interval (moirescale's weighted
fit), and the paired change of alpha_D (the same realizations' slopes, unweighted, bootstrap over
realizations). The decision rule of
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
           "alpha_bf16_lo", "alpha_bf16_hi", "paired_dalpha", "paired_dalpha_lo", "paired_dalpha_hi"]


def paired(df, width: int, target: str):
    """Per N_D: (n_train, fp32 MSEs, bf16 MSEs) of the realizations that finished in both precisions."""
    g = df[(df["width"] == width) & (df["target"] == target) & (df["status"] == "ok")]
    for n, h in g.groupby("n_train"):
        a = h[h["precision"].fillna("fp32") == "fp32"].set_index("realization")["test_mse"]
        b = h[h["precision"] == "bf16"].set_index("realization")["test_mse"]
        both = a.index.intersection(b.index)
        if len(both):
            yield int(n), a[both].to_numpy(float), b[both].to_numpy(float)


def paired_delta_alpha(pts: list, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """alpha_D(bf16) - alpha_D(fp32) of the same realizations, each the least-squares slope of the mean log
    MSE over N_D, with a 95 % bootstrap interval that resamples realizations (the pairing kept)."""
    x = np.log([p[0] for p in pts])
    a = np.log(np.stack([p[1] for p in pts], axis=1))  # (R, points), realizations in the same order
    b = np.log(np.stack([p[2] for p in pts], axis=1))

    def delta(i: np.ndarray) -> float:
        return float(np.polyfit(x, a[i].mean(0), 1)[0] - np.polyfit(x, b[i].mean(0), 1)[0])

    rng = np.random.default_rng(seed)
    reps = [delta(rng.integers(0, len(a), len(a))) for _ in range(n_boot)]
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return delta(np.arange(len(a))), float(lo), float(hi)


def curve_rows(df, width: int, target: str) -> list[dict]:
    pts = list(paired(df, width, target))
    if not pts:
        return []
    same = len({p[1].size for p in pts}) == 1  # the same realizations at every N_D: a paired slope exists
    d_alpha = paired_delta_alpha(pts) if same and len(pts) >= 2 else (np.nan, np.nan, np.nan)
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
            "paired_dalpha": d_alpha[0], "paired_dalpha_lo": d_alpha[1], "paired_dalpha_hi": d_alpha[2],
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
    print("| width | target | N_D | pairs | MSE fp32 | MSE bf16 | bf16/fp32 [95 %] | α_D fp32 | α_D bf16 "
          "| paired Δα_D [95 %] |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['width']} | {r['target']} | {r['n_train']} | {r['n_pairs']} | {r['gm_mse_fp32']:.3e} | "
              f"{r['gm_mse_bf16']:.3e} | {r['ratio_bf16_fp32']:.3f} [{r['ratio_lo95']:.3f}, "
              f"{r['ratio_hi95']:.3f}] | {r['alpha_fp32']:.3f} [{r['alpha_fp32_lo']:.3f}, "
              f"{r['alpha_fp32_hi']:.3f}] | {r['alpha_bf16']:.3f} [{r['alpha_bf16_lo']:.3f}, "
              f"{r['alpha_bf16_hi']:.3f}] | {r['paired_dalpha']:+.3f} [{r['paired_dalpha_lo']:+.3f}, "
              f"{r['paired_dalpha_hi']:+.3f}] |")
    worst = max((abs(r["ratio_bf16_fp32"] - 1) for r in rows), default=float("nan"))
    alpha_ok = all(r["alpha_fp32_lo"] <= r["alpha_bf16"] <= r["alpha_fp32_hi"] for r in rows
                   if np.isfinite(r["alpha_bf16"]))
    print(f"\nlargest |geometric-mean change|: {worst:.1%}; every bf16 alpha_D inside the fp32 interval: "
          f"{alpha_ok}; rule met: {worst < 0.05 and alpha_ok}  -> {args.csv}")


if __name__ == "__main__":
    main()
