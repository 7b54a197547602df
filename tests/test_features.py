"""The physics-feature baseline (model ``features``): features, ridge, train CLI, sweeps, figures, report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import synthetic as syn
from moirescale import results
from moirescale.analysis import figures as FG
from moirescale.analysis import pipeline as P
from moirescale.analysis import report as R
from moirescale.analysis.fits import FitSettings
from moirescale.models import count_params, create_model
from moirescale.models.features import PIXEL_FEATURES, feature_names
from moirescale.train.features import fit_ridge

FAST = FitSettings(n_boot=100, n_boot_nonlinear=20)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_features_are_translation_invariant_and_counted():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.sign(rng.normal(size=(4, 2, 24, 30))).astype(np.float32))
    model = create_model("features", (2, 24, 30), 3)
    f = model.features(x)
    names = feature_names((2, 24, 30))
    assert f.shape == (4, len(names)) == (4, 2 * (len(PIXEL_FEATURES) + 12))
    assert count_params(model) == (len(names) + 1) * 3  # N_M = fitted coefficients
    # a periodic shift moves the origin: the pixel statistics and the power spectrum do not change
    g = model.features(torch.roll(x, shifts=(5, 11), dims=(2, 3)))
    keep = [i for i, n in enumerate(names) if not n.endswith((".walls", ".grad"))]  # the seam is new
    torch.testing.assert_close(g[:, keep], f[:, keep], atol=1e-5, rtol=1e-4)
    # the rings hold the variance of the image (Parseval), less the corners beyond K
    var = x.flatten(2).var(dim=2, unbiased=False)
    power = f.reshape(4, 2, -1)[..., len(PIXEL_FEATURES) :].sum(-1)
    assert torch.all(power <= var + 1e-5) and torch.all(power > 0.7 * var)


def test_ridge_recovers_a_linear_law_and_picks_the_penalty_on_validation():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 6))
    f = rng.normal(size=(600, 6)) * [1, 10, 0.1, 1, 1, 5] + 3.0
    y = f @ w.T + 0.5 + 0.01 * rng.normal(size=(600, 2))
    weight, bias, lam = fit_ridge(f[:400], y[:400], f[400:], y[400:])
    np.testing.assert_allclose(weight, w, atol=0.02)  # feature 2 (scale 0.1) has SE ~0.005
    np.testing.assert_allclose(bias, [0.5, 0.5], atol=0.05)
    assert lam.shape == (2,) and np.all(lam < 1e-2)  # clean data: almost no penalty wins
    yn = rng.normal(size=(600, 1))  # pure noise: the heaviest penalty predicts best
    _, _, lam_n = fit_ridge(f[:400], yn[:400], f[400:], yn[400:])
    assert lam_n[0] >= 1.0


def test_cli_train_features_beats_the_mean(tiny_store, tmp_path):
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import load_arrays
    from moirescale.train import load_checkpoint

    out = tmp_path / "run"
    r = cli("train", "--data", str(tiny_store), "--out", str(out), "--arch", "features", "--target", "all",
            "--n-train", "128", "--realizations", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    df = results.read_results(out)
    assert len(df) == 2 and (df["status"] == "ok").all() and (df["arch"] == "features").all()
    n_feat = len(feature_names((1, 32, 32)))
    assert (df["n_params"] == 3 * (n_feat + 1)).all()
    with open_store(tiny_store) as store:
        _, y_tr = load_arrays(store, "train", None, "top")
        x_te, y_te = load_arrays(store, "test", None, "top")
    mean_mse = ((y_te - y_tr.mean(0)) ** 2).mean(0)
    row = df.iloc[0]
    got = np.array([row["test_mse_theta"], row["test_mse_J"], row["test_mse_D"]])
    assert np.all(got < mean_mse), (got, mean_mse)
    # the checkpoint holds the fitted head and predicts from images like any network
    model, meta = load_checkpoint(out / row["checkpoint"])
    with torch.no_grad():
        pred = model(torch.from_numpy(x_te)).numpy()
    np.testing.assert_allclose(((pred - y_te) ** 2).mean(0), got, rtol=1e-3)
    assert meta["arch"] == "features"


def test_features_takes_no_size_options(tiny_store, tmp_path):
    from moirescale.errors import UserError
    from moirescale.train import TrainSpec, run_spec

    spec = TrainSpec(arch="features", target="J", n_train=32, model_kw={"width": 8})
    with pytest.raises(UserError, match="has no option"):
        run_spec(spec, tiny_store, tmp_path / "r", progress=False)


def test_sweep_with_a_features_grid(tiny_store, tmp_path):
    from moirescale.sweep.config import load_config
    from moirescale.sweep.estimate import job_cost
    from moirescale.sweep.expand import jobs
    from moirescale.sweep.plan import SweepOptions
    from moirescale.sweep.runner import run_sweep
    from moirescale.train.resolve import resolve

    cfg = tmp_path / "features.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "features", "seed": 1, "dataset": {"store": str(tiny_store)},
        "grids": [{"name": "ridge", "model": {"arch": "features"}, "n_train": [32, 64, 128],
                   "targets": ["theta", "D"], "realizations": 3}],
    }))
    specs = jobs(load_config(cfg).cfg)
    assert len(specs) == 6 and all(len(s.realizations) == 3 for s in specs)  # one job per grid point
    rs = resolve(specs[0], (2, 32, 32))
    assert 5 < job_cost(rs).cpu_s < 20  # a fixed cost per job, no step budget
    out = tmp_path / "run"
    run_sweep(cfg, out, SweepOptions(workers=1), progress=False)
    df = results.read_results(out)
    assert len(df) == 18 and (df["status"] == "ok").all()
    assert df.groupby(["target", "n_train"])["data_seed"].nunique().eq(3).all()  # own subsets: a spread
    an = P.analyze(df, FAST)
    assert {m["arch"] for m, _ in an.curves_d} == {"features"}
    assert FG.fig1(an) is not None


def test_figures_fits_and_report_with_the_baseline(tmp_path):
    law = syn.joint_law(E=0.0, A=1.0, a=0.5, B=300.0, b=1.2)
    nds = (224, 448, 896, 1792, 3584)
    rows = syn.synthetic_rows(law, widths=(4, 16), targets=("J", "D"), n_trains=nds, n_realizations=4)
    rows += syn.synthetic_rows(syn.joint_law(B=30.0, b=0.5), arch="features", n_params=(26,),
                               targets=("J", "D"), n_trains=nds, n_realizations=4, seed=5)
    results.append_rows(tmp_path, rows)
    df = results.read_results(tmp_path)
    an = P.analyze(df, FAST)
    P.write_fits(tmp_path, an)
    fits = json.loads((tmp_path / "fits.json").read_text())["fits"]
    feat = [f for f in fits if f["arch"] == "features" and f["variable"] == "n_train"]
    assert len(feat) == 2 and all(abs(f["alpha"] - 0.5) < 0.15 for f in feat)
    for fig in (FG.fig1(an), FG.fig4abc(an)):
        labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
        ref = [t for t in labels if t.startswith("features + ridge")]
        assert len(ref) == 2 and "reference" in ref[0]  # one reference curve per panel (J, D)
        assert sum(t.startswith("FCN") for t in labels) == 4
    figs = FG.make_figures(an, tmp_path)
    assert "png" in figs["fig1_data_scaling"] and "png" in figs["fig4abc_fcn_widths"]
    html = R.write_report(an, tmp_path, figs, df).read_text()
    assert "features" in html
