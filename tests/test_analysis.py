"""Statistics and fits of moirescale.analysis on synthetic results with known scaling laws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import synthetic as syn
from moirescale import results
from moirescale import stats as S
from moirescale.analysis import extrapolate as X
from moirescale.analysis import fits as F
from moirescale.analysis import joint as J
from moirescale.analysis import pipeline as A
from moirescale.errors import UserError

ND = np.array([224 * 2**k for k in range(8)], dtype=float)


def _draw_logs(rng, n, alpha=1.5, A=1e3, E=0.0, sigma=0.4, n_r=10, outliers=0.0):
    out = []
    for ni in n:
        v = np.log(E + A * ni**-alpha) + sigma * rng.standard_normal(n_r)
        v[rng.random(n_r) < outliers] += math.log(30.0)
        out.append(v)
    return out


# ------------------------------------------------------------------------------------------ statistics


def test_point_stats_values_and_status_counting(tmp_path):
    vals = [1e-3, 2e-3, 4e-3, 8e-3]
    rows = [
        {"run_id": f"r{i}", "arch": "fcn", "n_layers": 3, "width": 4, "n_params": 100, "target": "J",
         "n_train": 224, "realization": i, "seed": i, "test_mse": v, "status": "ok"}
        for i, v in enumerate(vals)
    ]
    rows.append({"run_id": "f", "arch": "fcn", "n_layers": 3, "width": 4, "n_params": 100, "target": "J",
                 "n_train": 224, "realization": 9, "test_mse": None, "status": "failed"})
    rows.append({"run_id": "d", "arch": "fcn", "n_layers": 3, "width": 4, "n_params": 100, "target": "J",
                 "n_train": 224, "realization": 8, "test_mse": 5.0, "status": "diverged"})
    # an 'ok' row with a NaN loss is a divergence the trainer missed: counted, never averaged in
    rows.append({"run_id": "n", "arch": "fcn", "n_layers": 3, "width": 4, "n_params": 100, "target": "J",
                 "n_train": 224, "realization": 7, "test_mse": float("nan"), "status": "ok"})
    results.append_rows(tmp_path, rows)
    st = S.point_stats(S.load_results(tmp_path))
    assert len(st) == 1
    r = st.iloc[0]
    lx = np.log(vals)
    assert r["n_r"] == 4 and r["n_failed"] == 1 and r["n_diverged"] == 2
    assert r["gm"] == pytest.approx(math.exp(lx.mean()))
    assert r["gm_se"] == pytest.approx(r["gm"] * lx.std(ddof=1) / 2)
    assert r["am"] == pytest.approx(np.mean(vals))
    assert r["am_se"] == pytest.approx(np.std(vals, ddof=1) / 2)
    assert r["median"] == pytest.approx(3e-3)
    assert r["mad"] == pytest.approx(np.median(np.abs(np.array(vals) - 3e-3)))
    counts = S.status_counts(S.load_results(tmp_path))
    assert counts[["ok", "failed", "diverged"]].iloc[0].tolist() == [4, 1, 2]


def test_zero_or_negative_loss_is_a_clear_error():
    df = pd.DataFrame(syn.synthetic_rows(syn.joint_law(), n_realizations=3))
    df.loc[5, "test_mse"] = 0.0
    with pytest.raises(UserError, match="zero or negative"):
        S.point_stats(df)
    df.loc[5, "test_mse"] = -1.0
    with pytest.raises(UserError, match="zero or negative"):
        A.analyze(df)


def test_missing_or_empty_results_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        S.load_results(tmp_path / "nope")
    with pytest.raises(UserError, match="no results table"):
        S.load_results(tmp_path)
    with pytest.raises(UserError, match="empty group"):
        S.geometric_stats(np.array([]))


def test_all_failed_point_is_kept_and_all_failed_table_errors():
    df = pd.DataFrame(syn.synthetic_rows(syn.joint_law(), widths=(4,), n_realizations=3))
    first = df["n_train"] == df["n_train"].min()
    df.loc[first, "status"] = "failed"
    st = S.point_stats(df)
    assert int(st.loc[st["n_train"] == 224, "n_r"].iloc[0]) == 0  # visible, not silently dropped
    an = A.analyze(df, F.FitSettings(n_boot=100))
    assert an.curves_d[0][1].n.min() > 224  # but not fitted
    df["status"] = "failed"
    with pytest.raises(UserError, match="no scaling curve"):
        A.analyze(df)


def test_bootstrap_gm_spread_shrinks_with_realizations():
    rng = np.random.default_rng(0)
    x = np.exp(rng.standard_normal(100))
    b = S.bootstrap_gm(x, [2, 10, 50, 100], n_subsets=50, seed=1)
    sd = b["gm_sd"].to_numpy()
    assert np.all(np.diff(sd) < 0) and sd[-1] == pytest.approx(0.0, abs=1e-12)
    assert b["gm_mean"].iloc[-1] == pytest.approx(math.exp(np.log(x).mean()))
    with pytest.raises(UserError):
        S.bootstrap_gm(x, [101])


# ------------------------------------------------------------------------------------------ power laws


@pytest.mark.parametrize("case", ["noise", "floor", "outliers"])
def test_known_exponent_recovered_within_interval(case):
    rng = np.random.default_rng(42)
    if case == "noise":
        logs = _draw_logs(rng, ND, alpha=1.7, sigma=0.5)
        fit = F.fit_power_law(ND, logs, n_boot=1000)
    elif case == "floor":
        logs = _draw_logs(rng, ND, alpha=1.5, E=2e-4, sigma=0.2, n_r=20)
        fit = F.fit_power_law(ND, logs, floor=True, n_boot=200)
        lo, hi = fit.interval(2)
        assert lo <= 2e-4 <= hi
        # the pure power law is biased low by the floor and its interval misses the truth
        plain = F.fit_power_law(ND, logs, n_boot=200)
        assert plain.alpha < 1.5 - 0.1
    else:
        logs = _draw_logs(rng, ND, alpha=1.5, sigma=0.3, n_r=20, outliers=0.1)
        fit = F.fit_power_law(ND, logs, n_boot=1000)
    truth = {"noise": 1.7, "floor": 1.5, "outliers": 1.5}[case]
    lo, hi = fit.interval(1)
    assert lo <= truth <= hi, (case, fit.alpha, lo, hi)
    assert hi - lo < 0.6  # and the interval is informative
    d = fit.to_dict()
    assert d["alpha_lo"] == lo and d["n_points"] == ND.size


def test_interval_coverage_near_nominal():
    """100 synthetic draws: the 95% interval must contain the truth 88-100% of the time.

    With 100 draws the count of hits is Binomial(100, 0.95): SD = 2.2 points, so 88% is 3 SD below nominal.
    Over-wide intervals would pass that, so the median interval width is also checked against the actual
    spread of the estimates over the draws (1.96 * SD for a 95% interval), within a factor 0.8-1.4.
    """
    rng = np.random.default_rng(7)
    hits, widths, est = 0, [], []
    for d in range(100):
        logs = _draw_logs(rng, ND, alpha=1.5, sigma=0.5, n_r=12)
        fit = F.fit_power_law(ND, logs, n_boot=400, seed=d)
        lo, hi = fit.interval(1)
        hits += lo <= 1.5 <= hi
        widths.append(hi - lo)
        est.append(fit.alpha)
    assert 88 <= hits <= 100, hits
    ratio = np.median(widths) / (2 * 1.96 * np.std(est, ddof=1))
    assert 0.8 < ratio < 1.4, ratio


def test_single_realization_uses_residual_interval():
    rng = np.random.default_rng(3)
    logs = _draw_logs(rng, ND, alpha=1.2, sigma=0.1, n_r=1)
    fit = F.fit_power_law(ND, logs, n_boot=500)
    lo, hi = fit.interval(1)
    assert fit.ci_method.startswith("residuals") and lo < 1.2 < hi


def test_fit_range_and_too_few_points():
    rng = np.random.default_rng(0)
    logs = _draw_logs(rng, ND)
    fit = F.fit_power_law(ND, logs, fit_range=(400, 30000), n_boot=100)
    assert fit.n.min() >= 400 and fit.n.max() <= 30000 and fit.n.size == 7
    with pytest.raises(UserError, match="at least 3 points"):
        F.fit_power_law(ND[:2], logs[:2])
    with pytest.raises(UserError, match="in the fit range"):
        F.fit_power_law(ND, logs, fit_range=(200, 500))
    with pytest.raises(UserError, match="at least 4 points"):
        F.fit_power_law(ND[:3], logs[:3], floor=True)
    with pytest.raises(UserError, match="NMIN must be"):
        F.fit_power_law(ND, logs, fit_range=(1000, 10))


def test_alpha_vs_size_recovers_trend():
    law = syn.size_dependent_law(a_D=0.25, b_D=1.6)
    rows = syn.synthetic_rows(law, widths=(4, 8, 16, 32, 64, 128, 256), n_realizations=10, sigma=0.3, seed=1,
                              n_trains=tuple(int(v) for v in ND))
    an = A.analyze(pd.DataFrame(rows), F.FitSettings(n_boot=500, n_boot_nonlinear=20))
    (meta, t), = an.size_trends
    d = t.to_dict()
    assert d["a_D_lo"] <= 0.25 <= d["a_D_hi"] and d["b_D_lo"] <= 1.6 <= d["b_D_hi"]
    assert d["left_out_n_params"] == [int(max(t.n_params))] and d["n_points"] == 6


def test_joint_fit_recovers_parameters_and_extrapolates():
    law = syn.joint_law(E=2e-4, A=5.0, a=0.6, B=300.0, b=1.4)
    rows = syn.synthetic_rows(law, widths=(4, 16, 64, 256), n_realizations=12, sigma=0.25, seed=5,
                              n_trains=tuple(int(v) for v in ND))
    df = pd.DataFrame(rows)
    st = S.point_stats(df)
    nm, nd = st["n_params"].to_numpy(float), st["n_train"].to_numpy(float)
    j = J.fit_joint(nm, nd, list(st["logs"]), n_boot=60)
    d = j.to_dict()
    # The joint intervals cover at ~85-90 % in repeated draws (see docs/analysis.md), so allow 2.5 half-widths
    # (an error of ~2.5 sigma, rare if the intervals are roughly right, common if they are far too narrow).
    for name, truth in (("a", 0.6), ("b", 1.4), ("E", 2e-4)):
        half = (d[f"{name}_hi"] - d[f"{name}_lo"]) / 2
        assert abs(d[name] - truth) <= 2.5 * half + 1e-12, (name, d)
    assert abs(d["b"] - 1.4) < 0.2 and abs(d["a"] - 0.6) < 0.15
    # fitted on the smaller N_D only, the law still predicts the held-out largest points
    _, rows_x = X.extrapolate_joint(st["n_params"].to_numpy(float), st["n_train"].to_numpy(float),
                                    list(st["logs"]), n_boot=40)
    assert len(rows_x) == 4 * 2  # two largest N_D x four model sizes
    assert np.median([abs(r["log_error"]) for r in rows_x]) < 0.2
    assert sum(r["inside"] for r in rows_x) >= 6


def test_extrapolation_flags_a_missed_floor():
    rng = np.random.default_rng(11)
    logs = _draw_logs(rng, ND, alpha=1.5, E=1e-4, sigma=0.1, n_r=20)
    good = X.extrapolate_power_law(ND, logs, floor=True, n_boot=100)
    bad = X.extrapolate_power_law(ND, logs, floor=False, n_boot=300)
    assert len(bad) == 2 and all(r["n"] >= 14336 for r in bad)
    # a pure power law fitted on the steep part under-predicts the floor-limited largest points
    assert all(r["log_error"] < -0.1 and not r["inside"] for r in bad)
    assert all(abs(r["log_error"]) < 0.3 for r in good)


def test_advise_inverts_the_fit():
    rng = np.random.default_rng(2)
    fit = F.fit_power_law(ND, _draw_logs(rng, ND, alpha=1.5, sigma=0.2), n_boot=300)
    target = float(fit.predict(5000.0))
    r = F.invert_power_law(fit, target)
    assert r["n"] == pytest.approx(5000.0, rel=1e-6) and r["n_lo"] < 5000 < r["n_hi"]
    law = syn.joint_law(E=1e-3, A=5.0, a=0.6, B=300.0, b=1.4)
    rows = syn.synthetic_rows(law, widths=(4, 16, 64, 256), n_realizations=8, sigma=0.2, seed=3,
                              n_trains=tuple(int(v) for v in ND), targets=("J",))
    an = A.analyze(pd.DataFrame(rows), F.FitSettings(n_boot=200, n_boot_nonlinear=40))
    jm, j = an.joints[0]
    nm = 73985
    mse = float(j.predict(nm, 10000)[0])
    adv = A.advise(an, "J", mse)
    row = next(p for p in adv["answers"][0]["per_model"] if p["n_params"] == nm)
    assert row["n_train"] == pytest.approx(10000, rel=1e-6)
    assert row["n_train_lo"] <= 10000 <= row["n_train_hi"]
    below = A.advise(an, "J", j.E * 0.5)
    assert below["answers"][0]["possible"] is False
    assert "impossible" in A.format_advice(below)
    with pytest.raises(UserError, match="no fitted"):
        A.advise(an, "theta", 1e-3)


# ------------------------------------------------------------------------------------------ data noise


def test_joint_resampling_moves_a_realization_at_every_point_together():
    """A realization offset that is the same at every N (a lucky subset, nested) cannot tilt the line: the
    joint bootstrap over realizations keeps every replicate's slope at the truth; resampling each point on its
    own mistakes the offsets for independent scatter."""
    rng = np.random.default_rng(0)
    offsets = 0.5 * rng.standard_normal(10)
    logs = [np.log(1e3) - 1.5 * np.log(n) + offsets for n in ND]
    labels = [np.array([f"0:{r}" for r in range(10)], dtype=object)] * ND.size
    joint = F.fit_power_law(ND, logs, n_boot=200, labels=labels)
    alone = F.fit_power_law(ND, logs, n_boot=200)
    assert np.ptp(joint.reps[:, 1]) < 1e-9 and joint.alpha == pytest.approx(1.5)
    assert np.ptp(alone.reps[:, 1]) > 0.05
    assert joint.ci_method.endswith("(joint across points)")
    with pytest.raises(UserError, match="labels must match"):
        F.fit_power_law(ND, logs, labels=labels[:-1])


def test_alpha_interval_covers_data_noise():
    """200 synthetic curves (8 N_D, N_r = 10) whose noise has an init term and a nested-subset data term of
    equal size: the 95 % interval covers the true alpha >= 90 % of the time and is not over-wide (median width
    within 0.8-1.4 of 2 x 1.96 x the SD of the estimates). The same curves with one subset for all
    realizations (the old shared-data default) cover far less: the bootstrap cannot see a data term the
    realizations share."""
    kw = {"n_boot": 300, "seed": 0, "sigma": 0.3, "sigma_data": 0.3, "n_r": 10}
    own = syn.alpha_coverage(200, ND, **kw)
    assert own["coverage"] >= 0.90, own
    assert 0.8 < own["median_width"] / (2 * 1.96 * own["sd_alpha"]) < 1.4, own
    shared = syn.alpha_coverage(200, ND, shared_data=True, **kw)
    assert shared["coverage"] < 0.8, shared


@pytest.mark.slow
@pytest.mark.parametrize("n_r", [5, 10, 20])
@pytest.mark.parametrize("sigma_data", [0.3, 0.6])
def test_alpha_interval_coverage_grid(n_r, sigma_data):
    """docs/analysis.md's coverage table: 400 curves per cell, >= 90 % everywhere."""
    r = syn.alpha_coverage(400, ND, n_boot=400, seed=2, sigma=0.3, sigma_data=sigma_data, n_r=n_r)
    assert r["coverage"] >= 0.90, r


