"""Hostile input, second round (issue 29): nothing deleted that the tool did not write, no directory link
followed, every input bounded, every file read back validated as a whole.

Each bad input ends with one :class:`UserError` (one line and exit 2 on the command line) and leaves the file
system as it found it. Kept fast: in-process calls, the session's tiny store, at most one tiny training.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moirescale import fsio, results
from moirescale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "dataset-tiny.yaml"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (links not followed) with its size and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st_ = p.lstat()
        out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def _run_cli(*args) -> tuple[int, str]:
    """``moirescale ARGS`` in this process: (exit code, stderr). Any other exception is a traceback."""
    import io
    import sys

    from moirescale.cli import main

    err = io.StringIO()
    argv, sys.argv = sys.argv, ["moirescale", *map(str, args)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


def _refused(result: tuple[int, str], match: str = "") -> str:
    code, err = result
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err[-2000:])
    assert match in lines[0], lines[0]
    return lines[0]


def _sweep_doc(store: Path, **grid) -> dict:
    g = {"name": "g", "model": {"arch": "fcn", "n_layers": 1, "width": 4}, "n_train": [32], "targets": ["J"],
         "realizations": 1, "train": {"schedule": "constant", "max_epochs": 1, "batch_size": 16}}
    g.update(grid)
    return {"name": "hostile2", "seed": 0, "dataset": {"store": str(store)}, "grids": [g]}


def _demo_dir(tmp_path: Path) -> Path:
    """A demo run directory holding one file of each kind the demo writes."""
    from moirescale.use.demo import claim_rundir

    out = tmp_path / "demo"
    claim_rundir(out)
    for rel in ("config.yaml", "report.html", "fits.json", "noise.parquet", "logs/sweep.log",
                "checkpoints/0123456789abcdef-r0000.pt", f"results.parquet/part-{'a' * 32}.parquet",
                "figures/examples.png", "figures/fig1_data_scaling.svg"):
        (out / rel).parent.mkdir(exist_ok=True)
        (out / rel).write_text("made by the demo")
    return out


# ------------------------------------------------------------------------------ 1. deleting what is ours
@pytest.mark.parametrize("planted", ["figures/my_plot.png", "checkpoints/my_best/w.pt", "logs/notebook.md",
                                     "results.parquet/mine.csv", ".bashrc", "checkpoints/.tmp-mine"])
def test_fresh_refuses_a_users_file_anywhere_in_the_tree(tmp_path, planted):
    """Regression: --fresh checked top-level names only; a user's file in figures/ or checkpoints/ went."""
    from moirescale.use.demo import _fresh

    out = _demo_dir(tmp_path)
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).write_text("precious")
    before = _snapshot(out)
    with pytest.raises(UserError, match="did not write"):
        _fresh(out)
    assert _snapshot(out) == before


def test_fresh_refuses_a_copied_marker(tmp_path):
    """Regression: a marker copied into a user's folder made --fresh delete the user's logs/."""
    from moirescale.use.demo import MARKER, _fresh

    out = _demo_dir(tmp_path)
    mine = tmp_path / "mine"
    (mine / "logs").mkdir(parents=True)
    (mine / "logs" / "sweep.log").write_text("my own log")
    shutil.copy(out / MARKER, mine / MARKER)
    before = _snapshot(mine)
    with pytest.raises(UserError, match="not a demo run directory"):
        _fresh(mine)
    assert _snapshot(mine) == before
    copy = tmp_path / "copy"  # a copied tree is another directory too
    shutil.copytree(out, copy)
    with pytest.raises(UserError, match="not a demo run directory"):
        _fresh(copy)


