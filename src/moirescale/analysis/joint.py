"""The joint law ``eps(N_D, N_M) = E + A N_M^-a + B N_D^-b``: its fit (least squares or Huber, bootstrap
intervals over realizations) and its inversion (what N_D / N_M reach a target MSE). See docs/analysis.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from moirescale.analysis import robust
from moirescale.analysis.fits import (
    LEVEL,
    _boot_means,
    _check_labels,
    _quantiles,
    _sigmas,
    _small_sample_factor,
    _solve_nd,
    _to_python,
)
from moirescale.analysis.robust import HUBER_DELTA
from moirescale.errors import UserError
from moirescale.stats import geomean_of_logs

_JOINT_NAMES = ("E", "A", "a", "B", "b")


@dataclass
class JointFit:
    """``eps(N_D, N_M) = E + A N_M^-a + B N_D^-b``; ``reps`` are (B, 5) replicates of
    (E, log A, a, log B, b)."""

    E: float
    logA: float
    a: float
    logB: float
    b: float
    reps: np.ndarray
    n_params: np.ndarray
    n_train: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    level: float = LEVEL
    loss: str = "soft_l1"  # the default ("l2" setting) has always been scipy's soft-L1 with f_scale = 1 SE
    huber_delta: float | None = None

    @property
    def params(self) -> np.ndarray:
        return np.array([self.E, self.logA, self.a, self.logB, self.b])

    @staticmethod
    def _eval(p: np.ndarray, nm: np.ndarray, nd: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(p)
        nm = np.asarray(nm, dtype=float)[None, :]
        nd = np.asarray(nd, dtype=float)[None, :]
        return (
            p[:, 0:1]
            + np.exp(p[:, 1:2] - p[:, 2:3] * np.log(nm))
            + np.exp(p[:, 3:4] - p[:, 4:5] * np.log(nd))
        )

    def predict(self, n_params: Any, n_train: Any) -> np.ndarray:
        nm, nd = np.broadcast_arrays(
            np.atleast_1d(n_params).astype(float), np.atleast_1d(n_train).astype(float)
        )
        return self._eval(self.params, nm, nd)[0]

    def band(self, n_params: Any, n_train: Any) -> tuple[np.ndarray, np.ndarray]:
        nm, nd = np.broadcast_arrays(
            np.atleast_1d(n_params).astype(float), np.atleast_1d(n_train).astype(float)
        )
        p = self._eval(self.reps, nm, nd)
        lo, hi = np.quantile(p, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for i, name in enumerate(_JOINT_NAMES):
            val = self.params[i]
            lo, hi = _quantiles(self.reps[:, i], self.level)
            if name in ("A", "B"):
                val, lo, hi = math.exp(val), math.exp(lo), math.exp(hi)
            d[name], d[f"{name}_lo"], d[f"{name}_hi"] = val, lo, hi
        d["n_points"] = int(self.y.size)
        d["n_boot"] = int(self.reps.shape[0])
        resid = (self.y - np.log(self.predict(self.n_params, self.n_train))) / self.sigma
        d["rms_std_resid"] = float(np.sqrt(np.mean(resid**2)))
        d["loss"] = self.loss
        d["huber_delta"] = self.huber_delta
        return {k: _to_python(v) for k, v in d.items()}


def _joint_solve(nm, nd, y, s, starts, f_scale=1.0, loss="l2", delta=HUBER_DELTA):
    """Best fit of the joint law from ``starts`` (internal parameters); returns (E, log A, a, log B, b) and
    the geometric-mean scalings (m0, d0) of log N_M and log N_D. ``loss="l2"`` keeps the historical soft-L1
    loss of scale ``f_scale``; "huber" minimises Huber's loss (:mod:`robust`)."""
    lnm, lnd = np.log(nm), np.log(nd)
    m0, d0 = lnm.mean(), lnd.mean()
    e_max = float(np.exp(y.min()))
    if loss == "huber":
        q = _joint_huber(lnm - m0, lnd - d0, y, s, starts, e_max, delta)
        return np.array([q[0], q[1] + q[2] * m0, q[2], q[3] + q[4] * d0, q[4]]), (m0, d0)

    # internal params: (E, log A0, a, log B0, b) with N scaled by geometric means for conditioning
    def resid(q):
        return (np.log(q[0] + np.exp(q[1] - q[2] * (lnm - m0)) + np.exp(q[3] - q[4] * (lnd - d0))) - y) / s

    lo = [0.0, -np.inf, 0.0, -np.inf, 0.0]
    hi = [e_max, np.inf, 6.0, np.inf, 6.0]
    best = None
    for q0 in starts:
        q0 = np.clip(q0, lo, hi)
        try:
            r = optimize.least_squares(resid, q0, bounds=(lo, hi), loss="soft_l1", f_scale=f_scale)
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise UserError("the joint fit did not converge from any start")
    q = best.x.copy()
    return np.array([q[0], q[1] + q[2] * m0, q[2], q[3] + q[4] * d0, q[4]]), (m0, d0)