def test_pipeline_says_what_the_interval_covers():
    law = syn.joint_law(B=800.0, b=1.4)
    common = {"widths": (8,), "n_realizations": 6, "sigma": 0.2, "sigma_data": 0.2}  # one size: no joint fit
    st = F.FitSettings(n_boot=100)
    own = A.analyze(pd.DataFrame(syn.synthetic_rows(law, **common)), st)
    shared = A.analyze(pd.DataFrame(syn.synthetic_rows(law, shared_data=True, **common)), st)
    d_own, d_shared = own.to_dict()["fits"][0], shared.to_dict()["fits"][0]
    assert d_own["interval_covers"] == "training subset and initialisation"
    assert d_shared["interval_covers"].startswith("initialisation only")
    assert d_own["ci_method"].endswith("(joint across points)")
    old = pd.DataFrame(syn.synthetic_rows(law, **common)).drop(columns="data_seed")  # a table from before
    assert A.analyze(old, st).to_dict()["fits"][0]["interval_covers"].startswith("realizations")


def test_geomean_is_the_one_geometric_mean():
    assert S.geomean([1.0, 100.0]) == pytest.approx(10.0)
    assert S.geomean(pd.Series([4.0, np.nan, 0.0, -1.0, np.inf, 1.0])) == pytest.approx(2.0)  # > 0, finite
    assert math.isnan(S.geomean([]))
    assert S.geomean([0.0], empty=math.inf) == math.inf


