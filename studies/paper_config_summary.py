"""The paper-configuration study (issue 25) as two CSVs anyone can check without the runs.

    .venv/bin/python studies/paper_config_summary.py [RUNDIR ...]  # default: runs/paper-{default,fss}

docs/results/paper-config.csv: one row per curve point (variant, arch, width, n_params, target, n_train, N_r,
geometric-mean test MSE with its 95 % interval, mean steps run, the curve's budget-check ratio at its largest
N_D). docs/results/paper-config-fits.csv: one row per curve (alpha_D with its 95 % bootstrap interval over
realizations resampled jointly across the curve, points, N_D range, the budget check and whether it passed,
and the geometric-mean MSE at the largest N_D beside the MSE of guessing the mean, the test labels' variance:
``variance_left`` near 1 means the curve has learnt next to nothing, whatever its slope or check say).
docs/results/paper-config-budget-pairs.csv: every budget check, run by run: the curve's run and the check's
run on the same subset (realization, data seed), their steps and test MSEs and the ratio; the sweeps' own
checks and the mid-curve checks and budget ladders run with `moirescale train` (studies/midcheck_*.sh,
studies/ladder_default.sh: runs/paper-*-midcheck); `steps_long / steps` is the budget factor.
docs/results/paper-config-runs.csv: every trained network (ok rows of the results tables, one per run and
grid), so the tables above can be recomputed without the run directories; the script merges the run
directories' rows into it (a run directory's row replaces the same run's) and computes everything from it.
Curves with no per-run rows (those finished before the fifteenth session, whose run directories were lost
with their machine) are kept from the CSVs as they stand; a recomputed point replaces the kept one of the same
curve and N_D, and a recomputed fit the kept one when it reaches a larger N_D (or as large with as many
points); it prints how many recomputed points equal the kept ones and any that differ.
Everything is computed from the results tables (no fits.json needed), so a partial run gives a partial table.
A run two grids share counts in both (`load_results(..., by_grid=True)`): the width-512 theta point at N_D
114 688 with 40 epochs is the 20-epoch curve's budget check. The 40-epoch grids of one N_D each are joined
into one two-point curve (LONGER_BUDGET) whose slope is the local alpha_D at that budget.
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
from moirescale.analysis.fits import _wls_line, fit_power_law
from moirescale.analysis.pipeline import rundir_mean_guess
from moirescale.fsio import atomic_write
from moirescale.results import BUDGET_CHECK_SUFFIX
from moirescale.rundir import results_path
from moirescale.stats import load_results, realization_labels

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
POINT_COLUMNS = ["variant", "grid", "arch", "width", "n_params", "target", "n_train", "n_r", "gm_test_mse",
                 "gm_lo95", "gm_hi95", "steps_mean", "epochs_mean", "precision", "budget_ratio_at_largest"]
FIT_COLUMNS = ["variant", "grid", "arch", "width", "n_params", "target", "alpha_d", "alpha_lo95",
               "alpha_hi95", "points", "n_train_min", "n_train_max", "budget_check_n_train", "budget_ratio",
               "converged", "mse_at_largest", "mean_guess_mse", "variance_left"]
PAIR_COLUMNS = ["variant", "arch", "width", "target", "n_train", "realization", "data_seed", "steps",
                "test_mse", "steps_long", "test_mse_long", "ratio", "source_long"]
PAIR_KEYS = ["arch", "n_layers", "width", "target", "n_train", "realization", "data_seed"]
RUN_COLUMNS = ["variant", "grid", "arch", "n_layers", "width", "n_params", "target", "n_train", "seed",
               "realization", "data_seed", "steps", "epochs", "precision", "test_mse"]
RUN_KEY = ["variant", "grid", "arch", "n_layers", "width", "target", "n_train", "seed", "realization",
           "data_seed"]
CURVE_ID = ("variant", "grid", "width", "target")
# Grids of one N_D each that make one curve at a longer budget (the fallback of issue 25's deliverable 2).
LONGER_BUDGET = {"fcn512_theta_40ep": ("fcn512_theta_40ep_57k", "fcn512_theta_40ep_115k")}
CURVE_KEYS = ["grid", "arch", "n_layers", "width", "target"]
LARGEST = 114688  # the largest N_D (224 * 2^9): a curve that reaches it is whole


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


def variant_of(rundir: Path) -> str:
    return rundir.name.removeprefix("paper-")


def run_rows(rundir: Path) -> pd.DataFrame:
    """The ok rows of a run directory (each run once per grid that declares it), in RUN_COLUMNS."""
    df = load_results(rundir, by_grid=True)
    ok = df[df["status"] == "ok"].assign(variant=variant_of(rundir))
    ok = ok.assign(precision=ok["precision"].fillna("fp32"))
    return ok[RUN_COLUMNS]


def read_runs(path: Path) -> pd.DataFrame:
    """The per-run CSV (empty if there is none yet), its floats read back exactly as written."""
    if not path.exists():
        return pd.DataFrame(columns=RUN_COLUMNS)
    return pd.read_csv(path)  # pandas >= 3 reads floats round-trip by default (the test checks it)


def merge_runs(old: pd.DataFrame, new: list[pd.DataFrame]) -> pd.DataFrame:
    """Per-run rows kept in the CSV plus the run directories' (theirs win for the same run and grid)."""
    frames = [f for f in (old, *new) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=RUN_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(RUN_KEY, keep="last").reset_index(drop=True)


def summarize(variant: str, df: pd.DataFrame, guess: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Points and fits of one variant's per-run rows; ``guess``: each label's mean-guess MSE."""
    ok = df.assign(status="ok")
    checks = convergence_table(ok)
    curves, _ = split_checks(ok)
    points, fits = [], []
    for key, g in curves.groupby(CURVE_KEYS, dropna=False, sort=True):
        meta = {k: _none(v) for k, v in zip(CURVE_KEYS, key, strict=True)}
        check = curve_check(checks, meta)
        n_params = _none(g["n_params"].iloc[0])
        common = {"variant": variant, "grid": meta["grid"], "arch": meta["arch"], "width": meta["width"],
                  "n_params": n_params, "target": meta["target"]}
        ns, logs, labels = [], [], []
        for n, h in g.groupby("n_train", sort=True):
            mse = h["test_mse"].to_numpy(float)
            gm, lo, hi = _gm_interval(mse)
            points.append({**common, "n_train": int(n), "n_r": int(mse.size), "gm_test_mse": gm,
                           "gm_lo95": lo, "gm_hi95": hi, "steps_mean": float(h["steps"].mean()),
                           "epochs_mean": float(h["epochs"].mean()),
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
                         "converged": check["converged"] if check else None,
                         **_variance_left(points[-1]["gm_test_mse"], guess.get(meta["target"]))})
    for name, grids in LONGER_BUDGET.items():
        fit = _two_point_slope(curves, checks, variant, name, grids)
        if fit is not None:
            largest = curves[curves["grid"] == grids[1]]["test_mse"].to_numpy(float)
            fits.append({**fit, **_variance_left(_gm_interval(largest)[0], guess.get(fit["target"]))})
    return points, fits


def _variance_left(mse: float, guess: float | None) -> dict[str, float | None]:
    """A curve's MSE at its largest N_D against the mean guess's (None for a target the store lacks)."""
    left = None if guess is None else mse / guess
    return {"mse_at_largest": mse, "mean_guess_mse": guess, "variance_left": left}


def _two_point_slope(curves: pd.DataFrame, checks: list[dict], variant: str, name: str,
                     grids: tuple[str, str]) -> dict | None:
    """The local alpha_D between two one-point grids (a longer budget at the largest two N_D), with a 95 %
    interval from the two points' log-MSE spreads (independent subsets; t with the smaller point's dof)."""
    pts = [curves[curves["grid"] == g] for g in grids]
    if any(p.empty for p in pts):
        return None
    (n1,), (n2,) = (p["n_train"].unique() for p in pts)
    l1, l2 = (np.log(p["test_mse"].to_numpy(float)) for p in pts)
    step = float(np.log(n2 / n1))
    alpha = float(l1.mean() - l2.mean()) / step
    dof = min(l1.size, l2.size) - 1
    h = float("nan") if dof < 1 else float(
        sps.t.ppf(0.975, dof) * np.sqrt(l1.var(ddof=1) / l1.size + l2.var(ddof=1) / l2.size) / step)
    first = pts[1].iloc[0]
    check = next((c for c in checks if c["grid"] == grids[1]), None)
    return {"variant": variant, "grid": name, "arch": first["arch"], "width": _none(first["width"]),
            "n_params": _none(first["n_params"]), "target": first["target"], "alpha_d": alpha,
            "alpha_lo95": alpha - h, "alpha_hi95": alpha + h, "points": 2, "n_train_min": int(n1),
            "n_train_max": int(n2), "budget_check_n_train": check["n_train"] if check else None,
            "budget_ratio": check["ratio"] if check else None,
            "converged": (not check["flagged"]) if check else None}


def budget_pairs(variant: str, df: pd.DataFrame, rundir: Path | None = None) -> list[dict]:
    """Every budget check of one variant's per-run rows and of its mid-curve checks (RUNDIR-midcheck, when
    the run directory is here), run by run, paired with the curve's run on the same subset."""
    curves, checks = split_checks(df)
    longs = [(checks, lambda r: str(r["grid"])[: -len(BUDGET_CHECK_SUFFIX)], lambda r: str(r["grid"]))]
    mid = None if rundir is None else rundir.with_name(rundir.name + "-midcheck")
    if mid is not None and results_path(mid).exists():  # `moirescale train` at 2x-8x width 512's budget
        m = load_results(mid)
        longs.append((m[m["status"] == "ok"], lambda r: "fcn512", lambda r: f"runs/{mid.name}"))
    rows = []
    for table, base_grid, source in longs:
        for _, r in table.iterrows():
            sel = curves["grid"] == base_grid(r)
            for k in PAIR_KEYS:
                sel &= curves[k] == r[k]
            base = curves[sel]
            if len(base) != 1:
                continue
            b = base.iloc[0]
            rows.append({"variant": variant, "arch": r["arch"], "width": int(r["width"]),
                         "target": r["target"], "n_train": int(r["n_train"]),
                         "realization": int(r["realization"]),
                         "data_seed": int(r["data_seed"]), "steps": int(b["steps"]),
                         "test_mse": float(b["test_mse"]), "steps_long": int(r["steps"]),
                         "test_mse_long": float(r["test_mse"]), "ratio": float(r["test_mse"] / b["test_mse"]),
                         "source_long": source(r)})
    return rows


