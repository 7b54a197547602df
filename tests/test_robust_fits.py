"""Robust fits (``loss="huber"``): planted outliers that pull least squares away are bounded by Huber's loss.

Each test plants a known law and a few bad points (a run that did not converge at the largest N_D, diverged-
but-finite runs, a misfit point near the floor) and asserts both halves: Huber's 95 % interval contains the
truth, and the least-squares estimate is off by more than a stated margin. Coverage over many seeds of the
same scenarios is in docs/analysis.md ("Robust losses").
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

import synthetic as syn
from moirescale.analysis import fits as F
from moirescale.analysis import joint as J
from moirescale.analysis import pipeline as P
from moirescale.analysis import robust
from moirescale.analysis import trend as T
from moirescale.errors import UserError

ND = np.array([224 * 2**k for k in range(8)], dtype=float)
ALPHA, PREFACTOR = 1.5, 1.0e3


def _curve(seed, *, shift=None, n_r=6, sigma=0.3, E=0.0, alpha=ALPHA):
    """Per N_D, the log MSEs of ``n_r`` realizations of E + A N^-alpha; point i multiplied by ``shift[i]``.
    ``seed``: an int or a Generator to draw from."""
    rng = np.random.default_rng(seed)
    logs = []
    for i, n in enumerate(ND):
        v = np.log(E + PREFACTOR * n**-alpha) + sigma * rng.standard_normal(n_r)
        logs.append(v + math.log((shift or {}).get(i, 1.0)))
    labels = [np.array([f"0:{r}" for r in range(n_r)], dtype=object) for _ in ND] if n_r > 1 else None
    return logs, labels


def _inside(truth, interval):
    lo, hi = interval
    return lo <= truth <= hi


# ------------------------------------------------------------------------------------------ the loss itself


def test_huber_line_is_the_huber_minimum_and_vectorises():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 3.0, 9)
    s = rng.uniform(0.05, 0.2, x.size)
    Y = 1.0 - 1.5 * x + s * rng.standard_normal((4, x.size))
    Y[:, 2] += 2.0  # an outlier in every row
    b0, b1 = robust.huber_line(x, Y, s, 1.345)
    for k in range(4):
        ref = optimize.least_squares(
            lambda p, y=Y[k]: (p[0] + p[1] * x - y) / s, [0.0, 0.0], loss="huber", f_scale=1.345,
            xtol=1e-15, ftol=1e-15, gtol=1e-15,
        ).x
        one = robust.huber_line(x, Y[k], s, 1.345)
        assert np.allclose([b0[k], b1[k]], ref, atol=1e-7) and np.allclose(one, ref, atol=1e-7)
    # a huge delta is least squares; a residual beyond delta pulls with delta, not with the residual
    w0, w1 = robust.huber_line(x, Y[0], s, 1e9)
    ls = np.polyfit(x, Y[0], 1, w=1 / s)
    assert np.allclose([w1, w0], ls, atol=1e-8)
    assert robust.rho(np.array([0.5, 3.0]), 1.0) == pytest.approx([0.125, 2.5])


def test_nonlinear_huber_fit_finds_the_minimum():
    """The floor fit's L-BFGS-B grid + polish reaches at least the minimum of 30 independent trust-region
    solves of the same objective from random starts."""
    logs, _ = _curve(3, E=1e-3, shift={1: 6.0}, n_r=1, sigma=0.05)
    x, y = np.log(ND), np.array([v.mean() for v in logs])
    s = np.full(y.size, 0.05)
    p = F._floor_fit(x, y, s, loss="huber", delta=1.345)

    def resid(q):
        return (np.log(q[2] + np.exp(q[0] - q[1] * x)) - y) / s

    ours = robust.rho(resid(p), 1.345).sum()
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(30):
        q0 = [rng.uniform(0, 12), rng.uniform(0.2, 3), rng.uniform(0, math.exp(y.min()))]
        r = optimize.least_squares(resid, q0, bounds=([-np.inf, 0, 0], [np.inf, 10, math.exp(y.min())]),
                                   loss="huber", f_scale=1.345)
        best = min(best, robust.rho(r.fun, 1.345).sum())
    assert ours <= best + 1e-9


def test_bad_loss_or_delta_is_a_user_error():
    logs, labels = _curve(0)
    with pytest.raises(UserError, match="--loss"):
        F.fit_power_law(ND, logs, loss="l1")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--huber-delta"):
            F.fit_power_law(ND, logs, loss="huber", huber_delta=bad)


# ------------------------------------------------------------------------------------------ planted outliers


def test_clean_curve_huber_agrees_with_least_squares():
    logs, labels = _curve(1)
    l2 = F.fit_power_law(ND, logs, labels=labels, n_boot=200)
    hu = F.fit_power_law(ND, logs, labels=labels, n_boot=200, loss="huber")
    half = (l2.interval(1)[1] - l2.interval(1)[0]) / 2
    assert abs(hu.alpha - l2.alpha) < 0.5 * half
    assert _inside(ALPHA, hu.interval(1)) and _inside(ALPHA, l2.interval(1))
    assert l2.to_dict()["loss"] == "l2" and hu.to_dict()["loss"] == "huber"
    assert hu.to_dict()["huber_delta"] == robust.HUBER_DELTA and l2.to_dict()["huber_delta"] is None


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_unconverged_largest_point_pulls_l2_not_huber(seed):
    """The largest N_D 10x too high (its networks did not converge): l2's alpha_D drops by > 0.15; Huber's
    interval holds the truth. Seed 4's outlier point has a 4x too small SE, which l2 trusts."""
    logs, labels = _curve(seed, shift={7: 10.0})
    l2 = F.fit_power_law(ND, logs, labels=labels, n_boot=200, seed=seed)
    hu = F.fit_power_law(ND, logs, labels=labels, n_boot=200, seed=seed, loss="huber")
    assert abs(l2.alpha - ALPHA) > 0.15
    assert _inside(ALPHA, hu.interval(1)) and abs(hu.alpha - ALPHA) < 0.1
    assert hu.chi2_red < l2.chi2_red / 10  # the robust lack of fit is not inflated by the one bad point