# ------------------------------------------------------------------------------------------ the mean guess


def test_a_curve_at_the_mean_guess_is_marked_in_fits_advice_and_report(tmp_path):
    """With each label's mean-guess MSE, every N_D curve carries its MSE at the largest N_D over it; a curve
    above NEAR_MEAN_GUESS is said to have learnt next to nothing by advise and the report (issue 25: a flat
    curve at the mean passes its budget check and fits a small alpha_D)."""
    from moirescale.analysis import report as R

    law = syn.joint_law(E=0.0, A=3.0, a=0.6, B=800.0, b=1.6)
    rows = syn.synthetic_rows(law, widths=(4, 64), n_realizations=4, sigma=0.1, seed=5,
                              targets=("theta", "J"))
    df = pd.DataFrame(rows)
    st = F.FitSettings(n_boot=100, n_boot_nonlinear=10)
    plain = A.analyze(df, st)
    assert all(m["variance_left"] is None for m, _ in plain.curves_d)
    last = {(m["target"], m["width"]): math.exp(f.y[-1]) for m, f in plain.curves_d}  # gm at the largest N_D
    guess = {"theta": 1.05 * last["theta", 4], "J": 20 * last["J", 4]}  # theta's width 4 is at the mean
    an = A.analyze(df, st, mean_guess=guess)
    got = {(m["target"], m["width"]): m["variance_left"] for m, _ in an.curves_d}
    for (target, width), gm in last.items():
        assert got[target, width] == pytest.approx(gm / guess[target], rel=1e-9)
    assert got["theta", 4] > A.NEAR_MEAN_GUESS > max(got["theta", 64], got["J", 4], got["J", 64])
    doc = an.to_dict()
    for f in (f for f in doc["fits"] if f["variable"] == "n_train"):
        assert f["mean_guess_mse"] == guess[f["target"]]
    text = A.format_advice(A.advise(an, "theta", 0.5 * last["theta", 64]))
    assert text.count("at the mean guess") == 1  # width 4 only
    assert "at the mean guess" not in A.format_advice(A.advise(an, "J", 0.5 * last["J", 64]))
    html = "".join(R._section_alpha_d(doc))
    assert html.count("(at the mean guess)") == 1 and "MSE / mean guess at the largest N_D" in html
    assert "mean guess" not in "".join(R._section_alpha_d(plain.to_dict()))  # unknown: no column


def test_mean_guess_of_a_store_and_of_a_rundir(tiny_store, tmp_path):
    """The mean guess is each label's variance over the test split in scaled units (labels only are read);
    a run directory finds it through dataset.json and does without it when the store is gone."""
    import json

    from moirescale.data.store import open_store
    from moirescale.data.torch_data import label_scaler
    from moirescale.labels import mean_guess_mse

    with open_store(tiny_store) as st:
        got = mean_guess_mse(st)
        _, labels = st.read("test")
        want = label_scaler(st).scale(labels).var(0)
        assert list(got) == list(st.label_names)
        np.testing.assert_allclose(list(got.values()), want, rtol=1e-12)
    assert all(0.02 < v < 0.2 for v in got.values())  # near 1/12: labels sampled over their ranges
    run = tmp_path / "run"
    run.mkdir()
    assert A.rundir_mean_guess(run) == {}  # no dataset.json
    (run / "dataset.json").write_text(json.dumps({"store": str(tiny_store)}))
    assert A.rundir_mean_guess(run) == got
    (run / "dataset.json").write_text(json.dumps({"store": str(tmp_path / "gone")}))
    assert A.rundir_mean_guess(run) == {}
