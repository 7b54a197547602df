"""Power-law fits of one curve with bootstrap intervals, and the small helpers every fit shares.

The fits by subject: one curve's power law, with or without a floor, and its inversion (here);
alpha_D against model size (:mod:`moirescale.analysis.trend`); the joint (N_D, N_M) law and its inversion
(:mod:`moirescale.analysis.joint`); the extrapolation test of either (:mod:`moirescale.analysis.extrapolate`);
the Huber loss they all accept (:mod:`moirescale.analysis.robust`).

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


def _solve_nd(
    E: np.ndarray, model_term: np.ndarray, logB: np.ndarray, b: np.ndarray, mse: float
) -> np.ndarray:
    """N_D with E + model_term + B N_D^-b = mse (inf where mse is at or below E + model_term)."""
    room = mse - E - model_term
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nd = np.exp((logB - np.log(np.where(room > 0, room, np.nan))) / b)
    return np.where(room > 0, nd, np.inf)


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
