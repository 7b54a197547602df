"""Robust losses for the scaling-law fits: the Huber loss on standardised log residuals.

Every fit (:mod:`~moirescale.analysis.fits`, :mod:`~moirescale.analysis.trend`,
:mod:`~moirescale.analysis.joint`) compares a law with the mean log loss of each point through the
standardised residual ``r_i = (log law_i - y_i) / s_i`` (``s_i``: the SE of the point's mean log).
``loss="l2"`` minimises ``sum r_i^2 / 2``; ``loss="huber"`` minimises ``sum rho(r_i)`` with Huber's

    rho(r) = r^2 / 2                    for |r| <= delta
             delta * (|r| - delta / 2)  beyond,

so a point more than ``delta`` standard errors off the law pulls linearly, not quadratically. This is the loss
of Hoffmann et al. 2022 (Chinchilla, approach 3) and of its replication by Besiroglu et al. 2024, who minimise
it on log residuals with L-BFGS from a grid of starting points. Here ``delta`` is in standard errors
(unitless); their ``delta = 1e-3`` is in nats of raw log residual, i.e. close to least absolute deviations.
See docs/analysis.md.

The line (a power law without floor) is fitted by iteratively reweighted least squares, vectorised over
bootstrap replicates; the nonlinear laws by L-BFGS-B from every start, the best one polished by a trust-region
solve of the same objective. Besiroglu et al. traced Chinchilla's implausibly narrow intervals to an optimiser
that stopped before convergence because of a poor loss scale; here the objective is in standard errors (of
order one per point) and the minimum is not left to one method's stopping rule.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import optimize

from moirescale.errors import UserError

LOSSES = ("l2", "huber")
HUBER_DELTA = 1.345  # standard errors: 95 % efficiency at normal errors (Huber 1964)
LAD_DELTA = 1e-3  # Hoffmann et al.'s threshold in log units: nearly least absolute deviations
MAD_TO_SD = 1.4826  # sd of a normal = 1.4826 x its median absolute deviation

ResidJac = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@functools.cache
def _blas():
    from threadpoolctl import ThreadpoolController  # a dependency of scikit-learn

    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Single-threaded BLAS for the optimiser's tiny vectors: with threads, L-BFGS-B spent ~25x longer waking
    them than computing on a 2-core machine with one core busy (measured: 2 ms per iteration)."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


def check_loss(loss: str, delta: float) -> None:
    """UserError unless ``loss`` is one of :data:`LOSSES` and ``delta`` a finite number > 0."""
    if loss not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not (isinstance(delta, int | float) and 0 < delta < math.inf):
        raise UserError(f"--huber-delta must be a finite number > 0 (in standard errors), got {delta}")


def rho(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber's loss of standardised residuals ``r``."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))


def weights(r: np.ndarray, delta: float) -> np.ndarray:
    """IRLS weights psi(r)/r = min(1, delta/|r|)."""
    return np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))


def floor_sigma(s: np.ndarray) -> np.ndarray:
    """Per-point SEs raised to at least their median, for a Huber fit. An SE from a few realizations is often
    several times too small by chance (at N_r = 6, 6 % of sample SDs are under half the true one), and a
    point that claims a tiny error bar would escape the bound on its pull: its standardised residual, and so
    its influence delta / s, grows as its s shrinks."""
    return np.maximum(s, np.median(s))


def robust_scale(resid: np.ndarray, dof: int) -> float:
    """Robust SD of residuals of a fit with ``dof`` degrees of freedom: 1.4826 median |r|, widened by
    sqrt(k/dof) for the parameters fitted (a tiny positive number if most residuals are exactly zero)."""
    r = np.abs(np.asarray(resid, dtype=float))
    k = r.size
    sc = MAD_TO_SD * float(np.median(r)) * math.sqrt(k / dof) if dof > 0 else float("nan")
    return sc if sc > 0 else 1e-12


def robust_chi2(r: np.ndarray, dof: int) -> float:
    """Lack-of-fit ratio of standardised residuals that an outlier cannot inflate: the squared robust scale
    (1.0 means the points scatter as their error bars say; NaN without degrees of freedom)."""
    if dof <= 0:
        return float("nan")
    return robust_scale(r, dof) ** 2


def normal_draws(
    J: np.ndarray, r: np.ndarray, delta: float, n_boot: int, rng: np.random.Generator, level: float = 0.95
) -> np.ndarray:
    """(n_boot, n_par) deviations of a Huber estimate drawn from its asymptotic covariance, for points without
    error bars (where a residual bootstrap would resample the outliers into every replicate).

    The covariance is Huber's (1981, sec. 7.6; statsmodels' RLM "H1"): K^2 [sum psi^2/(n-p)] /
    [mean psi']^2 (J'J)^-1 with J the Jacobian of the standardised residuals ``r`` at the estimate,
    psi(r) = clip(r, +-delta) and K = 1 + (p/n) var(psi')/mean(psi')^2; the draws are widened from normal to
    Student-t_{n-p} quantiles.
    """
    from scipy import stats

    n, p = J.shape
    dof = n - p
    if dof <= 0:
        raise UserError("with a single realization per point the fit needs more points than parameters")
    inside = (np.abs(r) <= delta).astype(float)
    m = max(float(inside.mean()), 1.0 / n)  # every residual beyond delta: the LAD limit, one point's worth
    K = 1.0 + p / n * float(inside.var()) / m**2
    c = K**2 * float((np.clip(r, -delta, delta) ** 2).sum()) / dof / m**2
    cov = c * np.linalg.pinv(J.T @ J)
    q = (1 + level) / 2
    tq = float(stats.t.ppf(q, dof) / stats.norm.ppf(q))
    return rng.multivariate_normal(np.zeros(p), (cov + cov.T) / 2, n_boot, method="eigh") * tq


def _lines(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares lines, one weight vector per row: y, w (B, k); returns (intercept, slope)."""
    W = w.sum(axis=1)
    xm = (w * x).sum(axis=1) / W
    ym = (w * y).sum(axis=1) / W
    dx = x[None, :] - xm[:, None]
    slope = (w * dx * (y - ym[:, None])).sum(axis=1) / (w * dx**2).sum(axis=1)
    return ym - slope * xm, slope


