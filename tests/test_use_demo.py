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


def _tiny_config(path: Path, store: Path) -> Path:
    cfg = {
        "name": "demo-test",
        "seed": 0,
        "dataset": {"store": str(store)},
        "recipes": {"fcn": {"schedule": "constant", "max_epochs": 4, "batch_size": 16, "channels": "top"}},
        "grids": [{
            "name": "fcn", "model": {"arch": "fcn", "n_layers": 2, "width": [4, 16]},
            "n_train": {"values": [32, 64, 128]}, "targets": ["theta"], "realizations": 2,
        }],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


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
        {"variable": "n_params", "target": "J", "alpha": 0.3},
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
        run_demo(".", cfg, fresh=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a demo run directory"):
        run_demo(tmp_path / "mine", cfg, fresh=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="no such sweep config"):
        run_demo(tmp_path / "out", tmp_path / "missing.yaml")


def test_demo_end_to_end_and_resume(tiny_store, tmp_path):
    cfg = _tiny_config(tmp_path / "demo.yaml", tiny_store)
    out = tmp_path / "run"
    r = _cli("demo", "--out", out, "--config", cfg, "--noise-n-test", "16")
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

    # Re-running reuses everything: no new training rows, the noise table and the figure are not rewritten.
    stamps = {p: (out / p).stat().st_mtime_ns
              for p in ("noise.parquet", "figures/examples.png", "fits.json", "report.html")}
    parts = sorted((out / "results.parquet").glob("part-*"))
    r2 = _cli("demo", "--out", out, "--config", cfg, "--noise-n-test", "16")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert sorted((out / "results.parquet").glob("part-*")) == parts
    for p, t in stamps.items():
        assert (out / p).stat().st_mtime_ns == t, p
    assert "kept" in r2.stderr


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