def _joint_huber(
    um: np.ndarray,
    ud: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    starts: Sequence[np.ndarray],
    e_max: float,
    delta: float,
) -> np.ndarray:
    """Huber fit of the internal joint parameters (E, log A0, a, log B0, b) to centred log sizes."""

    def resid_jac(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ta, tb = np.exp(q[1] - q[2] * um), np.exp(q[3] - q[4] * ud)
        m = q[0] + ta + tb
        J = np.column_stack([1.0 / m, ta / m, -um * ta / m, tb / m, -ud * tb / m]) / s[:, None]
        return (np.log(m) - y) / s, J

    ylo, yhi = float(y.min()) - 50.0, float(y.max()) + 50.0
    lo, hi = [0.0, ylo, 0.0, ylo, 0.0], [e_max, yhi, 6.0, yhi, 6.0]
    q = robust.huber_minimize(resid_jac, starts, lo, hi, delta)
    if q is None:
        raise UserError("the joint fit did not converge from any start")
    return q


def _joint_starts(y: np.ndarray, loss: str) -> list[np.ndarray]:
    """Starting points (internal parameters): 18 (a x b x E) with the law split evenly between its two terms;
    the Huber fit, whose objective has kinks, also starts from uneven splits (54)."""
    gm = geomean_of_logs(y)
    splits = [(0.5, 0.5)] + ([(0.1, 0.9), (0.9, 0.1)] if loss == "huber" else [])
    starts = []
    for fa, fb in splits:
        for a in (0.3, 1.0, 2.0):
            for b in (0.5, 1.0, 2.0):
                for e in (0.0, 0.5 * float(np.exp(y.min()))):
                    starts.append(np.array([e, np.log(gm * fa), a, np.log(gm * fb), b]))
    return starts


def fit_joint(
    n_params: Sequence[float],
    n_train: Sequence[float],
    logs: Sequence[np.ndarray],
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = LEVEL,
    labels: Sequence[np.ndarray] | None = None,
    loss: str = "l2",
    huber_delta: float = HUBER_DELTA,
) -> JointFit:
    """Fit ``E + A N_M^-a + B N_D^-b`` on log residuals (bootstrap intervals; ``labels`` as in
    :func:`fit_power_law`).

    ``loss="l2"`` is the historical fit: scipy's soft-L1 loss with a scale of 1 SE, 18 starts.
    ``loss="huber"`` minimises Huber's loss with threshold ``huber_delta`` SEs by L-BFGS-B from 54 starts
    (Hoffmann et al. 2022; :mod:`robust`); without realization spread its SEs are the robust scale of the
    residuals.
    """
    robust.check_loss(loss, huber_delta)
    nm = np.asarray(n_params, dtype=float)
    nd = np.asarray(n_train, dtype=float)
    logs = [np.asarray(v, dtype=float) for v in logs]
    _check_labels(logs, labels)
    keep = np.array([v.size > 0 for v in logs], dtype=bool)
    nm, nd, logs = nm[keep], nd[keep], [v for v, k in zip(logs, keep, strict=True) if k]
    if labels is not None:
        labels = [np.asarray(a) for a, k in zip(labels, keep, strict=True) if k]
    if np.unique(nm).size < 2 or np.unique(nd).size < 3 or nm.size < 6:
        raise UserError(
            "the joint fit needs >= 2 model sizes, >= 3 dataset sizes and >= 6 points; got "
            f"{np.unique(nm).size} sizes, {np.unique(nd).size} N_D values, {nm.size} points"
        )
    y = np.array([v.mean() for v in logs])
    s = _sigmas(logs)
    starts = _joint_starts(y, loss)
    has_spread = any(v.size > 1 and np.std(v) > 0 for v in logs)
    if loss == "huber":
        s = robust.floor_sigma(s) if has_spread else _joint_residual_scale(nm, nd, y, starts, huber_delta)
    est, (m0, d0) = _joint_solve(nm, nd, y, s, starts, loss=loss, delta=huber_delta)
    rng = np.random.default_rng(seed)
    internal = np.array([est[0], est[1] - est[2] * m0, est[2], est[3] - est[4] * d0, est[4]])
    if has_spread or loss != "huber":
        if has_spread:
            ym = _boot_means(logs, n_boot, rng, labels)
        else:
            resid = y - np.log(JointFit._eval(est, nm, nd)[0])
            ym = (y - resid)[None, :] + rng.choice(resid, (n_boot, y.size))
        reps = np.empty((n_boot, 5))
        for b in range(n_boot):
            reps[b], _ = _joint_solve(nm, nd, ym[b], s, [internal], loss=loss, delta=huber_delta)
        scale = _small_sample_factor(logs, labels, level) if has_spread else 1.0
        reps = est + scale * (reps - est)
    else:  # Huber without error bars: the estimate's asymptotic covariance (no refits)
        reps = est + _joint_draws_huber(nm, nd, y, s, est, n_boot, rng, huber_delta, level)
    reps[:, 0] = np.maximum(reps[:, 0], 0.0)
    return JointFit(
        E=float(est[0]),
        logA=float(est[1]),
        a=float(est[2]),
        logB=float(est[3]),
        b=float(est[4]),
        reps=reps,
        n_params=nm,
        n_train=nd,
        y=y,
        sigma=s,
        level=level,
        loss="huber" if loss == "huber" else "soft_l1",
        huber_delta=huber_delta if loss == "huber" else None,
    )


def _joint_draws_huber(
    nm: np.ndarray,
    nd: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    est: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    delta: float,
    level: float,
) -> np.ndarray:
    """(n_boot, 5) deviations of a Huber joint fit from :func:`robust.normal_draws`."""
    lnm, lnd = np.log(nm), np.log(nd)
    ta, tb = np.exp(est[1] - est[2] * lnm), np.exp(est[3] - est[4] * lnd)
    m = est[0] + ta + tb
    J = np.column_stack([1.0 / m, ta / m, -lnm * ta / m, tb / m, -lnd * tb / m]) / s[:, None]
    return robust.normal_draws(J, (np.log(m) - y) / s, delta, n_boot, rng, level)


def _joint_residual_scale(
    nm: np.ndarray, nd: np.ndarray, y: np.ndarray, starts: list[np.ndarray], delta: float
) -> np.ndarray:
    """SEs for a Huber joint fit of points without error bars: the robust scale of the residuals of a nearly
    least-absolute-deviations fit (Chinchilla's threshold, 1e-3 in log units), then of the Huber fit at
    that scale."""
    dof = y.size - 5
    s = np.ones_like(y)
    for d in (robust.LAD_DELTA, delta):  # a grid search for the first, the second starts from its result
        est, (m0, d0) = _joint_solve(nm, nd, y, s, starts, loss="huber", delta=d)
        resid = y - np.log(JointFit._eval(est, nm, nd)[0])
        s = np.full_like(y, robust.robust_scale(resid, dof))
        starts = [np.array([est[0], est[1] - est[2] * m0, est[2], est[3] - est[4] * d0, est[4]])]
    return s


def invert_joint(fit: JointFit, mse: float, n_params: Sequence[float]) -> dict[str, Any]:
    """What N_D reaches ``mse`` for each model size (and with N_M -> inf), and what N_M with N_D -> inf."""
    p, r = fit.params, fit.reps
    out: dict[str, Any] = {
        "method": "joint",
        "floor": fit.E,
        "floor_interval": list(_quantiles(r[:, 0])),
        "possible": bool(mse > fit.E),
        "per_model": [],
    }
    for nm in sorted({int(v) for v in n_params}):
        term = np.exp(p[1] - p[2] * np.log(nm))
        terms = np.exp(r[:, 1] - r[:, 2] * np.log(nm))
        nd = float(_solve_nd(p[0], term, p[3], p[4], mse))
        lo, hi = _quantiles(_solve_nd(r[:, 0], terms, r[:, 3], r[:, 4], mse))
        out["per_model"].append(
            {
                "n_params": nm,
                "n_train": nd,
                "n_train_lo": lo,
                "n_train_hi": hi,
                "possible": bool(math.isfinite(nd)),
            }
        )
    nd_inf = float(_solve_nd(p[0], 0.0, p[3], p[4], mse))
    out["n_train_min"] = {
        "n_train": nd_inf,
        "interval": list(_quantiles(_solve_nd(r[:, 0], 0.0, r[:, 3], r[:, 4], mse))),
    }
    nm_inf = float(_solve_nd(p[0], 0.0, p[1], p[2], mse))
    out["n_params_min"] = {
        "n_params": nm_inf,
        "interval": list(_quantiles(_solve_nd(r[:, 0], 0.0, r[:, 1], r[:, 2], mse))),
    }
    return out
