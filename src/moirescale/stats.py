"""Statistics over network realizations: the geometric mean and its errors, one row per grid point, and the
Fig. 3(e) subset bootstrap. The one home of these numbers (issue 28): training summaries, fits, figures, noise
tables and ``predict`` all ask this module.

The test loss of a regressor varies over orders of magnitude between seeds (a few networks land in poor
minima), so the paper's main statistic is the geometric mean ``exp(mean(log MSE))``. Everything downstream
(fits, figures) works on the log losses kept per point here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from moirescale import results
from moirescale.errors import UserError

log = logging.getLogger(__name__)

# A grid point: every realization sharing these values is one sample of the same random variable.
POINT_KEYS: list[str] = [
    "arch",
    "n_layers",
    "width",
    "n_params",
    "target",
    "n_train",
    "schedule",
    "grid",
    "noise_train",
]
_NUMERIC_KEYS = ("n_layers", "width", "n_params", "n_train")


def load_results(rundir: str | os.PathLike[str], by_grid: bool = False) -> pd.DataFrame:
    """Read ``RUNDIR/results.parquet`` and validate it; UserError if it is missing or empty.

    ``by_grid``: for the analysis, each run once per grid of ``RUNDIR/config.yaml`` that declares it
    (:func:`rows_by_grid`): a row records only the grid that trained it, so a network two grids share (Fig.
    1's n_n = 4 curve is also in Fig. 4; a budget check that is also a longer-budget curve's point) would be
    missing from the second grid's curve. Without a config (an imported table) the rows are as recorded.
    """
    path = results.table_path(rundir)
    if not os.path.isdir(rundir):
        raise UserError(f"run directory {os.fspath(rundir)!r} does not exist")
    if not path.exists():
        raise UserError(f"no results table at {path}; run a sweep first (or point at the right RUNDIR)")
    df = results.read_results(rundir)
    if df.empty:
        raise UserError(f"the results table at {path} has no rows")
    if by_grid:
        df = rows_by_grid(df, config_run_grids(rundir))
    return df


def config_run_grids(rundir: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Run id -> grid labels from the run directory's config; empty (rows as recorded) without one."""
    from moirescale.rundir import config_path
    from moirescale.sweep.config import load_config
    from moirescale.sweep.expand import run_grids

    cfg = config_path(rundir)
    if not cfg.is_file():
        return {}
    try:
        return run_grids(load_config(cfg).cfg)
    except UserError as e:  # e.g. its store moved away: the recorded labels are still right for one grid
        log.warning("grids of %s as recorded in the results (its config does not load: %s)", rundir, e)
        return {}


def rows_by_grid(df: pd.DataFrame, grids_of: dict[str, list[str]]) -> pd.DataFrame:
    """Each row once per grid label ``grids_of[run_id]`` gives it (in that order); a run the map does not know
    keeps its recorded ``grid``. The rows are copies, so counting runs needs the table as read."""
    if not grids_of or "run_id" not in df.columns:
        return df
    labels = [grids_of.get(rid) or [g] for rid, g in zip(df["run_id"], df["grid"], strict=True)]
    out = df.iloc[np.repeat(np.arange(len(df)), [len(x) for x in labels])].copy()  # positions: any index
    out["grid"] = [g for x in labels for g in x]
    return out.reset_index(drop=True)


