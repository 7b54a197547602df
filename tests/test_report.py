"""Figures, fits.json, report.html (opened in headless Chromium) and the fit / report / advise CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import synthetic as syn
from moirescale import results
from moirescale.analysis import figures as FG
from moirescale.analysis import pipeline as P
from moirescale.analysis import report as R
from moirescale.analysis.fits import FitSettings

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FAST = FitSettings(n_boot=200, n_boot_nonlinear=20)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A synthetic sweep with every ingredient, analysed and reported in-process once for the module."""
    d = tmp_path_factory.mktemp("run")
    results.append_rows(d, syn.demo_rows(n_realizations=6, n_nd=7))
    pd.DataFrame(syn.noise_rows()).to_parquet(d / "noise.parquet")
    (d / "figures").mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 120, 3)) * 255).astype("uint8")).save(
        d / "figures" / "examples.png"
    )
    (d / "config.yaml").write_text("name: synthetic-test\nseed: 123\n")
    (d / "dataset.json").write_text(
        json.dumps(
            {"path": "/data/store", "splits": {"train": 114688, "test": 4096}, "image_shape": [1, 64, 64]}
        )
    )
    df = results.read_results(d)
    an = P.analyze(df, FAST)
    P.write_fits(d, an)
    figs = FG.make_figures(an, d)
    R.write_report(an, d, figs, df)
    return d, an, figs


def test_every_figure_drawn_as_png_and_svg(full_run):
    d, _, figs = full_run
    skipped = {k: v["skipped"] for k, v in figs.items() if "skipped" in v}
    assert not skipped, skipped
    assert len(figs) == 10
    for name in figs:
        png, svg = d / "figures" / f"{name}.png", d / "figures" / f"{name}.svg"
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert ET.parse(svg).getroot().tag.endswith("svg")


def test_fits_json_schema(full_run):
    d, an, _ = full_run
    doc = json.loads((d / "fits.json").read_text())
    assert doc["version"] == 1 and doc["fits"]
    for f in doc["fits"]:
        for k in (
            "arch",
            "n_layers",
            "width",
            "n_params",
            "target",
            "variable",
            "alpha",
            "alpha_lo",
            "alpha_hi",
            "prefactor",
            "n_points",
        ):
            assert k in f
        assert f["alpha_lo"] <= f["alpha"] <= f["alpha_hi"]
    assert {f["variable"] for f in doc["fits"]} == {"n_train", "n_params"}
    t = doc["alpha_vs_size"][0]
    assert {"a_D", "a_D_lo", "a_D_hi", "b_D", "b_D_lo", "b_D_hi"} <= set(t)
    assert {j["target"] for j in doc["joint"]} == {"theta", "J", "D"}
    assert {x["kind"] for x in doc["extrapolation"]} == {"power_law", "joint"}
    # the synthetic J law has b = 1.6 for the data term: the joint fit sees it
    jj = next(
        j for j in doc["joint"] if j["target"] == "J" and j["arch"] == "fcn" and j["schedule"] == "adjustable"
    )
    assert abs(jj["b"] - 1.6) < 0.3


def test_report_content(full_run):
    d, _, _ = full_run
    page = (d / "report.html").read_text()
    assert page.count("<img") == 11  # 10 figures + the examples image
    assert "src='figures/" not in page and "data:image/png;base64," in page  # self-contained
    for s in (
        "alpha_D",
        "paper: 1-2",
        "synthetic-test",
        "image_shape",
        "numpy",
        "git commit",
        "Noise robustness",
        "Extrapolation test",
        "a_D",
        "diverged",
    ):
        assert s in page, s


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs Debian's package)")
def test_report_images_load_in_headless_chromium(full_run, tmp_path):
    d, _, _ = full_run
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        (d / "report.html").as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'id="images-status" data-loaded="(-?\d+)" data-total="(-?\d+)"', out.stdout)
    assert m, out.stdout[-2000:] + out.stderr[-2000:]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == 11 and loaded == total


def test_sparse_data_skips_figures_but_reports(tmp_path):
    rows = syn.synthetic_rows(syn.joint_law(), widths=(8,), n_trains=(224, 448, 896, 1792), n_realizations=3)
    results.append_rows(tmp_path, rows)
    df = results.read_results(tmp_path)
    an = P.analyze(df, FAST)
    figs = FG.make_figures(an, tmp_path)
    skipped = {k for k, v in figs.items() if "skipped" in v}
    assert {
        "fig5_alpha_vs_size",
        "fig7_schedules",
        "fig8_joint_extrapolation",
        "fig9_noise",
        "fig4d_depth",
        "fig3e_bootstrap",
    } <= skipped
    assert all(figs[k]["skipped"].startswith("not enough data") for k in skipped)
    assert "png" in figs["fig1_data_scaling"]
    page = R.build_report(an, tmp_path, figs, df)
    assert "not enough data" in page and "no config.yaml" in page and "no dataset.json" in page