def test_fresh_refuses_while_a_sweep_holds_its_lock(tmp_path):
    """Regression: --fresh on a directory a sweep was writing deleted its results under it."""
    from moirescale.use.demo import _fresh

    out = _demo_dir(tmp_path)
    (out / ".sweep.lock").write_text("pid 1\n")
    before = _snapshot(out)
    with open(out / ".sweep.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="a sweep is running"):
            _fresh(out)
    assert _snapshot(out) == before
    _fresh(out)  # the lock released: the demo's files go, the marker and lock stay
    assert sorted(p.name for p in out.iterdir()) == [".moirescale-demo", ".sweep.lock"]


def test_fresh_never_removes_the_tree_holding_the_working_directory(tmp_path, monkeypatch):
    from moirescale.use.demo import _fresh

    out = _demo_dir(tmp_path)
    before = _snapshot(out)
    monkeypatch.chdir(out / "figures")
    with pytest.raises(UserError, match="current or home directory"):
        _fresh(out)
    assert _snapshot(out) == before


def test_fresh_removes_its_own_files_temps_and_links_only(tmp_path):
    from moirescale.use.demo import MARKER, _fresh

    out = _demo_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    (out / "figures" / "fig5_alpha_vs_size.png").symlink_to(victim / "keep")
    (out / "logs" / ".tmp-sweep.log.abcd1234.log").write_text("a killed writer's")
    _fresh(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    assert (victim / "keep").read_text() == "precious"


def test_a_directory_with_only_dotfiles_is_not_empty(tiny_store, tmp_path):
    """Regression: a folder holding only .bashrc, .ssh/ and .git/ counted as empty: generate wrote a store
    there (deleting a user's .tmp-* file), and a sweep adopted it."""
    from moirescale.use.demo import MARKER, claim_rundir

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("alias x=y\n")
    (home / ".tmp-draft").write_text("my draft")
    before = _snapshot(home)
    _refused(_run_cli("generate", "--config", TINY, "--out", home, "--no-progress"), "not empty")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(_sweep_doc(tiny_store)))
    _refused(_run_cli("sweep", cfg, "--out", home, "--dry-run"), "not a sweep run directory")
    _refused(_run_cli("sweep", cfg, "--out", home, "--no-progress"), "not a sweep run directory")
    claim_rundir(home)
    assert not (home / MARKER).exists()
    assert _snapshot(home) == before


def test_stale_temps_are_removed_by_their_exact_names_only(tmp_path):
    """Regression: a resume removed every `.tmp-*` name, a user's `.tmp-notes` included."""
    names = {"mine": ".tmp-notes", "ours": ".tmp-manifest.json.k3j_x9a0.json",
             "other": ".tmp-thesis.tex.abcdefgh.tex", "short": ".tmp-manifest.json.x"}
    for n in names.values():
        (tmp_path / n).write_text("x")
        os.utime(tmp_path / n, (1, 1))
    assert fsio.remove_stale_temps(tmp_path, {"manifest.json"}.__contains__) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "ours")
    link = tmp_path / "link"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / ".tmp-manifest.json.k3j_x9a0.json").write_text("x")
    os.utime(victim / ".tmp-manifest.json.k3j_x9a0.json", (1, 1))
    link.symlink_to(victim)
    assert fsio.remove_stale_temps(link, lambda _: True) == 0 and len(list(victim.iterdir())) == 1


