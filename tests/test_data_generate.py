"""Generation: config validation, CLI exit codes, resume after SIGKILL (byte-identical), idempotence."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from moirescale.data.config import load_config, validate_config
from moirescale.data.generate import generate, new_manifest, sample_labels, sample_seeds
from moirescale.data.show import plot_sample
from moirescale.data.store import open_store, verify_store
from moirescale.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "dataset-tiny.yaml"


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moirescale.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def store_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


# ---------------------------------------------------------------------------------------------------- config
def test_default_configs_validate():
    cfg, runtime = load_config(ROOT / "configs" / "dataset.yaml")
    assert (cfg.splits.train, cfg.splits.val, cfg.splits.test) == (114688, 14336, 28672)
    assert cfg.labels.theta == (0.5, 2.0) and cfg.labels.J == (0.2, 1.0) and cfg.labels.D == (0.0, 1.0)
    assert cfg.image["size_px"] == 100 and cfg.protocol["n_anneal"] == 200
    tiny, _ = load_config(TINY, {"splits.train": 5})
    assert tiny.splits.train == 5 and tiny.image["size_px"] == 32


@pytest.mark.parametrize(("raw", "where"), [
    ({"splitz": {}}, "splitz: unknown key"),
    ({"splits": {"train": -1}}, "splits.train"),
    ({"splits": {"train": "many"}}, "splits.train"),
    ({"shard_size": 0}, "shard_size"),
    ({"labels": {"theta": [2.0, 1.0]}}, "labels.theta"),
    ({"labels": {"J": [0.2, "x"]}}, "labels.J"),
    ({"image": {"size_pix": 32}}, "image.size_pix: unknown key"),
    ({"image": {"size_px": "big"}}, "image.size_px"),
    ({"protocol": {"n_anneal": -1}}, "protocol"),
    ({"backend": "gpu-please"}, "backend"),
    ({"splits": {"train": 0, "val": 0, "test": 0}}, "splits"),
])
def test_bad_config_names_the_key(raw, where):
    with pytest.raises(UserError, match=f"^c.yaml: {where}"):
        validate_config(raw, "c.yaml")


def test_seed_streams_and_labels():
    tr, va = sample_seeds(0, "train", 0, 5), sample_seeds(0, "val", 0, 5)
    assert tr.tolist() == [0, 1, 2, 3, 4] and va[0] == 10**10
    assert sample_seeds(2, "test", 7, 1)[0] == 2 * 10**11 + 2 * 10**10 + 7
    ranges = {"theta": (0.5, 2.0), "J": (0.2, 1.0), "D": (0.0, 1.0)}
    y = sample_labels(np.arange(2000), ranges)
    assert y.shape == (2000, 3)
    for j, (lo, hi) in enumerate(ranges.values()):
        assert lo <= y[:, j].min() < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < y[:, j].max() <= hi
    # Each sample's labels come from its own seed, whatever batch it is drawn in.
    np.testing.assert_array_equal(sample_labels(np.arange(10, 20), ranges), y[10:20])


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_bad_inputs_exit_2(tmp_path):
    # Each CLI start costs seconds (it imports every package), so only a few cases run through it; the
    # rest check the UserError that the CLI turns into exit code 2.
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("splits: {train: 3\n")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["--config", TINY, "--out", tmp_path / "o2", "--n-train", "-5"], "--pool must be >= 0"),  # old name
        (["--config", TINY, "--out", tmp_path / "o2", "--pool", "-5"], "--pool must be >= 0"),
        (["--config", TINY, "--out", a_file / "sub"], "cannot create output directory"),
    ]
    for args, msg in cases:
        r = cli("generate", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], r.stderr
    assert not (tmp_path / "o2").exists()
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="not valid YAML at line 2"):
        load_config(bad_yaml)
    with pytest.raises(UserError, match="not a directory"):
        generate(load_config(TINY)[0], a_file, progress=False)
    for kw in ({"workers": 0}, {"batch_size": -1}):
        with pytest.raises(UserError):
            generate(load_config(TINY)[0], tmp_path / "o3", progress=False, **kw)


def test_foreign_config_refused_and_nonempty_dir_refused(tiny_store, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(tiny_store, root)
    before = store_bytes(root)
    r = cli("generate", "--config", TINY, "--out", root, "--seed", "1", "--no-progress")
    assert r.returncode == 2 and "different config" in r.stderr and "seed" in r.stderr, r.stderr
    assert store_bytes(root) == before
    with pytest.raises(UserError, match=r"different config \(differs in: splits.train"):
        generate(load_config(TINY, {"splits.train": 64})[0], root, progress=False)
    assert store_bytes(root) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate(load_config(TINY)[0], other, progress=False)
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_verify_and_show(tiny_store, tmp_path):
    r = cli("data", "verify", tiny_store)
    assert r.returncode == 0 and "OK" in r.stdout
    png = tmp_path / "x.png"
    r = cli("data", "show", tiny_store, "--split", "test", "--index", "5", "--out", png)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    root = tmp_path / "s"
    shutil.copytree(tiny_store, root)
    with open(root / "train-00003.h5", "r+b") as f:
        f.truncate(1000)
    r = cli("data", "verify", root)
    assert r.returncode == 1 and "train-00003.h5" in r.stderr and "truncated" in r.stderr, r.stderr
    with pytest.raises(UserError, match="out of range"):
        plot_sample(open_store(tiny_store), "test", 32, png)
    with pytest.raises(UserError, match="no manifest.json"):
        verify_store(tmp_path)


# ---------------------------------------------------------------------------------------------------- resume
def _reference(tiny_store: Path, tmp_path: Path) -> Path:
    """An uninterrupted run of the tiny config: the shared fixture unless it was made from another config."""
    m = json.loads((Path(tiny_store) / "manifest.json").read_text())
    cfg = load_config(TINY)[0]
    if m["config_hash"] == new_manifest(cfg)["config_hash"]:
        return Path(tiny_store)
    return generate(cfg, tmp_path / "reference", progress=False)


def test_sigkill_then_resume_is_byte_identical(tiny_store, tmp_path):
    ref = _reference(tiny_store, tmp_path)
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "moirescale.cli", "generate", "--config", str(TINY), "--out", str(out),
            "--workers", "1", "--batch-size", "4", "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:  # kill as soon as one shard is recorded: mid-way through the next one
                if json.loads((out / "manifest.json").read_text())["shards"]:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        assert proc.poll() is None, f"generation ended before it could be killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    m = json.loads((out / "manifest.json").read_text())
    assert not m["complete"] and 1 <= len(m["shards"]) < 6
    with pytest.raises(UserError, match="incomplete"):
        open_store(out)
    generate(load_config(TINY)[0], out, progress=False)  # the same command, rerun (in-process: faster)
    assert not list(out.glob(".tmp-*"))
    assert store_bytes(out) == store_bytes(ref)
    assert verify_store(out) == []


def test_resume_adopts_renamed_shard_and_remakes_lost_one(tiny_store, tmp_path):
    ref = _reference(tiny_store, tmp_path)
    out = tmp_path / "s"
    shutil.copytree(ref, out)
    m = json.loads((out / "manifest.json").read_text())
    # Killed after renaming val-00000.h5 into place but before recording it; test-00000.h5 was never made.
    m["shards"] = [r for r in m["shards"] if r["split"] == "train"]
    m["complete"] = False
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "test-00000.h5").unlink()
    (out / ".tmp-test-00000.h5.12345").write_bytes(b"half a shard")
    kept = (out / "val-00000.h5").stat().st_mtime_ns
    generate(load_config(TINY)[0], out, progress=False)
    assert (out / "val-00000.h5").stat().st_mtime_ns == kept  # adopted, not simulated again
    assert store_bytes(out) == store_bytes(ref)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    generate(load_config(TINY)[0], out, progress=False)  # complete store: nothing to do, nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_empty_split_and_overrides(tmp_path):
    cfg, _ = load_config(TINY, {"splits.train": 6, "splits.val": 0, "splits.test": 3, "seed": 5})
    store = open_store(generate(cfg, tmp_path / "s", batch_size=2, progress=False))
    assert [store.split_len(s) for s in ("train", "val", "test")] == [6, 0, 3]
    x, y = store.read("val")
    assert x.shape == (0, 2, 32, 32) and y.shape == (0, 3)
    assert store.read_meta("test")["seeds"].tolist() == [5 * 10**11 + 2 * 10**10 + i for i in range(3)]
    assert verify_store(tmp_path / "s") == []


def test_resume_with_other_simulator_code_refused(tiny_store, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(tiny_store, out)
    m = json.loads((out / "manifest.json").read_text())
    m["code_fingerprint"] = "0" * 64  # as if the physics code had changed since the store was begun
    (out / "manifest.json").write_text(json.dumps(m))
    generate(load_config(TINY)[0], out, progress=False)  # complete: nothing to simulate, accepted
    (out / "val-00000.h5").unlink()
    with pytest.raises(UserError, match="other simulator code"):
        generate(load_config(TINY)[0], out, progress=False)
    assert not (out / "val-00000.h5").exists()


def test_concurrent_generate_refused(tmp_path):
    import fcntl

    out = tmp_path / "s"
    out.mkdir()
    with open(out / ".generate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another `moirescale generate` would
        with pytest.raises(UserError, match="another `moirescale generate` is writing"):
            generate(load_config(TINY)[0], out, progress=False)
    assert not (out / "manifest.json").exists()
