"""`moirescale demo`: the orchestration on a tiny config (real sweep, noise, figure, fit, report), resumed.

The full `make demo`-sized run is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from moirescale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, timeout: int = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"}
    return subprocess.run([sys.executable, "-m", "moirescale.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def _tiny_config(path: Path, store: Path, channels: str = "top") -> Path:
    cfg = {
        "name": "demo-test",
        "description": f"tiny store read through {channels}",
        "seed": 0,
        "dataset": {"store": str(store)},
        "recipes": {"fcn": {"schedule": "constant", "max_epochs": 4, "batch_size": 16, "channels": channels}},
        "grids": [{
            "name": "fcn", "model": {"arch": "fcn", "n_layers": 2, "width": [4, 16]},
            "n_train": {"values": [32, 64, 128]}, "targets": ["theta"], "realizations": 2,
        }],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_fss_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nuisance-free twin of the tiny store (configs/dataset-tiny-fss.yaml)."""
    from moirescale.data.config import load_config
    from moirescale.data.generate import generate

    cfg, _ = load_config(ROOT / "configs" / "dataset-tiny-fss.yaml")
    return generate(cfg, tmp_path_factory.mktemp("tiny_fss") / "store", progress=False)


def test_pick_examples_sweeps_each_label():
    from moirescale.use.demo import pick_examples

    rng = np.random.default_rng(0)
    labels = np.column_stack([rng.uniform(0.5, 2, 500), rng.uniform(0.2, 1, 500), rng.uniform(0, 1, 500)])
    picks = pick_examples(labels, n=4)
    assert [r for r, _ in picks] == ["theta"] * 4 + ["J"] * 4 + ["D"] * 4
    idx = [i for _, i in picks]
    assert len(set(idx)) == 12
    for r in range(3):  # each row increases in its own label and spans most of its range
        vals = labels[idx[4 * r : 4 * r + 4], r]
        assert np.all(np.diff(vals) > 0)
        lo, hi = np.quantile(labels[:, r], [0.05, 0.95])
        assert vals[0] < lo + 0.1 * (hi - lo) and vals[-1] > hi - 0.1 * (hi - lo)


def test_examples_figure_and_alpha_table(tiny_store, tmp_path):
    from PIL import Image

    from moirescale.use.demo import alpha_table, examples_figure

    out = examples_figure(tiny_store, tmp_path / "figures" / "examples.png")
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 400
    (tmp_path / "fits.json").write_text(json.dumps({"fits": [
        {"variable": "n_params", "target": "J", "arch": "fcn", "alpha": 0.3},
        {"variable": "n_train", "target": "theta", "arch": "fcn", "alpha": 1.2, "alpha_lo": 1.0,
         "alpha_hi": 1.4},
    ]}))
    rows = alpha_table(tmp_path)
    assert len(rows) == 1 and rows[0]["alpha"] == 1.2


def test_fresh_refuses_the_working_directory(tmp_path, monkeypatch):
    from moirescale.use.demo import run_demo

    cfg = _tiny_config(tmp_path / "demo.yaml", tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--fresh"):
        run_demo(".", cfg, fresh=True, variant=None)
    with pytest.raises(UserError, match="no such variant sweep config"):
        run_demo(tmp_path / "out", cfg, variant=tmp_path / "missing.yaml")
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a demo run directory"):
        run_demo(tmp_path / "mine", cfg, fresh=True, variant=None)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="no such sweep config"):
        run_demo(tmp_path / "out", tmp_path / "missing.yaml")