def clean_results(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise key columns and classify rows; UserError on losses that cannot be logged.

    Returns a copy with ``status`` in ok/failed/diverged: an 'ok' row whose test MSE is NaN or infinite is
    re-labelled 'diverged' (never averaged in). An 'ok' row with a zero or negative MSE is a bug upstream: the
    log-based statistics cannot use it and silently dropping it would bias the mean, so it is an error.
    """
    missing = [c for c in ("arch", "target", "n_train", "test_mse", "status") if c not in df.columns]
    if missing:
        raise UserError(f"results table lacks columns {missing}")
    df = df.copy()
    for c in results.COLUMNS:
        if c not in df.columns:
            df[c] = None
    for c in _NUMERIC_KEYS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    df["schedule"] = df["schedule"].fillna("").astype(str)
    df["grid"] = df["grid"].fillna("").astype(str)
    df["noise_train"] = pd.to_numeric(df["noise_train"], errors="coerce").fillna(0.0).astype(float)
    df["test_mse"] = pd.to_numeric(df["test_mse"], errors="coerce").astype(float)
    ok = df["status"] == "ok"
    bad = ok & ~np.isfinite(df["test_mse"].to_numpy())
    df.loc[bad, "status"] = "diverged"
    nonpos = (df["status"] == "ok") & (df["test_mse"] <= 0)
    if nonpos.any():
        rid = df.loc[nonpos, "run_id"].iloc[0]
        raise UserError(
            f"{int(nonpos.sum())} ok run(s) have a zero or negative test_mse (e.g. run {rid!r}); "
            "an MSE must be > 0 to take its log: fix or re-run them"
        )
    if df["n_train"].isna().any():
        raise UserError("results rows without n_train (N_D) cannot be placed on a scaling curve")
    return df


def geomean(values: Any, empty: float = float("nan")) -> float:
    """Geometric mean ``exp(mean(log x))`` of the finite, positive entries of ``values``; ``empty`` if none.

    The one implementation of the paper's main statistic for a single number (figures, the ``train`` summary,
    convergence checks, model choice in ``predict``); :func:`geometric_stats` gives it with its errors.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if v.size else float(empty)


def mean_log(logs: Any) -> tuple[float, float]:
    """(mean, standard error of the mean) of a sample of log losses; the SE is NaN below 2 values and the
    mean NaN for none."""
    v = np.asarray(logs, dtype=float).ravel()
    m = float(v.mean()) if v.size else float("nan")
    return m, float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def geomean_of_logs(logs: Any) -> float:
    """``exp(mean(logs))``: the geometric mean of a sample given as its logs."""
    return float(np.exp(mean_log(logs)[0]))


def geomean_band(values: Any, k: float = 1.0) -> tuple[float, float, float]:
    """(geometric mean, lower, upper): the band ``exp(mean log ± k SE)`` of the positive ``values``
    (a multiplicative band; NaN bounds below 2 values)."""
    m, se = mean_log(np.log(np.asarray(values, dtype=float)))
    return float(np.exp(m)), float(np.exp(m - k * se)), float(np.exp(m + k * se))


