"""`moirescale compare-variants`: alpha_D of dataset variants against 4/d, figure and tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

import synthetic as syn
from moirescale import results
from moirescale.analysis import pipeline as P
from moirescale.analysis.fits import FitSettings
from moirescale.analysis.variants import load_spec
from moirescale.errors import UserError

NDS = (224, 448, 896, 1792, 3584)


def _run(folder: Path, alpha: float, features: bool = False) -> Path:
    """A run directory whose fits.json holds FCN curves with alpha_D = ``alpha`` (or one features curve)."""
    law = syn.joint_law(E=0.0, A=0.0, B=300.0, b=alpha)
    if features:
        rows = syn.synthetic_rows(law, arch="features", n_params=(26,), targets=("theta", "J"), n_trains=NDS,
                                  n_realizations=5, sigma=0.1, seed=3)
    else:
        rows = syn.synthetic_rows(law, widths=(8, 64), targets=("theta", "J"), n_trains=NDS, n_realizations=5,
                                  sigma=0.1)
    results.append_rows(folder, rows)
    fast = FitSettings(n_boot=100, n_boot_nonlinear=20)
    P.write_fits(folder, P.analyze(results.read_results(folder), fast))
    return folder


def _dimension(path: Path, d: float) -> Path:
    est = {"d": d, "lo": 0.9 * d, "hi": 1.1 * d}
    path.write_text(json.dumps({"n": 2000, "channels": "top", "estimators": {"twonn": est, "mle": est}}))
    return path


def test_compare_variants_cli_draws_the_figure_and_tables(tiny_store, tmp_path):
    runs = tmp_path / "runs"
    spec = {
        "name": "pilot",
        "description": "two synthetic variants and one with d measured on a real store",
        "estimator": "twonn",
        "variants": [
            {"name": "default", "description": "random origin", "run": ["runs/default", "runs/features"],
             "dimension": str(_dimension(tmp_path / "d_default.json", 12.0))},
            {"name": "clean", "description": "fixed origin, shared start", "run": "runs/clean",
             "dimension": "d_clean.json"},
            {"name": "measured", "run": "runs/measured/fits.json", "store": str(tiny_store), "n": 100},
        ],
    }
    _dimension(tmp_path / "d_clean.json", 3.0)
    _run(runs / "default", 0.33)
    _run(runs / "features", 0.3, features=True)  # the baseline's own run, listed beside the networks'
    _run(runs / "clean", 1.3)
    _run(runs / "measured", 0.5)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "moirescale.cli", "compare-variants", str(tmp_path / "spec.yaml")]
    cmd += ["--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("alpha_vs_dimension.png", "alpha_vs_dimension.svg", "compare.html", "variants.md"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "alpha_vs_dimension.png") as im:
        assert im.size[0] > 2 * im.size[1] * 0.9  # two panels side by side: FCN and features
    pts = pd.read_csv(out / "points.csv")
    # one point per variant x target x family: 2 targets x (2 families + 1 + 1)
    assert len(pts) == 8 and set(pts["family"]) == {"fcn", "features"}
    fcn = pts[pts["family"] == "fcn"].set_index(["variant", "target"])
    assert (fcn["model"] == "FCN 3x64").all()  # the largest model stands for the family
    assert abs(fcn.loc[("clean", "J"), "alpha"] - 1.3) < 0.1
    assert abs(fcn.loc[("clean", "J"), "four_over_d"] - 4 / 3) < 1e-9
    assert fcn.loc[("clean", "J"), "four_over_d_lo"] == pytest.approx(4 / 3.3)
    vt = pd.read_csv(out / "variants.csv").set_index("variant")
    measured = vt.loc["measured"]
    assert measured["n"] == 100 and measured["origin"] == "random" and measured["size_px"] == 32
    assert 1 < measured["d_mle"] < measured["d_twonn"] < 100
    md = (out / "variants.md").read_text()
    assert "| clean | J | FCN 3x64 | 1.3" in md and "fixed origin, shared start" in md
    html = (out / "compare.html").read_text()
    assert "data:image/png;base64," in html and "clean" in html


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"name": "x", "variants": []}, "variants"),
        ({"name": "x", "variants": [{"name": "a", "run": "r"}]}, "give dimension"),
        ({"name": "x", "variants": [{"name": "a", "run": "r", "store": "s", "colour": 1}]}, "unknown key"),
        ({"name": "x", "estimator": "pca", "variants": [{"name": "a", "run": "r", "store": "s"}]}, "twonn"),
    ],
)
def test_bad_spec_names_the_key(tmp_path, spec, msg):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match=msg):
        load_spec(p)


def test_missing_fits_says_what_to_run(tmp_path):
    from moirescale.analysis.variants import compare_variants

    results.append_rows(tmp_path / "run", syn.synthetic_rows(syn.joint_law(), widths=(8,), n_trains=NDS))
    _dimension(tmp_path / "d.json", 5.0)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(
        {"name": "x", "variants": [{"name": "a", "run": "run", "dimension": "d.json"}]}))
    with pytest.raises(UserError, match="moirescale fit"):
        compare_variants(tmp_path / "s.yaml", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_points_carry_each_curves_budget_check(tmp_path):
    """A curve whose largest-N_D point fell by half with the larger budget is "not converged" in points.csv,
    in variants.md and in the HTML; a curve that held is "converged"; one without a check has none."""
    from moirescale.analysis.variants import compare_variants

    run = _run(tmp_path / "run", 0.4)
    df = results.read_results(run)
    last = df[(df["n_train"] == max(NDS)) & (df["width"] == 64) & (df["realization"] < 2)]
    check = last.assign(
        grid=lambda d: d["grid"] + results.BUDGET_CHECK_SUFFIX,
        run_id=lambda d: d["run_id"] + "-check",
        test_mse=lambda d: d["test_mse"] * d["target"].map({"theta": 0.5, "J": 0.97}),
    )
    results.append_rows(run, check.astype(object).where(check.notna(), None).to_dict("records"))
    P.write_fits(run, P.analyze(results.read_results(run), FitSettings(n_boot=50, n_boot_nonlinear=10)))
    _dimension(tmp_path / "d.json", 4.0)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(
        {"name": "x", "variants": [{"name": "a", "run": "run", "dimension": "d.json"},
                                   {"name": "b", "run": str(_run(tmp_path / "plain", 0.4)),
                                    "dimension": "d.json"}]}))
    compare_variants(tmp_path / "s.yaml", tmp_path / "out")
    pts = pd.read_csv(tmp_path / "out" / "points.csv").set_index(["variant", "target"])
    assert pts.loc[("a", "theta"), "budget_ratio"] == pytest.approx(0.5)
    assert pts.loc[("a", "theta"), "converged"] == False  # noqa: E712
    assert pts.loc[("a", "J"), "budget_ratio"] == pytest.approx(0.97)
    assert pts.loc[("a", "J"), "converged"] == True  # noqa: E712
    assert pts.loc[("b", "theta"), ["budget_ratio", "converged"]].isna().all()
    md = (tmp_path / "out" / "variants.md").read_text()
    assert "| a | theta | FCN 3x64 | " in md and "| 0.50 (not converged) |" in md and "| 0.97 |" in md
    assert "0.50 (not converged)" in (tmp_path / "out" / "compare.html").read_text()