def test_a_model_in_two_grids_is_two_series_in_fig1():
    """A longer-budget grid at the largest N_D (issue 25's 40-epoch width-512 points) is drawn as its own
    open, named series beside the curve, which keeps its fit: never one series with two points at one N_D. A
    grid holding the same trainings as the curve (runs shared by two grids) adds nothing."""
    law = syn.joint_law()
    sizes = (224, 448, 896, 1792)
    rows = syn.synthetic_rows(law, widths=(8,), n_trains=sizes, n_realizations=3, grid="curve")
    long = syn.synthetic_rows(law, widths=(8,), n_trains=(1792,), n_realizations=3, grid="long", seed=1)
    for r in long:  # another recipe (budget): other trainings, another group id
        r["group_id"] += "-long"
    shared = [{**r, "grid": "shared"} for r in rows if r["n_train"] >= 896]  # same trainings, another grid
    an = P.analyze(pd.DataFrame(rows + long + shared), FAST)
    fig = FG.fig1(an)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    main = [x for x in labels if x.startswith("FCN") and "(long)" not in x]
    assert len(main) == 1 and "α=" in main[0]  # the curve's own fit, found through its grid
    assert [x for x in labels if "(long)" in x] == ["FCN 3x8 (long)"]
    assert not [x for x in labels if "shared" in x]
    FG.plt.close(fig)


# ------------------------------------------------------------------------------------------ CLI


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    law = syn.joint_law(E=1e-4, A=3.0, a=0.6, B=800.0, b=1.6)
    results.append_rows(
        d,
        syn.synthetic_rows(
            law, widths=(4, 16, 64), n_trains=tuple(224 * 2**k for k in range(5)), n_realizations=4, seed=3
        ),
    )
    return d


def test_cli_fit_advise_report(small_run):
    # Each CLI start imports every package (torch included), so the subprocess calls are kept few.
    r = _cli("fit", small_run, "--fit-range", 400, 4000, "--bootstrap", 100, "--bootstrap-nonlinear", 20)
    assert r.returncode == 0, r.stderr
    doc = json.loads((small_run / "fits.json").read_text())
    fd = [f for f in doc["fits"] if f["variable"] == "n_train"]
    assert len(fd) == 3 and all(f["n_min"] >= 400 and f["n_max"] <= 4000 and f["n_points"] == 4 for f in fd)
    r = _cli(
        "advise",
        small_run,
        "--target",
        "J",
        "--mse",
        "0.05",
        "--json",
        "--bootstrap",
        100,
        "--bootstrap-nonlinear",
        20,
    )
    assert r.returncode == 0, r.stderr
    adv = json.loads(r.stdout)
    assert adv["answers"][0]["method"] == "joint" and len(adv["answers"][0]["per_model"]) == 3
    r = _cli("report", small_run, "--bootstrap", 100, "--bootstrap-nonlinear", 20)
    assert r.returncode == 0, r.stderr
    assert (small_run / "report.html").stat().st_size > 10_000 and "skipped" in r.stdout


def test_cli_errors_exit_2(tmp_path):
    r = _cli("fit", tmp_path / "missing")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    results.append_rows(tmp_path, syn.synthetic_rows(syn.joint_law(), widths=(4,), n_trains=(224, 448)))
    r = _cli("fit", tmp_path)
    assert r.returncode == 2 and "at least 3 points" in r.stderr and "Traceback" not in r.stderr


def test_command_functions_validate_input(tmp_path, small_run):
    """The same commands called in-process: each bad input is a UserError (the CLI's exit code 2)."""
    from moirescale.analysis import commands as C
    from moirescale.errors import UserError

    kw = {"floor": False, "bootstrap": 100, "bootstrap_nonlinear": 20, "seed": 0}
    with pytest.raises(UserError, match="no results table"):
        C.fit(tmp_path, fit_range=None, **kw)
    with pytest.raises(UserError, match="NMIN"):
        C.fit(small_run, fit_range=(5000.0, 100.0), **kw)
    with pytest.raises(UserError, match="--bootstrap"):
        C.fit(small_run, fit_range=None, floor=False, bootstrap=10, bootstrap_nonlinear=20, seed=0)
    adv_kw = {"arch": None, "as_json": False, "bootstrap": 100, "bootstrap_nonlinear": 20, "seed": 0}
    with pytest.raises(UserError, match="no fitted"):
        C.advise(small_run, target="theta", mse=0.01, **adv_kw)
    with pytest.raises(UserError, match="mse"):
        C.advise(small_run, target="J", mse=-1.0, **adv_kw)