def huber_line(
    x: np.ndarray, y: np.ndarray, s: np.ndarray, delta: float, max_iter: int = 500, tol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray]:
    """Huber regression line(s) ``y = b0 + b1 x`` on residuals standardised by ``s``, by IRLS.

    Parameters
    ----------
    x : (k,) abscissae.
    y : (k,) or (B, k) ordinates: B lines are fitted at once (bootstrap replicates).
    s : (k,) standard errors of y.
    delta : Huber threshold in units of ``s``.

    Returns
    -------
    (intercept, slope), scalars for 1-d ``y``, (B,) arrays otherwise. IRLS decreases the (convex) Huber
    objective at every step; it stops when no coefficient moves by more than ``tol``.
    """
    x = np.asarray(x, dtype=float)
    Y = np.atleast_2d(np.asarray(y, dtype=float))
    w0 = np.broadcast_to(1.0 / np.asarray(s, dtype=float) ** 2, Y.shape)
    b0, b1 = _lines(x, Y, w0)
    for _ in range(max_iter):
        r = (Y - b0[:, None] - b1[:, None] * x) / s
        n0, n1 = _lines(x, Y, w0 * weights(r, delta))
        step = max(float(np.max(np.abs(n0 - b0))), float(np.max(np.abs(n1 - b1))))
        b0, b1 = n0, n1
        if step < tol:
            break
    if np.ndim(y) == 1:
        return b0[0], b1[0]
    return b0, b1


def huber_minimize(
    resid_jac: ResidJac,
    starts: Sequence[np.ndarray],
    lo: Sequence[float],
    hi: Sequence[float],
    delta: float,
) -> np.ndarray | None:
    """Minimise ``sum rho(r(p))`` within bounds: L-BFGS-B from every start, the best polished.

    Parameters
    ----------
    resid_jac : p -> (r, J): standardised residuals (k,) and their Jacobian (k, n_par).
    starts : starting points (clipped into the bounds).
    lo, hi : bounds per parameter (finite, so that the exponentials stay finite).
    delta : Huber threshold.

    Returns
    -------
    The best parameters, or None when no start gave a finite objective.
    """
    lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r, J = resid_jac(p)
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(J))):
            return 1e300, np.zeros_like(p)
        return float(rho(r, delta).sum()), J.T @ np.clip(r, -delta, delta)

    with _one_blas_thread():
        return _minimize(objective, resid_jac, starts, lo_a, hi_a, delta)


def _minimize(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    resid_jac: ResidJac,
    starts: Sequence[np.ndarray],
    lo_a: np.ndarray,
    hi_a: np.ndarray,
    delta: float,
) -> np.ndarray | None:
    best, best_f = None, math.inf
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=float), lo_a, hi_a)
        res = optimize.minimize(
            objective, p0, jac=True, method="L-BFGS-B", bounds=list(zip(lo_a, hi_a, strict=True)),
            options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8},  # the polish below tightens
        )
        if np.isfinite(res.fun) and res.fun < best_f:
            best, best_f = res.x, float(res.fun)
    if best is None or best_f >= 1e300:
        return None
    try:  # the same objective by a trust-region method (scipy's 'huber' is rho with f_scale = delta)
        pol = optimize.least_squares(
            lambda p: resid_jac(p)[0], best, jac=lambda p: resid_jac(p)[1], bounds=(lo_a, hi_a),
            loss="huber", f_scale=delta, xtol=1e-14, ftol=1e-14, gtol=1e-14,
        )
    except ValueError:
        return best
    if objective(pol.x)[0] < best_f:
        return pol.x
    return best