@pytest.mark.parametrize("seed", [0, 1])
def test_diverged_but_finite_runs_with_one_realization_per_point(seed):
    """One run per point (a paper's table): one 20x too high, one 5x too low. Without error bars the Huber
    fit standardises by the robust scale of the residuals and draws its interval from its covariance."""
    logs, _ = _curve(seed, shift={1: 20.0, 6: 0.2}, n_r=1, sigma=0.05)
    l2 = F.fit_power_law(ND, logs, n_boot=400, seed=seed)
    hu = F.fit_power_law(ND, logs, n_boot=400, seed=seed, loss="huber")
    assert abs(l2.alpha - ALPHA) > 0.3
    assert _inside(ALPHA, hu.interval(1)) and abs(hu.alpha - ALPHA) < 0.05
    assert hu.sigma[0] == pytest.approx(0.05, rel=0.6)  # the scale recovers the planted log-noise
    assert "covariance" in hu.ci_method


def test_floor_law_with_an_outlier():
    logs, labels = _curve(1, E=1e-3, shift={1: 6.0})
    l2 = F.fit_power_law(ND, logs, labels=labels, floor=True, n_boot=40, seed=1)
    hu = F.fit_power_law(ND, logs, labels=labels, floor=True, n_boot=40, seed=1, loss="huber")
    assert abs(l2.alpha - ALPHA) > 0.5
    assert _inside(ALPHA, hu.interval(1)) and _inside(1e-3, hu.interval(2))
    assert hu.to_dict()["floor_lo"] > 0  # the floor is resolved, not 0 .. something