def geometric_stats(values: np.ndarray) -> dict[str, float]:
    """The paper's statistics of one sample of test losses.

    Returns geometric mean ``gm`` with its delta-method standard error
    ``gm * std(log) / sqrt(N)``, the standard error of the mean log ``log_se``, arithmetic mean
    ``am`` and its SE, median and MAD.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        raise UserError("empty group: no successful realizations to average")
    lx = np.log(x)
    sd_log = float(lx.std(ddof=1)) if n > 1 else float("nan")
    gm = geomean_of_logs(lx)
    med = float(np.median(x))
    return {
        "n_r": n,
        "gm": gm,
        "log_mean": float(lx.mean()),
        "log_sd": sd_log,
        "log_se": sd_log / np.sqrt(n),
        "gm_se": gm * sd_log / np.sqrt(n),
        "am": float(x.mean()),
        "am_se": float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "median": med,
        "mad": float(np.median(np.abs(x - med))),
    }


def point_stats(df: pd.DataFrame, keep_logs: bool = True) -> pd.DataFrame:
    """One row per grid point (:data:`POINT_KEYS`) with the statistics of :func:`geometric_stats`.

    Failed and diverged runs are excluded from the statistics and counted in ``n_failed`` / ``n_diverged``. A
    point whose every run failed has ``n_r = 0`` and NaN statistics (it still shows up, so it is never
    silently lost). With ``keep_logs`` the column ``logs`` holds each point's array of log MSEs and
    ``labels`` the realization of each (``"seed:realization"``: the unit the bootstraps resample, jointly
    across a curve).
    ``n_data_seeds`` counts the distinct training subsets of the ok runs (1 with ``shared_data``; 0 when the
    table predates the ``data_seed`` column). ``group_ids``: the sorted group ids of its rows (one per
    training recipe; empty for a table without them), so a point two grids share is known to be one point.
    """
    df = clean_results(df)
    rows: list[dict[str, Any]] = []
    for key, g in df.groupby(POINT_KEYS, dropna=False, sort=True):
        row = dict(zip(POINT_KEYS, key, strict=True))
        for c in _NUMERIC_KEYS:
            row[c] = None if pd.isna(row[c]) else int(row[c])
        good = g[g["status"] == "ok"]
        ok = good["test_mse"].to_numpy(dtype=float)
        row["n_data_seeds"] = int(good["data_seed"].dropna().nunique())
        row["group_ids"] = tuple(sorted({str(x) for x in g["group_id"].dropna()}))  # which trainings it holds
        row["n_failed"] = int((g["status"] == "failed").sum())
        row["n_diverged"] = int((g["status"] == "diverged").sum())
        if ok.size:
            row.update(geometric_stats(ok))
        else:
            row.update(
                dict.fromkeys(
                    ["gm", "log_mean", "log_sd", "log_se", "gm_se", "am", "am_se", "median", "mad"],
                    float("nan"),
                )
            )
            row["n_r"] = 0
        if keep_logs:
            row["logs"] = np.log(ok)
            row["labels"] = realization_labels(good)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        raise UserError("no grid points in the results table")
    for c in _NUMERIC_KEYS:
        out[c] = out[c].astype("Int64")
    return out


def realization_labels(rows: pd.DataFrame) -> np.ndarray:
    """``"seed:realization"`` per row: realization r of a config seed is one draw of (training subset,
    initialisation), the same at every N_D and model size. A row without a realization index is a draw of its
    own (labelled by its row in the table)."""
    out = []
    for i, s, r in zip(rows.index, rows["seed"], rows["realization"], strict=True):
        out.append(f"row{i}" if pd.isna(r) else f"{'' if pd.isna(s) else int(s)}:{int(r)}")
    return np.array(out, dtype=object)


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Runs per (arch, target, status), for the report."""
    df = clean_results(df)
    t = df.groupby(["arch", "target", "status"]).size().unstack("status", fill_value=0)
    for s in results.STATUSES:
        if s not in t.columns:
            t[s] = 0
    return t[list(results.STATUSES)].reset_index()


def bootstrap_gm(
    values: np.ndarray,
    n_r_list: list[int] | None = None,
    n_subsets: int = 50,
    seed: int = 0,
) -> pd.DataFrame:
    """The paper's Fig. 3(e): the geometric mean vs the number of realizations N_r.

    For each N_r, ``n_subsets`` random subsets of N_r networks are drawn (without replacement) from the
    available ones; returns the mean and standard deviation of their geometric means.
    The spread shrinks as N_r grows and shows how many realizations a stable geometric mean needs.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise UserError("the realization bootstrap needs at least 2 realizations")
    if n_subsets < 2:
        raise UserError("n_subsets must be at least 2")
    if n_r_list is None:
        n_r_list = sorted({int(v) for v in np.unique(np.geomspace(1, x.size, 12).round())})
    rng = np.random.default_rng(seed)
    lx = np.log(x)
    rows = []
    for n_r in n_r_list:
        if not 1 <= n_r <= x.size:
            raise UserError(f"N_r={n_r} is outside 1..{x.size} (the available realizations)")
        # argsort of uniforms: one random permutation per subset, vectorised
        idx = np.argsort(rng.random((n_subsets, x.size)), axis=1)[:, :n_r]
        gms = np.exp(lx[idx].mean(axis=1))
        rows.append(
            {
                "n_r": n_r,
                "gm_mean": float(gms.mean()),
                "gm_sd": float(gms.std(ddof=1)),
                "n_subsets": n_subsets,
            }
        )
    return pd.DataFrame(rows)
