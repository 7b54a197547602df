"""`moirescale train` end to end on the real tiny store (subprocess), run_spec rows and checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moirescale.results import COLUMNS, REQUIRED_COLUMNS, read_results
from moirescale.train import TrainSpec, load_checkpoint, run_spec


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moirescale.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_train_end_to_end(tiny_store, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_store),
        "--model",
        "fcn",
        "--n-layers",
        "2",
        "--width",
        "8",
        "--target",
        "J",
        "--n-train",
        "64",
        "--realizations",
        "3",
        "--out",
        str(out),
        "--schedule",
        "adjustable",
        "--schedule-opt",
        "min_steps=60",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "3 networks (3 ok" in r.stdout
    df = read_results(out)
    assert len(df) == 3 and set(REQUIRED_COLUMNS) <= set(df.columns)
    assert (
        (df["status"] == "ok").all()
        and (df["n_train"] == 64).all()
        and (df["schedule"] == "adjustable").all()
    )
    assert df["test_mse_J"].notna().all() and df["test_mse_D"].isna().all()
    assert sorted(df["realization"]) == [0, 1, 2] and df["run_id"].nunique() == 3
    for ck in df["checkpoint"]:
        assert (out / ck).is_file()
    # The same spec in-process: same run ids, identical test MSE (CPU determinism across processes).
    spec = TrainSpec(
        "fcn",
        "J",
        64,
        realizations=(0, 1, 2),
        model_kw={"n_layers": 2, "width": 8},
        schedule_kw={"min_steps": 60},
        batch_size=16,
    )
    rows = run_spec(spec, tiny_store, tmp_path / "run2", device="cpu", progress=False, checkpoints="none")
    again = {r["run_id"]: r["test_mse"] for r in rows}
    assert again == dict(zip(df["run_id"], df["test_mse"], strict=True))


def test_run_spec_rows_and_checkpoint_roundtrip(tiny_store, tmp_path):
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import load_arrays

    spec = TrainSpec(
        "fcn",
        "all",
        96,
        realizations=(0, 1),
        model_kw={"n_layers": 1, "width": 8},
        channels="both",
        batch_size=32,
        max_epochs=3,
        schedule="cosine",
    )
    rows = run_spec(spec, tiny_store, tmp_path, device="cpu", progress=False)
    assert [set(r) <= set(COLUMNS) for r in rows] == [True, True]
    assert all(r["status"] == "ok" and r["steps"] == 9 and r["epochs"] == 3 for r in rows)
    model, meta = load_checkpoint(tmp_path / rows[0]["checkpoint"])
    assert meta["in_shape"] == [2, 32, 32] and meta["target"] == "all" and meta["channels"] == "both"
    # the MSE units: the store's own label ranges (theta [1.5, 2] in the tiny store, not the global [0.5, 2])
    assert meta["label_ranges"] == {"theta": [1.5, 2.0], "J": [0.2, 1.0], "D": [0.0, 1.0]}
    assert json.dumps(meta)
    st = open_store(tiny_store)
    x, y = load_arrays(st, "test", None, "both")
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).double().numpy()
    per = ((pred - y) ** 2).mean(0)
    for lab, v in zip(("theta", "J", "D"), per, strict=True):
        assert v == pytest.approx(rows[0][f"test_mse_{lab}"], rel=1e-5)


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--model", "mlp"], "unknown model"),
        (["--n-train", "100000"], "larger than the training pool"),
        (["--model", "vit", "--patch", "7"], "must divide the image size"),
    ],
)
def test_cli_bad_input_exit_2(tiny_store, tmp_path, extra, msg):
    base = [
        "train",
        "--data",
        str(tiny_store),
        "--n-train",
        "32",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    r = cli(*base, *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0]
    assert not (tmp_path / "r" / "results.parquet").exists()  # nothing written on bad input


def test_cli_missing_split_or_store_exit_2(tiny_store, tmp_path):
    broken = tmp_path / "store"
    shutil.copytree(tiny_store, broken)
    for f in Path(broken).glob("val-*.h5"):
        f.unlink()
    r = cli("train", "--data", str(broken), "--n-train", "32", "--out", str(tmp_path / "r"), "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing" in r.stderr


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"channels": "all"}, "not in the store"),
        ({"target": "K"}, "unknown target"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"arch": "resnet18", "model_kw": {"depth": 3}}, "no option"),
    ],
)
def test_run_spec_bad_input(tiny_store, tmp_path, kw, msg):
    from moirescale.errors import UserError

    spec = TrainSpec(**{"arch": "fcn", "target": "J", "n_train": 32, **kw})
    with pytest.raises(UserError, match=msg):
        run_spec(spec, tiny_store, tmp_path, device="cpu", progress=False)
    with pytest.raises(UserError):
        run_spec(TrainSpec("fcn", "J", 32), tmp_path / "nope", tmp_path, device="cpu", progress=False)


def test_cli_train_own_data_by_default(tiny_store, tmp_path):
    """`--realizations 8` writes 8 rows trained on 8 different subsets (one data_seed each) by default."""
    out = tmp_path / "run"
    r = cli("train", "--data", str(tiny_store), "--model", "fcn", "--n-layers", "1", "--width", "4",
            "--target", "J", "--n-train", "48", "--realizations", "8", "--out", str(out), "--max-epochs", "2",
            "--batch-size", "16", "--schedule", "constant", "--checkpoints", "none", "--no-progress")
    assert r.returncode == 0, r.stderr
    df = read_results(out)
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert df["data_seed"].nunique() == 8 and df["realization"].nunique() == 8
    assert (df["seed"] == 0).all()


def test_train_prints_its_estimate_and_dry_run_writes_nothing(tiny_store, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_store), "--out", str(out), "--n-layers", "2", "--width", "8",
            "--target", "J", "--n-train", "64", "--realizations", "3", "--batch-size", "16", "--no-progress",
            "--schedule-opt", "min_steps=20", "--schedule-opt", "min_epochs=1"]
    r = cli(*args, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "estimate: 3 networks" in r.stdout and "on 2 CPU cores" in r.stdout
    assert not (out / "results.parquet").exists() and not (out / "checkpoints").exists()
    big = cli(*[a if a != "3" else "300" for a in args], "--dry-run")
    assert "estimate: 300 networks" in big.stdout
    tflop = [float(x.split("networks, ")[1].split(" TFLOP")[0]) for x in (r.stdout, big.stdout)]
    assert tflop[1] == pytest.approx(100 * tflop[0], rel=1e-6)  # the cost scales with the realizations
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "estimate: 3 networks" in r.stdout and (out / "results.parquet").exists()