def test_demo_end_to_end_and_resume(tiny_store, tiny_fss_store, tmp_path):
    cfg = _tiny_config(tmp_path / "demo.yaml", tiny_store)
    fss = _tiny_config(tmp_path / "fss.yaml", tiny_fss_store, channels="net")
    out = tmp_path / "run"
    args = ("demo", "--out", out, "--config", cfg, "--variant", fss, "--noise-n-test", "16")
    r = _cli(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("results.parquet", "noise.parquet", "figures/examples.png", "fits.json", "report.html",
                 "demo_timing.json"):
        assert (out / name).exists(), name
    assert f"report: {(out / 'report.html').resolve()}" in r.stdout
    assert "α_D" in r.stdout
    from moirescale.results import read_results

    df = read_results(out)
    assert len(df) == 2 * 3 * 2 and (df["status"] == "ok").all()  # widths x N_D x N_r
    noise = pd.read_parquet(out / "noise.parquet")
    # by default at the largest N_D of each model: 2 widths x 2 realizations, x (gaussian 0 + 4, flip 0 + 4)
    assert len(noise) == 2 * 2 * 10 and set(noise["n_train"]) == {128}
    fits = json.loads((out / "fits.json").read_text())["fits"]
    assert any(f["variable"] == "n_train" for f in fits)
    html = (out / "report.html").read_text()
    assert "Noise robustness" in html and "no figures/examples.png" not in html

    # The two variants: the nuisance-free run beside the default one, d of both, alpha_D vs 4/d, the finding.
    for name in ("fss/results.parquet", "fss/fits.json", "fss/report.html", "variants/alpha_vs_dimension.png",
                 "variants/curves.png", "variants/points.csv", "variants/dimension-default.json",
                 "variants/dimension-fss.json"):
        assert (out / name).exists(), name
    lead = html[html.index("What the demo finds"):html.index("<h2>Runs</h2>")]
    assert "tiny store read through top" in lead and "tiny store read through net" in lead
    assert "alt='alpha_D vs 4/d'" in lead and "alt='learning curves of both variants'" in lead
    dims = {v: json.loads((out / f"variants/dimension-{v}.json").read_text()) for v in ("default", "fss")}
    for v, doc in dims.items():  # each d is in the text, as measured (not a number written into the code)
        assert doc["channels"] == ("top" if v == "default" else "net")
        assert f"d = {doc['estimators']['twonn']['d']:.1f}" in lead
    points = pd.read_csv(out / "variants" / "points.csv")
    assert set(points["variant"]) == {"default", "fss"} and set(points["family"]) == {"fcn"}
    assert "two dataset variants" in r.stdout

    # Re-running reuses everything: no new training rows, the noise table and the figure are not rewritten.
    stamps = {p: (out / p).stat().st_mtime_ns
              for p in ("noise.parquet", "figures/examples.png", "fits.json", "report.html", "fss/fits.json",
                        "fss/report.html", "variants/points.csv", "variants/dimension-fss.json")}
    parts = sorted((out / "results.parquet").glob("part-*"))
    r2 = _cli(*args)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert sorted((out / "results.parquet").glob("part-*")) == parts
    for p, t in stamps.items():
        assert (out / p).stat().st_mtime_ns == t, p
    assert "kept" in r2.stderr

    # --fresh checks the nested variant run and the comparison folder by the same rules: a user's file there
    # stops it; without it, everything the demo wrote goes (the lock files stay, as at the top).
    from moirescale.use.demo import _fresh

    for planted in ("variants/notes.md", "fss/figures/mine.png", "fss/thesis.tex"):
        (out / planted).write_text("precious")
        with pytest.raises(UserError, match="did not write"):
            _fresh(out)
        assert (out / planted).read_text() == "precious" and (out / "variants" / "points.csv").exists()
        (out / planted).unlink()
    _fresh(out)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert set(left) <= {".moirescale-demo", ".sweep.lock", "fss", "fss/.sweep.lock"}, left


def test_demo_bad_config_exits_2(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ngrids: []\n")
    r = _cli("demo", "--out", tmp_path / "run", "--config", tmp_path / "bad.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_make_demo_sized_run(tmp_path):
    """The real demo (configs/demo.yaml) into a fresh run directory; its wall time is the ≤ 15 min budget."""
    import time

    t0 = time.perf_counter()
    r = _cli("demo", "--out", tmp_path / "demo", timeout=3600, cwd=ROOT)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "demo" / "report.html").is_file()
    print(f"demo wall time {wall / 60:.1f} min")
