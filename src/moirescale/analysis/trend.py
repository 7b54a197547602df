"""alpha_D against model size: ``alpha_D = a_D log10(N_M / 1e6) + b_D`` over the per-curve power laws
(:mod:`moirescale.analysis.fits`), with intervals from pairing the curves' bootstrap replicates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from moirescale.analysis import robust
from moirescale.analysis.fits import LEVEL, PowerLawFit, _quantiles, _to_python, _wls_line
from moirescale.analysis.robust import HUBER_DELTA
from moirescale.errors import UserError


@dataclass
class SizeTrendFit:
    """``alpha_D = a_D * log10(N_M / 1e6) + b_D`` across model sizes (largest N_M left out of the fit)."""

    a_D: float
    b_D: float
    reps: np.ndarray  # (B, 2)
    n_params: np.ndarray
    alpha: np.ndarray
    alpha_lo: np.ndarray
    alpha_hi: np.ndarray
    used: np.ndarray  # bool per point: in the fit
    level: float = LEVEL
    loss: str = "l2"
    huber_delta: float | None = None

    def predict(self, n_params: Any) -> np.ndarray:
        return self.a_D * np.log10(np.asarray(n_params, dtype=float) / 1e6) + self.b_D

    def band(self, n_params: Any) -> tuple[np.ndarray, np.ndarray]:
        u = np.log10(np.atleast_1d(np.asarray(n_params, dtype=float)) / 1e6)
        p = self.reps[:, 0:1] * u[None, :] + self.reps[:, 1:2]
        lo, hi = np.quantile(p, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return lo, hi

    def to_dict(self) -> dict[str, Any]:
        a_lo, a_hi = _quantiles(self.reps[:, 0], self.level)
        b_lo, b_hi = _quantiles(self.reps[:, 1], self.level)
        d = {
            "a_D": self.a_D,
            "a_D_lo": a_lo,
            "a_D_hi": a_hi,
            "b_D": self.b_D,
            "b_D_lo": b_lo,
            "b_D_hi": b_hi,
            "n_points": int(self.used.sum()),
            "left_out_n_params": [int(p) for p, u in zip(self.n_params, self.used, strict=True) if not u],
            "loss": self.loss,
            "huber_delta": self.huber_delta,
        }
        return {k: _to_python(v) for k, v in d.items()}


def fit_alpha_vs_size(
    n_params: Sequence[int],
    fits: Sequence[PowerLawFit],
    *,
    leave_out_largest: bool = True,
    seed: int = 0,
    loss: str = "l2",
    huber_delta: float = HUBER_DELTA,
) -> SizeTrendFit:
    """Fit alpha_D against log10(N_M/1e6), weighted by the alpha_D intervals; intervals by pairing replicates.

    Replicate b of every curve's alpha is an independent draw (curves use disjoint networks), so refitting the
    line to replicate b of each curve propagates the realization noise into (a_D, b_D). ``loss="huber"`` fits
    the line (and each refit) with the Huber loss of the residuals in units of each alpha's SE.
    """
    robust.check_loss(loss, huber_delta)
    p = np.asarray(n_params, dtype=float)
    order = np.argsort(p)
    p = p[order]
    fits = [fits[i] for i in order]
    used = np.ones(p.size, dtype=bool)
    if leave_out_largest and p.size:
        used[p == p.max()] = False
    if np.unique(p[used]).size < 3:
        raise UserError(
            f"alpha_D vs N_M needs at least 3 model sizes in the fit (after leaving out the largest); "
            f"got {np.unique(p[used]).size}"
        )
    alpha = np.array([f.alpha for f in fits])
    lo_hi = np.array([f.interval(1) for f in fits])
    u = np.log10(p / 1e6)
    sig = np.maximum((lo_hi[:, 1] - lo_hi[:, 0]) / (2 * stats.norm.ppf(0.975)), 1e-6)
    w = 1 / sig[used] ** 2
    huber = loss == "huber"
    b0, b1 = robust.huber_line(u[used], alpha[used], sig[used], huber_delta) if huber else _wls_line(
        u[used], alpha[used], w
    )
    nb = min(f.reps.shape[0] for f in fits)
    R = np.column_stack([f.reps[:nb, 1] for f in fits])
    rng = np.random.default_rng(seed)
    R = R[:, :][rng.permutation(nb)]  # break any alignment of replicate order across curves
    if huber:
        rb0, rb1 = robust.huber_line(u[used], R[:, used], sig[used], huber_delta)
    else:
        rb0, rb1 = _wls_line(u[used], R[:, used], w)
    resid = alpha[used] - (b0 + b1 * u[used])
    dof = int(used.sum()) - 2
    chi2 = float((w * resid**2).sum() / dof) if dof > 0 else 1.0
    if huber:
        chi2 = robust.robust_chi2(resid / sig[used], dof) if dof > 0 else 1.0
    scale = math.sqrt(max(1.0, chi2))
    reps = np.column_stack([b1 + scale * (rb1 - b1), b0 + scale * (rb0 - b0)])
    return SizeTrendFit(
        a_D=float(b1),
        b_D=float(b0),
        reps=reps,
        n_params=p,
        alpha=alpha,
        alpha_lo=lo_hi[:, 0],
        alpha_hi=lo_hi[:, 1],
        used=used,
        loss=loss,
        huber_delta=huber_delta if huber else None,
    )
