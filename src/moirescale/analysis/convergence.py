"""The convergence check of a data-scaling curve: is its largest-N_D point limited by the step budget?

A sweep grid with ``convergence_check: F`` retrains each curve's largest N_D with F times the step budget, in
grid ``<name>.budget_check`` (:data:`moirescale.results.BUDGET_CHECK_SUFFIX`). If the geometric-mean test MSE
falls by more than :data:`FLAG_DROP` there, the curve's last point (and so its slope) is partly the
optimiser's, not the data's, and the report flags it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from moirescale.results import BUDGET_CHECK_SUFFIX
from moirescale.stats import geomean

FLAG_DROP = 0.10  # a drop of the MSE by more than 10 % with the larger budget flags the curve
MATCH_KEYS = ["arch", "n_layers", "width", "target", "n_train"]


def split_checks(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curve rows, convergence-check rows) of a results table."""
    grid = df["grid"].fillna("").astype(str) if "grid" in df else pd.Series("", index=df.index)
    is_check = grid.str.endswith(BUDGET_CHECK_SUFFIX)
    return df[~is_check], df[is_check]


def convergence_table(df: pd.DataFrame) -> list[dict]:
    """One row per convergence check: the point, its MSE at the curve's budget and at the larger one.

    Parameters
    ----------
    df : a results table (rows with ``status == "ok"`` are used).

    Returns
    -------
    list of dict with ``grid`` (the curve's grid), the :data:`MATCH_KEYS`, ``mse`` and ``mse_long`` (geometric
    means over the realizations both hold, so a check of fewer realizations is a paired comparison; over all
    of each when they share none), ``n_r``/``n_r_long``, ``ratio = mse_long / mse`` and ``flagged``
    (``ratio < 1 - FLAG_DROP``). A check whose curve point is missing is listed with ``mse`` NaN.
    """
    ok = df[df["status"] == "ok"] if "status" in df else df
    curves, checks = split_checks(ok)
    out = []
    if checks.empty:
        return out
    for key, g in checks.groupby(["grid", *MATCH_KEYS], dropna=False, sort=True):
        grid = str(key[0])[: -len(BUDGET_CHECK_SUFFIX)]
        sel = curves["grid"].fillna("").astype(str) == grid
        for k, v in zip(MATCH_KEYS, key[1:], strict=True):
            sel &= curves[k].isna() if pd.isna(v) else curves[k] == v
        base = curves[sel]
        if "realization" in g and base["realization"].isin(g["realization"]).any():
            base = base[base["realization"].isin(g["realization"])]
        mse, mse_long = geomean(base["test_mse"]), geomean(g["test_mse"])
        ratio = mse_long / mse if mse > 0 else float("nan")
        row = {"grid": grid}
        row.update({k: (None if pd.isna(v) else v) for k, v in zip(MATCH_KEYS, key[1:], strict=True)})
        row.update(
            mse=mse, mse_long=mse_long, n_r=int(len(base)), n_r_long=int(len(g)), ratio=ratio,
            flagged=bool(np.isfinite(ratio) and ratio < 1 - FLAG_DROP),
        )
        for k in ("n_layers", "width", "n_train"):
            if row[k] is not None:
                row[k] = int(row[k])
        out.append(row)
    return out


def curve_check(checks: list[dict[str, Any]], curve: dict[str, Any]) -> dict[str, Any] | None:
    """The budget check of one alpha_D curve, or None if it had none (or its ratio is not a number).

    ``checks``: :func:`convergence_table` rows (or a fits.json's ``convergence`` list); ``curve``: a curve's
    metadata or fit (``grid`` and the :data:`MATCH_KEYS` but ``n_train``: a curve's check is at its largest
    N_D).
    Returns ``{"n_train", "ratio", "converged"}``.
    """
    keys = ["grid", *(k for k in MATCH_KEYS if k != "n_train")]
    row = next((c for c in checks if all(c.get(k) == curve.get(k) for k in keys)), None)
    ratio = None if row is None else row.get("ratio")
    if ratio is None or not math.isfinite(float(ratio)):
        return None
    return {"n_train": row["n_train"], "ratio": float(ratio), "converged": not row["flagged"]}
