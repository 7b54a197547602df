"""The paper-configuration study (issue 25) as two CSVs anyone can check without the runs.

    .venv/bin/python studies/paper_config_summary.py [RUNDIR ...]  # default: runs/paper-{default,fss}

docs/results/paper-config.csv: one row per curve point (variant, arch, width, n_params, target, n_train, N_r,
geometric-mean test MSE with its 95 % interval, mean steps run, the curve's budget-check ratio at its largest
N_D). docs/results/paper-config-fits.csv: one row per curve (alpha_D with its 95 % bootstrap interval over
realizations resampled jointly across the curve, points, N_D range, the budget check and whether it passed).
Everything is computed from the results tables (no fits.json needed), so a partial run gives a partial table.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from moirescale.analysis.convergence import convergence_table, curve_check, split_checks
from moirescale.analysis.fits import fit_power_law
from moirescale.fsio import atomic_write
from moirescale.rundir import results_path
from moirescale.stats import load_results, realization_labels

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
POINT_COLUMNS = ["variant", "arch", "width", "n_params", "target", "n_train", "n_r", "gm_test_mse",
                 "gm_lo95", "gm_hi95", "steps_mean", "precision", "budget_ratio_at_largest"]
FIT_COLUMNS = ["variant", "arch", "width", "n_params", "target", "alpha_d", "alpha_lo95", "alpha_hi95",
               "points", "n_train_min", "n_train_max", "budget_check_n_train", "budget_ratio", "converged"]
CURVE_KEYS = ["grid", "arch", "n_layers", "width", "target"]


def _gm_interval(mse: np.ndarray) -> tuple[float, float, float]:
    """Geometric mean and its 95 % t-interval (on the logs) of one point's realizations."""
    lx = np.log(mse)
    m = float(lx.mean())
    if lx.size < 2:
        return float(np.exp(m)), float("nan"), float("nan")
    h = float(sps.t.ppf(0.975, lx.size - 1) * lx.std(ddof=1) / np.sqrt(lx.size))
    return float(np.exp(m)), float(np.exp(m - h)), float(np.exp(m + h))


def _none(v):
    return None if pd.isna(v) else v


def summarize(rundir: Path) -> tuple[list[dict], list[dict]]:
    variant = rundir.name.removeprefix("paper-")
    df = load_results(rundir)
    ok = df[df["status"] == "ok"]
    checks = convergence_table(ok)
    curves, _ = split_checks(ok)
    points, fits = [], []
    for key, g in curves.groupby(CURVE_KEYS, dropna=False, sort=True):
        meta = {k: _none(v) for k, v in zip(CURVE_KEYS, key, strict=True)}
        check = curve_check(checks, meta)
        n_params = _none(g["n_params"].iloc[0])
        common = {"variant": variant, "arch": meta["arch"], "width": meta["width"], "n_params": n_params,
                  "target": meta["target"]}
        ns, logs, labels = [], [], []
        for n, h in g.groupby("n_train", sort=True):
            mse = h["test_mse"].to_numpy(float)
            gm, lo, hi = _gm_interval(mse)
            points.append({**common, "n_train": int(n), "n_r": int(mse.size), "gm_test_mse": gm,
                           "gm_lo95": lo, "gm_hi95": hi, "steps_mean": float(h["steps"].mean()),
                           "precision": str(h["precision"].fillna("fp32").iloc[0]),
                           "budget_ratio_at_largest": check["ratio"] if check else None})
            ns.append(float(n))
            logs.append(np.log(mse))
            labels.append(realization_labels(h))
        if len(ns) >= 3:  # what fit_power_law needs
            f = fit_power_law(np.array(ns), logs, labels=labels, n_boot=2000)
            lo, hi = f.interval(1)
            fits.append({**common, "alpha_d": f.alpha, "alpha_lo95": lo, "alpha_hi95": hi, "points": len(ns),
                         "n_train_min": int(min(ns)), "n_train_max": int(max(ns)),
                         "budget_check_n_train": check["n_train"] if check else None,
                         "budget_ratio": check["ratio"] if check else None,
                         "converged": check["converged"] if check else None})
    return points, fits


def _cell(v) -> object:
    return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, columns, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: _cell(v) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rundirs", nargs="*", type=Path,
                    default=[ROOT / "runs" / "paper-default", ROOT / "runs" / "paper-fss"])
    args = ap.parse_args()
    points, fits = [], []
    for rd in args.rundirs:
        if results_path(rd).exists():
            p, f = summarize(rd)
            points += p
            fits += f
    write_csv(OUT / "paper-config.csv", POINT_COLUMNS, points)
    write_csv(OUT / "paper-config-fits.csv", FIT_COLUMNS, fits)
    print("| variant | model | target | α_D [95 %] | points | N_D | budget check | converged |")
    print("|---|---|---|---|---|---|---|---|")
    for f in fits:
        model = "features" if f["arch"] == "features" else f"{f['arch']} 3 × {int(f['width'])}"
        ratio = "—"
        if f["budget_ratio"] is not None:
            ratio = f"{f['budget_ratio']:.2f} at {f['budget_check_n_train']}"
        print(f"| {f['variant']} | {model} | {f['target']} | {f['alpha_d']:.3f} [{f['alpha_lo95']:.3f}, "
              f"{f['alpha_hi95']:.3f}] | {f['points']} | {f['n_train_min']}–{f['n_train_max']} | {ratio} | "
              f"{f['converged']} |")
    print(f"{len(points)} points, {len(fits)} curves -> {OUT}/paper-config*.csv")


if __name__ == "__main__":
    main()
