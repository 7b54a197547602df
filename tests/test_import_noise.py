"""Labels of any name everywhere (issue 26, the rest): ``noise`` on a run trained on an imported store, the
noise table's seed and store, and the sweep planner's outputs for ``targets: [all]`` on an imported store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from moirescale.data.importer import import_store
from moirescale.errors import UserError
from moirescale.results import append_rows, read_results
from test_import import write_pngs


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory):
    """A 2-label imported store (brightness, period) and a run of tiny networks on it (one target each)."""
    from moirescale.train import TrainSpec, run_spec

    root = tmp_path_factory.mktemp("imp")
    write_pngs(root / "imgs", n=60, size=8)
    store = import_store(root / "imgs", root / "labels.csv", root / "store", val="10", test="12", seed=1)
    run = root / "run"
    for target in ("period", "all"):
        spec = TrainSpec("fcn", target, 24, realizations=(0,), model_kw={"n_layers": 1, "width": 4},
                         schedule="constant", max_epochs=2, batch_size=8, channels="gray")
        append_rows(run, run_spec(spec, store, run, device="cpu", progress=False))
    return root, store, run


def test_noise_on_imported_store_names_its_labels(imported_run, tmp_path):
    from moirescale.use.noise import evaluate_noise, read_noise, summarize_noise

    _, store, trained = imported_run
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    t = evaluate_noise(run, store, levels=(0.2,), flips=(0.1,), seed=5)
    assert len(t) == 2 * 4 and set(t["target"]) == {"period", "all"}
    per = [json.loads(s) for s in t["mse_labels"]]
    for p, target, mse in zip(per, t["target"], t["mse"], strict=True):
        assert set(p) == ({"period"} if target == "period" else {"brightness", "period"})
        assert np.mean(list(p.values())) == pytest.approx(mse)
    assert t[["mse_theta", "mse_J", "mse_D"]].isna().all().all()  # θ, J, D belong to simulated stores
    assert set(t["noise_seed"]) == {5} and t["store_hash"].nunique() == 1
    assert read_noise(run).equals(t)
    s = summarize_noise(t, print_table=False)
    assert set(s["target"]) == {"period", "all"}
    # the same seed and store resume (nothing to add); another seed or store is refused, the table untouched
    before = (run / "noise.parquet").read_bytes()
    assert len(evaluate_noise(run, store, levels=(0.2,), flips=(0.1,), seed=5)) == 8
    r = cli("noise", run, "--store", store, "--levels", "0.2", "--flip", "0.1", "--seed", "6")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "noise seed 5, now 6" in lines[0], r.stderr
    other = import_store(store.parent / "imgs", store.parent / "labels.csv", tmp_path / "other", val="10",
                         test="12", seed=2)
    with pytest.raises(UserError, match="another store"):
        evaluate_noise(run, other, levels=(0.2,), flips=(0.1,), seed=5)
    assert (run / "noise.parquet").read_bytes() == before


def test_old_noise_table_stays_readable(tmp_path):
    """A table written before mse_labels / noise_seed / store_hash: read with those null, and extendable."""
    from moirescale.use.noise import NOISE_COLUMNS, _check_same_noise, read_noise

    old = [c for c in NOISE_COLUMNS if c not in ("mse_labels", "noise_seed", "store_hash")]
    row = {"run_id": "a", "arch": "fcn", "width": 8, "n_layers": 2, "target": "J", "n_train": 64,
           "realization": 0, "noise_kind": "gaussian", "noise_level": 0.0, "mse": 0.01, "mse_theta": np.nan,
           "mse_J": 0.01, "mse_D": np.nan, "n_test": 16}
    pd.DataFrame([row], columns=old).to_parquet(tmp_path / "noise.parquet")
    t = read_noise(tmp_path)
    assert list(t.columns) == NOISE_COLUMNS and t["mse_J"].iloc[0] == 0.01
    assert t[["mse_labels", "noise_seed", "store_hash"]].isna().all().all()
    _check_same_noise(tmp_path, t, 3, "abc", tmp_path)  # rows that record neither are not refused


def test_sweep_plan_outputs_of_all_on_imported_store(imported_run, tmp_path):
    """The dry run resolves `targets: [all]` with the store's 2 labels: its N_M is the trained network's."""
    from moirescale.sweep.runner import preflight
    from moirescale.sweep.worker import failed_rows

    _, store, trained = imported_run
    doc = {"name": "imp", "seed": 0, "dataset": {"store": str(store)},
           "grids": [{"name": "g", "model": {"arch": "fcn", "n_layers": 1, "width": 4}, "n_train": [24],
                      "targets": ["all"], "realizations": 1,
                      "train": {"schedule": "constant", "max_epochs": 2, "batch_size": 8,
                                "channels": "gray"}}]}
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    _, _, plan = preflight(cfg, tmp_path / "run")
    (rs,) = plan.resolved.values()
    df = read_results(trained)
    n_params = int(df.loc[df["target"] == "all", "n_params"].iloc[0])
    assert rs.label_names == ("brightness", "period") and rs.n_params == n_params
    assert plan.facts.label_names == ("brightness", "period")
    (row,) = failed_rows(rs.spec, plan.of(rs.spec), "boom")
    assert row["status"] == "failed" and row["target"] == "all"
    args = [sys.executable, "-m", "moirescale.cli", "sweep", str(cfg), "--out", str(tmp_path / "run"),
            "--dry-run"]
    wide = {**os.environ, "COLUMNS": "200"}  # the whole table, unwrapped
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=wide)
    assert r.returncode == 0, r.stderr
    assert f"{n_params:.2g}–{n_params:.2g}" in r.stdout  # N_M range of the grid (3 outputs: 2.8e+02)
    r = cli("sweep", cfg, "--out", tmp_path / "run", "--no-progress", "--workers", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert read_results(tmp_path / "run")["n_params"].tolist() == [n_params]
    info = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert info["label_names"] == ["brightness", "period"]



def test_titles_and_help_name_the_stores_labels(imported_run):
    """`data show` panels and `predict --help` speak of the store's own channels and labels."""
    from typer.testing import CliRunner

    from moirescale.cli import app
    from moirescale.data.show import channel_titles, label_text
    from moirescale.data.store import open_store, read_manifest

    _, store, _ = imported_run
    assert channel_titles(read_manifest(store), 1) == ["gray"]
    assert label_text(open_store(store), [100.0, 3.0]) == "brightness = 100   period = 3"
    simulated = {"image_channels": ["top", "bottom"]}  # no pixel_map: a simulated store keeps its wording
    assert channel_titles(simulated, 2) == ["top layer $S_z$", "bottom layer $S_z$"]
    r = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "Predict an image's labels" in r.output
    assert "imported store's own names" in r.output and "Predict theta, J and D" not in r.output