def _cell(v, exact: bool = False) -> object:
    """A CSV cell: floats to 6 significant digits, or ``exact`` (the shortest text that reads back the same
    float: the per-run rows are the data every table is recomputed from, so they must not round)."""
    if isinstance(v, float):
        return repr(v) if exact else f"{v:.6g}"
    return "" if v is None else v


def write_csv(path: Path, columns: list[str], rows: list[dict], exact: bool = False) -> None:
    buf = io.StringIO()
    wr = csv.DictWriter(buf, columns, lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: _cell(v, exact) for k, v in r.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def _alpha_cell(f: dict | None) -> str:
    """``α [lo, hi] (check ratio)`` of one curve, or ``—``."""
    if f is None:
        return "—"
    cell = f"{f['alpha_d']:.2f} [{f['alpha_lo95']:.2f}, {f['alpha_hi95']:.2f}]"
    if f["grid"] not in LONGER_BUDGET and f["n_train_max"] < LARGEST:  # a curve still running
        cell += f" (so far: to N_D {f['n_train_max']})"
    if f.get("budget_ratio") is not None:
        cell += f" ({f['budget_ratio']:.2f}{'' if f['converged'] else ': not converged'})"
    return cell


def print_curves(fits: list[dict]) -> None:
    print("| variant | model | target | α_D [95 %] | points | N_D | budget check | converged "
          "| MSE / mean guess at the largest N_D |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in fits:
        model = "features" if f["arch"] == "features" else f"{f['arch']} 3 × {int(f['width'])} ({f['grid']})"
        ratio = "—"
        if f["budget_ratio"] is not None:
            ratio = f"{f['budget_ratio']:.2f} at {f['budget_check_n_train']}"
        print(f"| {f['variant']} | {model} | {f['target']} | {f['alpha_d']:.3f} [{f['alpha_lo95']:.3f}, "
              f"{f['alpha_hi95']:.3f}] | {f['points']} | {f['n_train_min']}–{f['n_train_max']} | {ratio} | "
              f"{f['converged']} | {f['variance_left']:.3g} |")


def print_answer(fits: list[dict]) -> None:
    """Deliverable 5's table: alpha_D per variant x target x width (the 20-epoch recipe over all ten N_D; the
    40-epoch local slope at the largest two), the baseline, the 48 px study's widths 16 and 64, the paper."""
    by = {(f["variant"], f["grid"], f["target"], f["width"]): f for f in fits}
    s48: dict[tuple, list[str]] = {}
    for r in sorted(csv.DictReader((OUT / "study48-fits.csv").open()), key=lambda r: int(r["width"] or 0)):
        if r["grid"] == "fcn_narrow":
            s48.setdefault((r["variant"], r["target"]), []).append(f"{float(r['alpha_d']):.2f}")
    cols = [("fcn4", 4), ("fcn_mid", 16), ("fcn_mid", 64), ("fcn512", 512), (*LONGER_BUDGET, 512),
            ("features", None)]
    head = ["3 × 4", "3 × 16", "3 × 64", "3 × 512", "3 × 512 at 40 epochs (largest two N_D)", "features",
            "48 px: 3 × 16 / 3 × 64", "paper"]
    print("| variant | target | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 2) + "|")
    for variant in ("default", "fss"):
        for target in ("theta", "J", "D"):
            cells = [_alpha_cell(by.get((variant, g, target, w))) for g, w in cols]
            cells.append(" / ".join(s48.get((variant, target), [])) or "—")
            cells.append("1–2" if variant == "default" else "—")
            print(f"| {variant} | {target} | " + " | ".join(cells) + " |")


def _value(v: str) -> object:
    """A CSV cell back as the value the tables hold ('' is None; numbers; True/False)."""
    if v in ("", "True", "False"):
        return None if v == "" else v == "True"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: _value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _curve(row: dict) -> tuple:
    """A point's or fit's curve: (variant, grid, width, target)."""
    return tuple(row[k] for k in CURVE_ID)


def merge_points(kept: list[dict], fresh: list[dict]) -> list[dict]:
    """Point by point: a recomputed point replaces the kept one of its curve and N_D; kept points at other N_D
    stay (a curve being retrained keeps its old points until their retrains land), with the recomputed
    curve's budget-check ratio."""
    ratio = {_curve(r): r["budget_ratio_at_largest"] for r in fresh
             if r.get("budget_ratio_at_largest") is not None}
    done = {(_curve(r), r["n_train"]) for r in fresh}
    old = [r if _curve(r) not in ratio else {**r, "budget_ratio_at_largest": ratio[_curve(r)]}
           for r in kept if (_curve(r), r["n_train"]) not in done]
    return old + list(fresh)


def merge_fits(kept: list[dict], fresh: list[dict]) -> list[dict]:
    """A recomputed fit replaces the kept one of its curve when it reaches a larger N_D, or the same with at
    least as many points (the study's question is the slope to the largest N_D)."""
    best = {_curve(r): r for r in kept}
    for r in fresh:
        b = best.get(_curve(r))
        if b is None or (r["n_train_max"], r["points"]) >= (b["n_train_max"], b["points"]):
            best[_curve(r)] = r
    return list(best.values())


def merge_pairs(kept: list[dict], fresh: list[dict]) -> list[dict]:
    """Budget pairs are per run: a recomputed pair replaces the kept one of the same run and source."""
    key = ("variant", "arch", "width", "target", "n_train", "realization", "data_seed", "steps_long",
           "source_long")
    rows = {tuple(r[k] for k in key): r for r in kept}
    rows.update({tuple(r[k] for k in key): r for r in fresh})
    return list(rows.values())


def _order(row: dict) -> tuple:
    width = row.get("width")
    return (row["variant"], str(row.get("grid") or row.get("arch")), -1 if width is None else float(width),
            row["target"], row.get("n_train") or 0, row.get("realization") or 0)


def print_reproduced(kept: list[dict], fresh: list[dict]) -> None:
    """How many recomputed points equal the same points as kept (to the CSV's six digits), and any that
    differ: a rerun of a lost run directory on a regenerated store should change nothing."""
    old = {(*_curve(r), r["n_train"]): r for r in kept}
    same, diff = 0, []
    for r in fresh:
        k = old.get((*_curve(r), r["n_train"]))
        if k is None:
            continue
        if _cell(float(r["gm_test_mse"])) == _cell(float(k["gm_test_mse"])) and r["n_r"] == k["n_r"]:
            same += 1
        else:
            diff.append(f"{'/'.join(map(str, _curve(r)))} N_D {r['n_train']}: {r['gm_test_mse']:.6g} "
                        f"(N_r {r['n_r']}) against {k['gm_test_mse']:.6g} kept (N_r {k['n_r']})")
    print(f"{same} recomputed point(s) equal the kept ones; {len(diff)} differ"
          + "".join(f"\n  {d}" for d in diff))


TREND_GRIDS = ("fcn4", "fcn_mid", "fcn512")  # the FCN 3 x n_n curves of one recipe (20 epochs)
TREND_COLUMNS = ["variant", "target", "widths", "a_d", "a_lo95", "a_hi95", "b_d", "alphas", "all_converged"]


def size_trend(fits: list[dict]) -> list[dict]:
    """alpha_D against log10(N_M / 1e6) per variant and target over the FCN widths (the paper's Fig. 5 trend),
    ``alpha_D = a_D log10(N_M / 1e6) + b_D``: weighted least squares with each curve's sigma from its 95 %
    interval ((hi - lo) / 3.92) and a 95 % interval of a_D from those sigmas. The curves share their training
    subsets (realization r has one subset at every width), which this treats as independent: an approximation
    (the paired bootstrap of `moirescale fit` needs per-run rows the fourteenth session's machine took)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for f in fits:
        if f["grid"] in TREND_GRIDS and f["arch"] == "fcn" and f["n_train_max"] == LARGEST:  # whole curves
            groups.setdefault((f["variant"], f["target"]), []).append(f)
    for (variant, target), fs in groups.items():
        fs = sorted(fs, key=lambda f: float(f["n_params"]))
        if len(fs) < 3:
            continue
        x = np.log10(np.array([float(f["n_params"]) for f in fs]) / 1e6)
        y = np.array([float(f["alpha_d"]) for f in fs])
        sigma = np.array([(float(f["alpha_hi95"]) - float(f["alpha_lo95"])) / 3.92 for f in fs])
        w = 1 / np.maximum(sigma, 1e-6) ** 2
        intercept, slope = (float(v) for v in _wls_line(x, y, w))
        half = 1.96 / np.sqrt((w * (x - (w * x).sum() / w.sum()) ** 2).sum())  # known sigmas
        out.append({"variant": variant, "target": target,
                    "widths": " ".join(str(int(f["width"])) for f in fs), "a_d": slope,
                    "a_lo95": slope - half, "a_hi95": slope + half,
                    "b_d": intercept,
                    "alphas": " ".join(f"{v:.3f}" for v in y),
                    "all_converged": all(f["converged"] is not False for f in fs)})
    return out


def print_trend(rows: list[dict]) -> None:
    print("| variant | target | widths | α_D per width | a_D (α_D per decade of N_M) [95 %] "
          "| every check passed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['target']} | {r['widths']} | {r['alphas']} | {r['a_d']:.3f} "
              f"[{r['a_lo95']:.3f}, {r['a_hi95']:.3f}] | {r['all_converged']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rundirs", nargs="*", type=Path,
                    default=[ROOT / "runs" / "paper-default", ROOT / "runs" / "paper-fss"])
    args = ap.parse_args()
    here = [rd for rd in args.rundirs if results_path(rd).exists()]
    old_runs = read_runs(OUT / "paper-config-runs.csv")
    runs = merge_runs(old_runs, [run_rows(rd) for rd in here])
    kept_fits = read_rows(OUT / "paper-config-fits.csv")
    points, fits, pairs = [], [], []
    for variant, df in runs.groupby("variant", sort=False):
        rundir = next((rd for rd in here if variant_of(rd) == variant), None)
        kept_guess = {f["target"]: f["mean_guess_mse"] for f in kept_fits
                      if f["variant"] == variant and f["mean_guess_mse"] is not None}
        # the store's test labels when it is here (a restored snapshot may come without it), else the kept
        from_store = rundir_mean_guess(rundir) if rundir is not None else None
        guess = {**kept_guess, **(from_store or {})}
        p, f = summarize(str(variant), df, guess)
        points += p
        fits += f
        pairs += budget_pairs(str(variant), df, rundir)
    kept_points = read_rows(OUT / "paper-config.csv")
    print_reproduced(kept_points, points)
    points = sorted(merge_points(kept_points, points), key=_order)
    fits = sorted(merge_fits(kept_fits, fits), key=_order)
    pairs = sorted(merge_pairs(read_rows(OUT / "paper-config-budget-pairs.csv"), pairs), key=_order)
    write_csv(OUT / "paper-config-runs.csv", RUN_COLUMNS, runs.to_dict("records"), exact=True)
    write_csv(OUT / "paper-config.csv", POINT_COLUMNS, points)
    write_csv(OUT / "paper-config-fits.csv", FIT_COLUMNS, fits)
    write_csv(OUT / "paper-config-budget-pairs.csv", PAIR_COLUMNS, pairs)
    trend = size_trend(fits)
    write_csv(OUT / "paper-config-size-trend.csv", TREND_COLUMNS, trend)
    print_curves(fits)
    print()
    print_answer(fits)
    print()
    print_trend(trend)
    print(f"{len(points)} points, {len(fits)} curves -> {OUT}/paper-config*.csv")


if __name__ == "__main__":
    main()
