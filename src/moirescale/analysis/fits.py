"""Power-law fits with bootstrap intervals: per curve, alpha_D vs model size, a joint (N_D, N_M) law, an
extrapolation test, and the inverse question (what N_D / N_M reach a target MSE).

Every fit works on (log N, mean log MSE) per point, weighted by the standard error of the mean log (the delta-
method SE of the geometric mean divided by the geometric mean). Intervals come from a bootstrap over
realizations: realizations are resampled with replacement and the fit is redone. A realization is one draw of
(training subset, initialisation); given its labels, the same draw is used at every point of a curve, so a
realization's networks (nested subsets, one init seed) move together, as they do in the data.
See docs/analysis.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from moirescale.analysis import robust
from moirescale.analysis.robust import HUBER_DELTA
from moirescale.errors import UserError
from moirescale.stats import geomean_of_logs, mean_log

LEVEL = 0.95
PAPER_ALPHA_RANGE = (1.0, 2.0)  # the paper's stated alpha_D range ...
PAPER_ALPHA_MAX = 2.3  # ... "up to about 2.3"


# -------------------------------------------------------------------------------- helpers


def _sigmas(logs: Sequence[np.ndarray]) -> np.ndarray:
    """SE of the mean log per point; points with < 2 realizations (or zero spread) borrow the median SE.

    If no point has a usable spread, all get 1 (ordinary least squares; intervals then come from residuals).
    """
    s = np.array([mean_log(v)[1] for v in logs])
    good = np.isfinite(s) & (s > 0)
    if not good.any():
        return np.ones(len(logs))
    return np.where(good, s, np.median(s[good]))


def _boot_means(
    logs: Sequence[np.ndarray],
    n_boot: int,
    rng: np.random.Generator,
    labels: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """(n_boot, n_points) mean logs over realizations resampled with replacement.

    Without ``labels`` each point is resampled on its own. With ``labels`` (per point, the realization label
    of each value) the realizations are resampled *jointly*: a replicate draws K labels with replacement from
    the K labels of the curve and every point averages its values with those draw counts, so a realization
    that trained on a lucky subset is in or out at every N at once (a cluster bootstrap). A point none of
    whose realizations were drawn (possible only when points lack some realizations) is resampled on its own.
    """
    out = np.empty((n_boot, len(logs)))
    if labels is None:
        for i, v in enumerate(logs):
            out[:, i] = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
        return out
    universe = np.unique(np.concatenate([np.asarray(lab) for lab in labels]))
    k = universe.size
    draws = rng.integers(0, k, (n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    for i, (v, lab) in enumerate(zip(logs, labels, strict=True)):
        w = counts[:, np.searchsorted(universe, np.asarray(lab))]  # (n_boot, n_i) draw counts
        tot = w.sum(axis=1)
        empty = tot == 0
        out[:, i] = (w @ v) / np.where(empty, 1.0, tot)
        if empty.any():
            out[empty, i] = v[rng.integers(0, v.size, (int(empty.sum()), v.size))].mean(axis=1)
    return out


def _check_labels(logs: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None) -> None:
    if labels is None:
        return
    if len(labels) != len(logs) or any(np.size(a) != np.size(v) for a, v in zip(labels, logs, strict=True)):
        raise UserError("realization labels must match the log losses point by point")


def _small_sample_factor(
    logs: Sequence[np.ndarray], labels: Sequence[np.ndarray] | None = None, level: float = LEVEL
) -> float:
    """Widening of the bootstrap replicates for a small number of realizations.

    The bootstrap variance of a mean is (n-1)/n of the unbiased one: undo that shrinkage (n = median N_r).
    With ``labels`` the K realizations are the independent units of a joint resample, and the interval of a
    statistic estimated from K draws needs Student's t_{K-1} quantile, not the normal one the percentile
    interval amounts to: the factor is sqrt(K/(K-1)) * t_{K-1} / z (1.22 at K = 10, measured to bring the
    coverage of synthetic curves to nominal; docs/analysis.md).
    """
    if labels is None:
        n = float(np.median([v.size for v in logs]))
        return math.sqrt(n / (n - 1)) if n > 1 else 1.0
    k = np.unique(np.concatenate([np.asarray(a) for a in labels])).size
    if k < 2:
        return 1.0
    q = (1 + level) / 2
    return math.sqrt(k / (k - 1)) * float(stats.t.ppf(q, k - 1) / stats.norm.ppf(q))


def _quantiles(v: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval that tolerates +-inf (picks order statistics, never interpolates inf - inf)."""
    v = np.asarray(v, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    q = np.quantile(v, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(q[0]), float(q[1])


def _wls_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line(s): y may be (k,) or (B, k); returns (intercept, slope)."""
    W = w.sum()
    xm = (w * x).sum() / W
    ym = (y * w).sum(axis=-1) / W
    sxx = (w * (x - xm) ** 2).sum()
    slope = ((y - ym[..., None]) * (w * (x - xm))).sum(axis=-1) / sxx
    return ym - slope * xm, slope


def _to_python(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v is pd.NA:
        return None
    return v


# -------------------------------------------------------------------------------- one curve


@dataclass
class PowerLawFit:
    """``eps = E + A * N^-alpha`` (E = 0 without floor) fitted to one curve, with bootstrap replicates.

    ``reps`` holds (B, 3) replicates of (log A, alpha, E) already widened by the small-sample and lack-of-fit
    factors, so percentiles of ``reps`` and predictions from them are the reported intervals.
    """

    alpha: float
    log_prefactor: float
    floor: float | None
    reps: np.ndarray
    n: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    chi2_red: float
    ci_scale: float
    ci_method: str
    level: float = LEVEL
    covers: str = ""  # what varies between the realizations the interval resamples (set by the pipeline)
    loss: str = "l2"
    huber_delta: float | None = None  # the Huber threshold in units of ``sigma`` (loss "huber" only)

    @property
    def prefactor(self) -> float:
        return math.exp(self.log_prefactor)

    def predict(self, n: Any) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return (self.floor or 0.0) + self.prefactor * n**-self.alpha

    def predict_reps(self, n: Any) -> np.ndarray:
        n = np.atleast_1d(np.asarray(n, dtype=float))
        r = self.reps
        return r[:, 2:3] + np.exp(r[:, 0:1]) * n[None, :] ** -r[:, 1:2]

    def band(self, n: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise ``level`` interval of the fitted curve at ``n``."""
        p = self.predict_reps(n)
        lo, hi = np.quantile(p, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return lo, hi

    def interval(self, i: int) -> tuple[float, float]:
        return _quantiles(self.reps[:, i], self.level)

    def to_dict(self) -> dict[str, Any]:
        a_lo, a_hi = self.interval(1)
        p_lo, p_hi = self.interval(0)
        d: dict[str, Any] = {
            "alpha": self.alpha,
            "alpha_lo": a_lo,
            "alpha_hi": a_hi,
            "prefactor": self.prefactor,
            "prefactor_lo": math.exp(p_lo),
            "prefactor_hi": math.exp(p_hi),
            "floor": self.floor,
            "floor_lo": None,
            "floor_hi": None,
            "n_points": int(self.n.size),
            "n_min": int(self.n.min()),
            "n_max": int(self.n.max()),
            "chi2_red": self.chi2_red,
            "ci_scale": self.ci_scale,
            "ci_method": self.ci_method,
            "interval_covers": self.covers or None,
            "n_boot": int(self.reps.shape[0]),
            "level": self.level,
            "loss": self.loss,
            "huber_delta": self.huber_delta,
        }
        if self.floor is not None:
            d["floor_lo"], d["floor_hi"] = self.interval(2)
        return {k: _to_python(v) for k, v in d.items()}


def _floor_fit(
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    starts: list[np.ndarray] | None = None,
    loss: str = "l2",
    delta: float = HUBER_DELTA,
) -> np.ndarray:
    """Least squares (or Huber, :mod:`robust`) on log residuals for (log A0, alpha, E) with N scaled by its
    geometric mean."""
    x0 = x.mean()
    e_max = float(np.exp(y.min()))

    def resid(p: np.ndarray) -> np.ndarray:
        return (np.log(p[2] + np.exp(p[0] - p[1] * (x - x0))) - y) / s

    if starts is None:
        starts = []
        for a in (0.5, 1.0, 2.0, 3.0):
            for f in (0.0, 0.3, 0.7, 0.95):
                e = f * e_max
                starts.append(np.array([np.log(max(geomean_of_logs(y) - e, 1e-300)), a, e]))
    if loss == "huber":
        p = _floor_fit_huber(x - x0, y, s, starts, e_max, delta)
        p[0] = p[0] + p[1] * x0
        return p
    best = None
    for p0 in starts:
        p0 = np.clip(p0, [-np.inf, 0.0, 0.0], [np.inf, 10.0, e_max])
        try:
            r = optimize.least_squares(resid, p0, bounds=([-np.inf, 0.0, 0.0], [np.inf, 10.0, e_max]))
        except ValueError:
            continue
        if best is None or r.cost < best.cost:
            best = r
    if best is None:
        raise UserError("the floor fit did not converge from any start")
    p = best.x.copy()
    p[0] = p[0] + p[1] * x0  # back to unscaled log A
    return p


def _floor_fit_huber(
    xc: np.ndarray, y: np.ndarray, s: np.ndarray, starts: list[np.ndarray], e_max: float, delta: float
) -> np.ndarray:
    """Huber fit of (log A0, alpha, E) to centred log N ``xc``; the log prefactor is bounded 50 e-folds
    beyond the data, which keeps every exponential finite and restricts nothing."""

    def resid_jac(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.exp(p[0] - p[1] * xc)
        m = p[2] + t
        J = np.column_stack([t / m, -xc * t / m, 1.0 / m]) / s[:, None]
        return (np.log(m) - y) / s, J

    lo = [float(y.min()) - 50.0, 0.0, 0.0]
    hi = [float(y.max()) + 50.0, 10.0, e_max]
    p = robust.huber_minimize(resid_jac, starts, lo, hi, delta)
    if p is None:
        raise UserError("the floor fit did not converge from any start")
    return p


def fit_power_law(
    n: Sequence[float],
    logs: Sequence[np.ndarray],
    *,
    floor: bool = False,
    n_boot: int = 1000,
    fit_range: tuple[float, float] | None = None,
    seed: int = 0,
    level: float = LEVEL,
    labels: Sequence[np.ndarray] | None = None,
    loss: str = "l2",
    huber_delta: float = HUBER_DELTA,
) -> PowerLawFit:
    """Fit ``eps = A N^-alpha`` (or ``E + A N^-alpha`` with ``floor``) to one curve.

    Parameters
    ----------
    n : the scaling variable per point (N_D or N_M), > 0.
    logs : per point, the log test MSEs of its successful realizations.
    floor : also fit an irreducible error E >= 0 (nonlinear least squares on log residuals).
    n_boot : bootstrap replicates over realizations for the intervals.
    fit_range : keep only points with ``nmin <= n <= nmax``.
    labels : per point, the realization label of each log (e.g. ``"seed:realization"``): realizations are
        then resampled jointly across the curve (see :func:`_boot_means`); None resamples each point alone.
    loss : "l2" (least squares) or "huber" (Huber's loss of the standardised log residuals, threshold
        ``huber_delta`` standard errors; :mod:`moirescale.analysis.robust`).

    The point estimate is weighted least squares on (log n, mean log) with weights 1/SE^2 of the mean log. The
    interval is the bootstrap percentile interval, widened by sqrt(N_r/(N_r-1)) (bootstrap shrinkage) and by
    sqrt(chi2_red) when the points scatter more around the law than their realizations explain (lack of fit).
    Without any realization spread (N_r = 1 everywhere) the interval is the t-interval from the residuals.
    With ``loss="huber"`` every fit and refit minimises the Huber loss instead, chi2_red is its robust version
    (the squared robust scale of the standardised residuals, which an outlier cannot inflate), the SEs are
    raised to at least their median (:func:`robust.floor_sigma`), and without realization spread the SEs are
    the robust scale of the residuals and the replicates are drawn from the Huber estimate's asymptotic
    covariance (:func:`robust.normal_draws`).
    """
    robust.check_loss(loss, huber_delta)
    n_arr, logs, labels = _curve_points(n, logs, labels, floor, fit_range)
    x = np.log(n_arr)
    y = np.array([v.mean() for v in logs])
    s = _sigmas(logs)
    rng = np.random.default_rng(seed)
    spread = any(v.size > 1 and np.std(v) > 0 for v in logs)
    if loss == "huber":  # SEs floored at their median; without error bars, the residuals' robust scale
        s = robust.floor_sigma(s) if spread else _huber_residual_scale(x, y, floor, huber_delta)
    w = 1.0 / s**2
    est, resid, dof = _power_law_estimate(x, y, s, w, floor, loss, huber_delta)
    if loss == "huber":
        chi2_red = robust.robust_chi2(resid / s, dof)
    else:
        chi2_red = float((w * resid**2).sum() / dof) if dof > 0 else float("nan")
    if spread:  # realizations spread: bootstrap over them
        ym = _boot_means(logs, n_boot, rng, labels)
        reps = _power_law_refits(x, ym, s, w, est, floor, loss, huber_delta)
        birge = math.sqrt(max(1.0, chi2_red if math.isfinite(chi2_red) else 1.0))
        scale = _small_sample_factor(logs, labels, level) * birge
        reps = est + scale * (reps - est)
        method = "bootstrap over realizations" + (" (joint across points)" if labels is not None else "")
    elif loss == "huber":  # no realization spread: the M-estimator's asymptotic covariance
        reps = _residual_draws_huber(x, s, resid, est, floor, n_boot, rng, huber_delta, level)
        scale = 1.0
        method = "Huber covariance of the residuals (one realization per point)"
    else:  # no realization spread: use the residual scatter
        reps = _residual_replicates(x, y, resid, dof, est, floor, n_boot, rng)
        scale = 1.0
        method = "residuals (one realization per point)"
    reps[:, 2] = np.maximum(reps[:, 2], 0.0)
    return PowerLawFit(
        alpha=float(est[1]),
        log_prefactor=float(est[0]),
        floor=float(est[2]) if floor else None,
        reps=reps,
        n=n_arr,
        y=y,
        sigma=s,
        chi2_red=chi2_red,
        ci_scale=scale,
        ci_method=method,
        level=level,
        loss=loss,
        huber_delta=huber_delta if loss == "huber" else None,
    )


def _curve_points(
    n: Sequence[float],
    logs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None,
    floor: bool,
    fit_range: tuple[float, float] | None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray] | None]:
    """The points of a curve to fit: checked, inside ``fit_range``, with realizations, sorted by N."""
    n_arr = np.asarray(n, dtype=float)
    logs = [np.asarray(v, dtype=float) for v in logs]
    if n_arr.size != len(logs):
        raise UserError("fit_power_law: n and logs differ in length")
    _check_labels(logs, labels)
    if np.any(n_arr <= 0):
        raise UserError("the scaling variable N must be > 0 for a log-log fit")
    keep = np.array([v.size > 0 for v in logs], dtype=bool)
    if fit_range is not None:
        lo, hi = fit_range
        if lo > hi:
            raise UserError(f"fit range {lo}..{hi} is empty: NMIN must be <= NMAX")
        keep &= (n_arr >= lo) & (n_arr <= hi)
    n_arr = n_arr[keep]
    logs = [v for v, k in zip(logs, keep, strict=True) if k]
    if labels is not None:
        labels = [np.asarray(a) for a, k in zip(labels, keep, strict=True) if k]
    need = 4 if floor else 3
    if np.unique(n_arr).size < need:
        what = "a fit with a floor" if floor else "a power-law fit"
        raise UserError(
            f"{what} needs at least {need} points with distinct N; got {np.unique(n_arr).size}"
            + (" in the fit range" if fit_range else "")
        )
    for v in logs:
        if not np.all(np.isfinite(v)):
            raise UserError("log losses must be finite (zero or negative losses cannot be fitted)")
    order = np.argsort(n_arr)
    labels = None if labels is None else [labels[i] for i in order]
    return n_arr[order], [logs[i] for i in order], labels


def _power_law_estimate(
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    w: np.ndarray,
    floor: bool,
    loss: str = "l2",
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Point estimate ``[log A, alpha, E]`` on (log N, mean log), its residuals and degrees of freedom."""
    if not floor:
        b0, b1 = _wls_line(x, y, w) if loss == "l2" else robust.huber_line(x, y, s, delta)
        est = np.array([float(b0), float(-b1), 0.0])
        return est, y - (b0 + b1 * x), x.size - 2
    est = _floor_fit(x, y, s, loss=loss, delta=delta)
    return est, y - np.log(est[2] + np.exp(est[0] - est[1] * x)), x.size - 3


def _huber_residual_scale(x: np.ndarray, y: np.ndarray, floor: bool, delta: float) -> np.ndarray:
    """Per-point SEs for a Huber fit of points without error bars: the robust scale of the residuals of a
    nearly least-absolute-deviations fit (Chinchilla's Huber threshold, 1e-3 in log units), then of the Huber
    fit at that scale."""
    s = np.ones_like(y)
    _, resid, dof = _power_law_estimate(x, y, s, s, floor, "huber", robust.LAD_DELTA)
    s = np.full_like(y, robust.robust_scale(resid, dof))
    _, resid, dof = _power_law_estimate(x, y, s, 1.0 / s**2, floor, "huber", delta)
    return np.full_like(y, robust.robust_scale(resid, dof))


def _power_law_refits(
    x: np.ndarray,
    ym: np.ndarray,
    s: np.ndarray,
    w: np.ndarray,
    est: np.ndarray,
    floor: bool,
    loss: str = "l2",
    delta: float = HUBER_DELTA,
) -> np.ndarray:
    """(n_boot, 3) refits of the law to bootstrap mean logs ``ym`` (n_boot, points), started at ``est``."""
    n_boot = ym.shape[0]
    if not floor:
        b0s, b1s = _wls_line(x, ym, w) if loss == "l2" else robust.huber_line(x, ym, s, delta)
        return np.column_stack([b0s, -b1s, np.zeros(n_boot)])
    x0 = x.mean()
    reps = np.empty((n_boot, 3))
    for b in range(n_boot):
        start = [np.array([est[0] - est[1] * x0, est[1], est[2]])]
        reps[b] = _floor_fit(x, ym[b], s, starts=start, loss=loss, delta=delta)
    return reps


def _residual_replicates(
    x: np.ndarray,
    y: np.ndarray,
    resid: np.ndarray,
    dof: int,
    est: np.ndarray,
    floor: bool,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_boot, 3) replicates from the residual scatter when no point has a realization spread: t-scaled
    normal draws for the line, a residual bootstrap for the fit with a floor."""
    if dof <= 0:
        raise UserError("with a single realization per point the fit needs more points than parameters")
    k = x.size
    sd = math.sqrt((resid**2).sum() / dof)
    if not floor:
        xm = x.mean()
        se_slope = sd / math.sqrt(((x - xm) ** 2).sum())
        se_icpt = sd * math.sqrt(1 / k + xm**2 / ((x - xm) ** 2).sum())
        cov = np.array([[se_icpt**2, -xm * se_slope**2], [-xm * se_slope**2, se_slope**2]])
        tq = stats.t.ppf(0.975, dof) / stats.norm.ppf(0.975)  # widen normal draws to t quantiles
        draws = rng.multivariate_normal([0.0, 0.0], cov, n_boot) * tq
        return np.column_stack([est[0] + draws[:, 0], est[1] + draws[:, 1], np.zeros(n_boot)])
    fitted = y - resid
    reps = np.empty((n_boot, 3))
    x0 = x.mean()
    for b in range(n_boot):
        yb = fitted + rng.choice(resid, k) * math.sqrt(k / dof)
        reps[b] = _floor_fit(x, yb, np.ones(k), starts=[np.array([est[0] - est[1] * x0, est[1], est[2]])])
    return reps


def _residual_draws_huber(
    x: np.ndarray,
    s: np.ndarray,
    resid: np.ndarray,
    est: np.ndarray,
    floor: bool,
    n_boot: int,
    rng: np.random.Generator,
    delta: float,
    level: float,
) -> np.ndarray:
    """(n_boot, 3) replicates of a Huber fit to points without realization spread, drawn from the estimate's
    asymptotic covariance (:func:`robust.normal_draws`)."""
    t = np.exp(est[0] - est[1] * x)
    m = est[2] + t
    cols = [t / m, -x * t / m] + ([1.0 / m] if floor else [])
    dev = robust.normal_draws(np.column_stack(cols) / s[:, None], resid / s, delta, n_boot, rng, level)
    if not floor:
        dev = np.column_stack([dev, np.zeros(n_boot)])
    return est + dev


# -------------------------------------------------------------------------------- alpha_D vs N_M


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


# -------------------------------------------------------------------------------- joint law

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


# -------------------------------------------------------------------------------- extrapolation


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


# -------------------------------------------------------------------------------- inverse


def _solve_nd(
    E: np.ndarray, model_term: np.ndarray, logB: np.ndarray, b: np.ndarray, mse: float
) -> np.ndarray:
    """N_D with E + model_term + B N_D^-b = mse (inf where mse is at or below E + model_term)."""
    room = mse - E - model_term
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nd = np.exp((logB - np.log(np.where(room > 0, room, np.nan))) / b)
    return np.where(room > 0, nd, np.inf)


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


def invert_power_law(fit: PowerLawFit, mse: float) -> dict[str, Any]:
    """N at which one curve's fit reaches ``mse`` (inf if at or below its floor)."""
    r = fit.reps
    n = float(_solve_nd(fit.floor or 0.0, 0.0, fit.log_prefactor, fit.alpha, mse))
    lo, hi = _quantiles(_solve_nd(r[:, 2], 0.0, r[:, 0], r[:, 1], mse))
    return {"n": n, "n_lo": lo, "n_hi": hi, "possible": bool(math.isfinite(n))}


@dataclass
class FitSettings:
    fit_range: tuple[float, float] | None = None
    floor: bool = False
    n_boot: int = 1000
    n_boot_nonlinear: int = 200
    seed: int = 0
    level: float = LEVEL
    extra: dict[str, Any] = field(default_factory=dict)
    loss: str = "l2"  # "l2" or "huber" (robust.LOSSES): the loss of every fit
    huber_delta: float = HUBER_DELTA  # Huber threshold, in standard errors of the mean log