# ------------------------------------------------------------------------- 3. links planted as folders
def test_real_dir_refuses_a_link_at_any_component(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "run"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(victim)
    with pytest.raises(UserError, match="is a link"):
        fsio.real_dir(root, "a", "b", "c")
    assert not (victim / "c").exists()
    (root / "f").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        fsio.real_dir(root, "f")
    assert fsio.real_dir(root, "a", "new") == root / "a" / "new" and (root / "a" / "new").is_dir()


def test_results_never_written_through_a_planted_folder_link(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / results.TABLE_NAME).symlink_to(victim)
    with pytest.raises(UserError, match="is a link"):
        results.append_rows(run, [{"run_id": "x", "status": "ok"}])
    with pytest.raises(UserError, match="is a link"):
        results.check_appendable(run)
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize("folder", ["logs", "checkpoints", "results.parquet"])
def test_sweep_refuses_a_link_planted_as_a_folder(tiny_store, tmp_path, folder):
    """Regression: RUNDIR/logs as a link made the sweep append to the user's own sweep.log; checkpoints/ or
    results.parquet/ as a link made a resume delete `.tmp-*` files in the target."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "sweep.log").write_text("my log\n")
    (victim / ".tmp-x.pt.abcdefgh.pt").write_text("mine")
    os.utime(victim / ".tmp-x.pt.abcdefgh.pt", (1, 1))
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(_sweep_doc(tiny_store)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(cfg.read_text())
    (run / folder).symlink_to(victim)
    before = _snapshot(victim)
    _refused(_run_cli("sweep", cfg, "--out", run, "--no-progress"), "link")
    assert _snapshot(victim) == before


def test_a_link_loop_as_out_is_one_line(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump(_sweep_doc(tmp_path / "store")))
    _refused(_run_cli("generate", "--config", TINY, "--out", tmp_path / "a"))
    _refused(_run_cli("sweep", cfg, "--out", tmp_path / "a", "--dry-run"))


# ---------------------------------------------------------------------------------- 2. bounded inputs
def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


BAD_CONFIGS = {
    "empty": ("", "empty"),
    "comments only": ("# nothing\n", "empty"),
    "a list": ("- 1\n- 2\n", "mapping"),
    "a scalar": ("42\n", "mapping"),
    "duplicate key": ("seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    "deep nesting": ("a: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    "alias bomb": (_alias_bomb(), "aliases are expanded"),
    "too big": ("#" * (2 << 20) + "\n", "above the limit"),
    "binary": ("\udcff", "text"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_configs_are_bounded_and_must_be_a_mapping(tmp_path, name):
    """Regression: an empty dataset YAML was all defaults (a 157 696-image store); a second `grids:` replaced
    the first; deeply nested YAML was a RecursionError."""
    from moirescale.data.config import load_config as load_dataset
    from moirescale.sweep.config import load_config as load_sweep

    text, match = BAD_CONFIGS[name]
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    for load in (load_dataset, load_sweep):
        with pytest.raises(UserError, match=match):
            load(p)


def test_duplicate_grids_key_is_refused(tiny_store, tmp_path):
    text = yaml.safe_dump(_sweep_doc(tiny_store))
    p = tmp_path / "s.yaml"
    p.write_text(text + "grids: []\n")
    _refused(_run_cli("sweep", p, "--out", tmp_path / "run", "--dry-run"), "duplicate key 'grids'")
    assert not (tmp_path / "run").exists()


def test_a_device_as_config_is_refused_before_reading():
    """Regression: `generate --config /dev/zero` read until the kernel killed it."""
    t0 = time.monotonic()
    _refused(_run_cli("generate", "--config", "/dev/zero", "--out", "/nonexistent/x"), "not a regular file")
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("model, reals, match", [
    ({"arch": "fcn", "n_layers": 1, "width": list(range(1, 10_001))}, 1, "grid points"),
    ({"arch": "fcn", "n_layers": list(range(1, 1001)), "width": list(range(1, 1001))}, 8000, "grid points"),
    ({"arch": "fcn", "n_layers": [1, 2], "width": list(range(1, 201))}, 1000, "networks"),
])
def test_grids_are_counted_before_they_are_expanded(tiny_store, model, reals, match):
    """Regression: a million-point grid did not answer a dry run in a minute; 8e9 networks: MemoryError."""
    from moirescale.sweep.config import parse_config

    t0 = time.monotonic()
    with pytest.raises(UserError, match=match):
        parse_config(_sweep_doc(tiny_store, model=model, realizations=reals))
    assert time.monotonic() - t0 < 5


def test_cli_maxima_are_bounded_by_this_machine():
    from moirescale.sweep.plan import SweepOptions
    from moirescale.use.noise import noise_settings

    with pytest.raises(UserError, match="--workers 1000"):
        SweepOptions(workers=1000)
    with pytest.raises(UserError, match="--retries"):
        SweepOptions(retries=10**9)
    assert SweepOptions(executor="ray", workers=1000).workers == 1000
    with pytest.raises(UserError, match="--levels: 15000 values"):
        noise_settings([0.1] * 15_000, [])
    _refused(_run_cli("generate", "--config", TINY, "--out", "/nonexistent/x", "--workers", "1000"),
             "--workers")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
                    lambda kids: st.one_of(st.lists(kids, max_size=4),
                                           st.dictionaries(st.text(max_size=4), kids, max_size=4)),
                    max_leaves=30))
def test_property_any_yaml_document_is_a_config_or_one_error(doc):
    """Any YAML document: a parsed mapping or one UserError, never another exception."""
    from moirescale.readback import parse_yaml

    text = yaml.safe_dump(doc)
    with contextlib.suppress(UserError):
        assert parse_yaml(text, "x.yaml") == doc


# ------------------------------------------------------------------------ 4. files read back, as a whole
def _store_copy(tiny_store: Path, tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    return root, json.loads((root / "manifest.json").read_text())


MANIFEST_DAMAGE = {
    "missing shard_size": (lambda m: m.pop("shard_size"), "shard_size"),
    "mistyped shard_size": (lambda m: m.update(shard_size="32"), "shard_size"),
    "zero shard_size": (lambda m: m.update(shard_size=0), "shard_size"),
    "shard outside the store": (lambda m: m["shards"][0].update(file="../elsewhere/train-00000.h5"), "file"),
    "absolute shard": (lambda m: m["shards"][0].update(file="/etc/passwd"), "file"),
    "count of zero": (lambda m: m["shards"][0].update(count=0), "count"),
    "negative n": (lambda m: m["splits"]["train"].update(n=-5), "n"),
    "split missing": (lambda m: m["splits"].pop("val"), "splits"),
    "image_shape of two": (lambda m: m.update(image_shape=[2, 32]), "image_shape"),
    "NaN bounds": (lambda m: m["label_bounds"].update(J=[float("nan"), 1.0]), "manifest"),
    "inverted bounds type": (lambda m: m["label_bounds"].update(J="wide"), "label_bounds"),
    "shard listed twice": (lambda m: m["shards"].append(dict(m["shards"][0])), "twice"),
    "samples beyond the split": (lambda m: m["shards"][0].update(start=10**6), "beyond"),
    "sha256 not hex": (lambda m: m["shards"][0].update(sha256="zz"), "sha256"),
}


@pytest.mark.parametrize("name", list(MANIFEST_DAMAGE))
def test_manifest_is_validated_as_a_whole(tiny_store, tmp_path, name):
    """Regression: a manifest with a missing or mistyped key was a KeyError or ZeroDivisionError, and `data
    verify` passed a manifest whose shard lay outside the store."""
    from moirescale.data.store import open_store, verify_store

    root, m = _store_copy(tiny_store, tmp_path)
    damage, match = MANIFEST_DAMAGE[name]
    damage(m)
    (root / "manifest.json").write_text(json.dumps(m))
    for fn in (open_store, verify_store):
        with pytest.raises(UserError, match=match):
            fn(root)
    _refused(_run_cli("data", "verify", root), "manifest.json")


def test_a_shard_replaced_by_hdf5_of_another_shape_is_refused(tiny_store, tmp_path):
    """Regression: a valid HDF5 file of another shape in a shard's place was a shape-mismatch traceback."""
    from moirescale.data.store import open_store

    root, m = _store_copy(tiny_store, tmp_path)
    rec = m["shards"][0]
    with h5py.File(root / rec["file"], "w") as f:
        f["images"] = np.zeros((rec["count"], 1, 8, 8), np.int16)
        f["labels"] = np.zeros((rec["count"], 3))
        f["seeds"] = np.arange(rec["count"], dtype=np.int64)
        f["energies"] = np.zeros(rec["count"])
    blob = (root / rec["file"]).read_bytes()
    rec.update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest())  # the manifest tampered to match
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="not the one its manifest lists"):
        open_store(root, checksum=False).read(rec["split"], [0])