def test_joint_law_with_outliers_one_realization_per_point():
    """E + A N_M^-a + B N_D^-b with two of 24 points 4x too high. The default joint loss (soft-L1 with a scale
    of one SE, i.e. one log unit without error bars) is pulled; Huber's intervals hold every parameter."""
    truth = {"E": 1e-3, "A": 3.0, "a": 0.6, "B": 800.0, "b": 1.6}
    nms = (1e3, 4e3, 1.6e4, 6.4e4)
    nds = tuple(224 * 2**k for k in range(6))
    rng = np.random.default_rng(0)
    nm, nd, logs = [], [], []
    for m in nms:
        for d in nds:
            law = truth["E"] + truth["A"] * m ** -truth["a"] + truth["B"] * d ** -truth["b"]
            nm.append(m)
            nd.append(d)
            logs.append(np.array([math.log(law) + 0.05 * rng.standard_normal()]))
    for i in (5, 17):
        logs[i] = logs[i] + math.log(4.0)
    l2 = J.fit_joint(nm, nd, logs, n_boot=30).to_dict()
    hu = J.fit_joint(nm, nd, logs, n_boot=200, loss="huber").to_dict()
    assert l2["loss"] == "soft_l1" and hu["loss"] == "huber"
    assert abs(l2["b"] - truth["b"]) > 0.1
    for k, v in truth.items():
        assert hu[f"{k}_lo"] <= v <= hu[f"{k}_hi"], (k, hu[k], hu[f"{k}_lo"], hu[f"{k}_hi"])
    assert abs(hu["b"] - truth["b"]) < 0.05


def test_alpha_vs_size_with_one_unconverged_size():
    """alpha_D = 0.3 log10(N_M/1e6) + 1.5 over 7 sizes (largest left out); one size's alpha_D 0.6 too high."""
    sizes = np.array([1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7])
    rng = np.random.default_rng(0)  # one stream for all curves
    fits = []
    for i, p in enumerate(sizes):
        alpha = 0.3 * math.log10(p / 1e6) + 1.5 + (0.6 if i == 1 else 0.0)
        logs, labels = _curve(rng, alpha=alpha)
        fits.append(F.fit_power_law(ND, logs, labels=labels, n_boot=200))
    l2 = T.fit_alpha_vs_size(sizes, fits).to_dict()
    hu = T.fit_alpha_vs_size(sizes, fits, loss="huber").to_dict()
    assert abs(l2["a_D"] - 0.3) > 0.08
    assert hu["a_D_lo"] <= 0.3 <= hu["a_D_hi"] and hu["b_D_lo"] <= 1.5 <= hu["b_D_hi"]
    assert hu["loss"] == "huber" and l2["loss"] == "l2"


# ------------------------------------------------------------------------------------------ the pipeline


def test_pipeline_records_the_loss_everywhere():
    law = syn.joint_law(E=1e-4, A=3.0, a=0.6, B=800.0, b=1.6)
    df = pd.DataFrame(
        syn.synthetic_rows(law, widths=(4, 16, 64), n_trains=tuple(224 * 2**k for k in range(5)),
                           n_realizations=4, seed=3)
    )
    fast = {"n_boot": 100, "n_boot_nonlinear": 20}
    doc = P.analyze(df, F.FitSettings(loss="huber", huber_delta=2.0, **fast)).to_dict()
    assert doc["settings"]["loss"] == "huber" and doc["settings"]["huber_delta"] == 2.0
    assert doc["fits"] and all(f["loss"] == "huber" and f["huber_delta"] == 2.0 for f in doc["fits"])
    assert doc["joint"] and all(j["loss"] == "huber" for j in doc["joint"])
    default = P.analyze(df, F.FitSettings(**fast)).to_dict()
    assert default["settings"]["loss"] == "l2"
    assert all(f["loss"] == "l2" for f in default["fits"])
    assert all(j["loss"] == "soft_l1" for j in default["joint"])
