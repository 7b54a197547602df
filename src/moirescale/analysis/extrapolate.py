"""The extrapolation test: fit a law on the smaller N_D only and compare its prediction at the held-out
largest N_D with what was measured there (one curve's power law, or the joint law)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from moirescale.analysis.fits import LEVEL, _quantiles, fit_power_law
from moirescale.analysis.joint import JointFit, fit_joint
from moirescale.analysis.robust import HUBER_DELTA
from moirescale.stats import geomean_of_logs, mean_log


def _verdict(obs_logs: np.ndarray, pred: float, pred_reps: np.ndarray, level: float) -> dict[str, Any]:
    """Compare a held-out point with its prediction: log error, band, and a combined-uncertainty z test."""
    lo, hi = _quantiles(pred_reps, level)
    obs = geomean_of_logs(obs_logs)
    obs_se = mean_log(obs_logs)[1] if obs_logs.size > 1 else 0.0
    zq = stats.norm.ppf((1 + level) / 2)
    pred_se = (math.log(max(hi, 1e-300)) - math.log(max(lo, 1e-300))) / (2 * zq)
    log_err = math.log(pred / obs)
    tot = math.hypot(pred_se, obs_se)
    z = log_err / tot if tot > 0 else float("inf")
    return {
        "observed": obs,
        "observed_log_se": obs_se,
        "predicted": pred,
        "predicted_lo": lo,
        "predicted_hi": hi,
        "log_error": log_err,
        "z": z,
        "inside": bool(abs(z) <= zq),
    }


def n_holdout(n_distinct: int) -> int:
    """Hold out the largest 2 N_D when there are >= 6 of them (keeps >= 4 to fit), else the largest 1."""
    return 2 if n_distinct >= 6 else 1


def extrapolate_power_law(
    n: Sequence[float],
    logs: Sequence[np.ndarray],
    *,
    holdout: int | None = None,
    floor: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
    labels: Sequence[np.ndarray] | None = None,
    loss: str = "l2",
    huber_delta: float = HUBER_DELTA,
) -> list[dict[str, Any]]:
    """Fit on all but the ``holdout`` largest N and predict the held-out points (one dict per point)."""
    n_arr = np.asarray(n, dtype=float)
    h = holdout if holdout is not None else n_holdout(np.unique(n_arr).size)
    cut = np.sort(np.unique(n_arr))[-h]
    train = n_arr < cut
    fit = fit_power_law(
        n_arr[train],
        [v for v, t in zip(logs, train, strict=True) if t],
        floor=floor,
        n_boot=n_boot,
        seed=seed,
        level=level,
        labels=None if labels is None else [a for a, t in zip(labels, train, strict=True) if t],
        loss=loss,
        huber_delta=huber_delta,
    )
    out = []
    for ni, v, t in zip(n_arr, logs, train, strict=True):
        if t or len(v) == 0:
            continue
        r = {"n": int(ni), "fit_n_max": int(n_arr[train].max())}
        r.update(_verdict(np.asarray(v), float(fit.predict(ni)), fit.predict_reps(ni)[:, 0], level))
        out.append(r)
    return out


def extrapolate_joint(
    n_params: Sequence[float],
    n_train: Sequence[float],
    logs: Sequence[np.ndarray],
    *,
    holdout: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
    level: float = LEVEL,
    labels: Sequence[np.ndarray] | None = None,
    loss: str = "l2",
    huber_delta: float = HUBER_DELTA,
) -> tuple[JointFit, list[dict[str, Any]]]:
    """Joint fit on the smaller N_D only; predict every point at the ``holdout`` largest N_D values."""
    nm, nd = np.asarray(n_params, dtype=float), np.asarray(n_train, dtype=float)
    h = holdout if holdout is not None else n_holdout(np.unique(nd).size)
    cut = np.sort(np.unique(nd))[-h]
    train = nd < cut
    fit = fit_joint(
        nm[train],
        nd[train],
        [v for v, t in zip(logs, train, strict=True) if t],
        n_boot=n_boot,
        seed=seed,
        level=level,
        labels=None if labels is None else [a for a, t in zip(labels, train, strict=True) if t],
        loss=loss,
        huber_delta=huber_delta,
    )
    out = []
    for m, d, v, t in zip(nm, nd, logs, train, strict=True):
        if t or len(v) == 0:
            continue
        r = {"n_params": int(m), "n_train": int(d), "fit_n_max": int(nd[train].max())}
        pr = JointFit._eval(fit.reps, np.array([m]), np.array([d]))[:, 0]
        r.update(_verdict(np.asarray(v), float(fit.predict(m, d)[0]), pr, level))
        out.append(r)
    return fit, out