def test_results_part_with_null_columns_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / results.TABLE_NAME
    folder.mkdir()
    rows = [{"run_id": None, "status": "ok"}, {"run_id": "a", "status": None}]
    pq.write_table(pa.Table.from_pylist(rows, schema=results.SCHEMA), folder / f"part-{'b' * 32}.parquet")
    with pytest.raises(UserError, match="without a run id"):
        results.read_results(tmp_path)


def test_checkpoint_paths_stay_inside_the_run_directory(tmp_path):
    """Regression: a results row's `checkpoint` leading outside the run directory was loaded."""
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"x")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "link.pt").symlink_to(outside)
    for ck in ("../elsewhere.pt", str(outside), "checkpoints/link.pt"):
        df = pd.DataFrame([{"run_id": "a", "status": "ok", "checkpoint": ck}])
        with pytest.raises(UserError, match="outside the run directory"):
            results.checkpointed_rows(df, run)


def test_checkpoint_metadata_outputs_and_weights_are_checked():
    import torch

    from moirescale.models import create_model
    from moirescale.use.predict import check_checkpoint

    model = create_model("fcn", (1, 8, 8), 1, n_layers=1, width=4)
    meta = {"in_shape": [1, 8, 8], "n_outputs": 1}
    check_checkpoint("ok.pt", model, meta)
    for bad, match in (({"in_shape": [1, -8, 8]}, "input shape"), ({"in_shape": "abc"}, "input shape"),
                       ({"n_outputs": 7}, "outputs"), ({"n_outputs": None}, "outputs")):
        with pytest.raises(UserError, match=match):
            check_checkpoint("bad.pt", model, {**meta, **bad})
    with torch.no_grad():
        next(iter(model.parameters()))[0, 0] = float("nan")
    with pytest.raises(UserError, match="not all finite"):
        check_checkpoint("nan.pt", model, meta)


