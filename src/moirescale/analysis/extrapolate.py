"""The extrapolation test: fit a law on the smaller N_D only and compare its prediction at the held-out
largest N_D with what was measured there (one curve's power law, or the joint law)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def _fit_mask(n_train: np.ndarray, holdout: int | None) -> np.ndarray:
    """Which points the fit may use: all but those at the ``holdout`` largest N_D (:func:`n_holdout`)."""
    h = holdout if holdout is not None else n_holdout(np.unique(n_train).size)
    return n_train < np.sort(np.unique(n_train))[-h]


def _kept(values: Sequence[Any] | None, mask: np.ndarray) -> list[Any] | None:
    return None if values is None else [v for v, t in zip(values, mask, strict=True) if t]


def _held_out(
    logs: Sequence[np.ndarray],
    fitted: np.ndarray,
    describe: Callable[[int], dict[str, Any]],
    predict: Callable[[int], tuple[float, np.ndarray]],
    level: float,
) -> list[dict[str, Any]]:
    """One verdict per held-out point with data: ``describe(i)`` names point i, ``predict(i)`` gives the
    fit's value there and its bootstrap replicates."""
    out = []
    for i, (v, t) in enumerate(zip(logs, fitted, strict=True)):
        if not t and len(v):
            pred, reps = predict(i)
            out.append({**describe(i), **_verdict(np.asarray(v), pred, reps, level)})
    return out


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
    train = _fit_mask(n_arr, holdout)
    fit = fit_power_law(n_arr[train], _kept(logs, train), floor=floor, n_boot=n_boot, seed=seed, level=level,
                        labels=_kept(labels, train), loss=loss, huber_delta=huber_delta)
    n_max = int(n_arr[train].max())
    return _held_out(logs, train, lambda i: {"n": int(n_arr[i]), "fit_n_max": n_max},
                     lambda i: (float(fit.predict(n_arr[i])), fit.predict_reps(n_arr[i])[:, 0]), level)


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
    train = _fit_mask(nd, holdout)
    fit = fit_joint(nm[train], nd[train], _kept(logs, train), n_boot=n_boot, seed=seed, level=level,
                    labels=_kept(labels, train), loss=loss, huber_delta=huber_delta)
    n_max = int(nd[train].max())

    def predict(i: int) -> tuple[float, np.ndarray]:
        reps = JointFit._eval(fit.reps, nm[i : i + 1], nd[i : i + 1])[:, 0]
        return float(fit.predict(nm[i], nd[i])[0]), reps

    def describe(i: int) -> dict[str, Any]:
        return {"n_params": int(nm[i]), "n_train": int(nd[i]), "fit_n_max": n_max}

    return fit, _held_out(logs, train, describe, predict, level)