def test_predict_json_is_strict():
    """Regression: `predict --json` printed a bare NaN (not JSON)."""
    from moirescale.use.predict import InputImage, Prediction, to_json

    p = Prediction("J", float("nan"), float("inf"), "meV", 1, "fcn", 4, 1, "J", 32, 1, float("nan"),
                   [float("nan")])
    inp = InputImage(np.zeros((1, 8, 8), np.float32), source="x.npy")
    doc = json.loads(to_json([p], inp), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert doc["prediction"]["J"]["value"] is None


def test_heartbeat_and_dataset_record_are_validated_as_a_whole(tmp_path):
    """Regression: a tampered heartbeat.json (started_at garbage) or dataset.json was a traceback."""
    from moirescale.rundir import read_dataset
    from moirescale.sweep.status import read_heartbeat

    good = {"pid": 1, "host": "h", "executor": "local", "workers": 1,
            "started_at": "2026-01-01T00:00:00+00:00", "updated_unix": time.time(), "finished": False,
            "queued": 0,
            "running": [{"grid": "g", "run_ids": ["a"], "since": 1.0}]}
    (tmp_path / "heartbeat.json").write_text(json.dumps(good))
    assert read_heartbeat(tmp_path)["pid"] == 1
    for bad in ({"started_at": "garbage"}, {"running": [{"grid": "g"}]}, {"workers": "many"},
                {"updated_unix": None}, {"pid": True}):
        (tmp_path / "heartbeat.json").write_text(json.dumps({**good, **bad}))
        assert read_heartbeat(tmp_path) is None
    ds = {"store": "/s", "splits": {"train": 1, "val": 1, "test": 1}, "image_shape": [2, 8, 8],
          "config_hash": "h"}
    (tmp_path / "dataset.json").write_text(json.dumps(ds))
    assert read_dataset(tmp_path) == ds
    for bad in ({"store": 1}, {"image_shape": [2, 8]}, {"splits": {"train": -1}}, {"config_hash": 5}):
        (tmp_path / "dataset.json").write_text(json.dumps({**ds, **bad}))
        with pytest.raises(UserError, match="dataset record"):
            read_dataset(tmp_path)


def test_noise_table_is_validated_as_a_whole(tmp_path):
    from moirescale.use.noise import read_noise

    pd.DataFrame({"run_id": ["a"], "mse": [1.0]}).to_parquet(tmp_path / "noise.parquet")
    with pytest.raises(UserError, match="noise table"):
        read_noise(tmp_path)


def test_train_out_is_never_the_dataset_store(tiny_store, tmp_path):
    """Issue 29: `train --out` accepted the store itself and wrote results.parquet and checkpoints among its
    shards. The store, a folder inside it and a folder holding a store manifest are refused; none written."""
    import shutil
    import subprocess
    import sys

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    before = sorted(p.name for p in store.iterdir())
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(store / "manifest.json", other / "manifest.json")
    for out in (store, store / "runs", other):
        r = subprocess.run([sys.executable, "-m", "moirescale.cli", "train", "--data", str(store), "--out",
                            str(out), "--n-train", "16", "--no-progress"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "dataset store" in r.stderr
    assert sorted(p.name for p in store.iterdir()) == before
    assert sorted(p.name for p in other.iterdir()) == ["manifest.json"]
