"""The dataset store: write -> read round trip, deterministic bytes, reading API, corruption detection."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from moirescale.data.config import validate_config
from moirescale.data.generate import new_manifest, plan_shards
from moirescale.data.store import (
    IMAGE_SCALE,
    decode_images,
    encode_images,
    open_store,
    sha256_file,
    verify_store,
    write_manifest,
    write_shard,
)
from moirescale.data.torch_data import StoreDataset, load_arrays
from moirescale.errors import UserError
from moirescale.labels import LabelScaler


def synthetic_store(root: Path, n=(20, 7, 0), shard_size=8, shape=(2, 6, 5), seed=0):
    """A store written through the store layer from random arrays; returns (root, {split: arrays})."""
    cfg = validate_config({"splits": dict(zip(("train", "val", "test"), n, strict=True)),
                           "shard_size": shard_size, "image": {"size_px": shape[1]}})
    root.mkdir()
    m = new_manifest(cfg)
    rng = np.random.default_rng(seed)
    data: dict[str, dict[str, list]] = {}
    for rec in plan_shards(cfg):
        c = rec["count"]
        arrays = {
            "images": rng.uniform(-1, 1, (c, *shape)).astype(np.float32),
            "labels": np.column_stack([rng.uniform(*m["label_bounds"][k], c) for k in ("theta", "J", "D")]),
            "seeds": np.arange(rec["seed_lo"], rec["seed_hi"] + 1),
            "energies": rng.normal(size=c),
        }
        arrays["images"][0, 0, 0, :2] = [-1.0, 1.0]  # the end points must survive the int16 coding
        m["shards"].append({**rec, **write_shard(root / rec["file"], **arrays)})
        for k, v in arrays.items():
            data.setdefault(rec["split"], {}).setdefault(k, []).append(v)
    m["image_shape"], m["complete"] = list(shape), True
    write_manifest(root, m)
    return root, {s: {k: np.concatenate(v) for k, v in d.items()} for s, d in data.items()}


def test_round_trip_equals_input(tmp_path):
    root, data = synthetic_store(tmp_path / "s")
    store = open_store(root)
    assert store.image_shape == (2, 6, 5)
    assert [store.split_len(s) for s in ("train", "val", "test")] == [20, 7, 0]
    for split in ("train", "val"):
        x, y = store.read(split)
        assert x.dtype == np.float32 and y.dtype == np.float64
        assert x.shape == (store.split_len(split), 2, 6, 5)
        np.testing.assert_array_equal(y, data[split]["labels"])  # labels are stored exactly
        assert np.abs(x - data[split]["images"]).max() <= 0.5 / IMAGE_SCALE + 1e-7
        meta = store.read_meta(split)
        np.testing.assert_array_equal(meta["seeds"], data[split]["seeds"])
        np.testing.assert_array_equal(meta["energies"], data[split]["energies"])
    x, _ = store.read("train", [0])
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 0, 1] == 1.0
    x, y = store.read("test")
    assert x.shape == (0, 2, 6, 5) and y.shape == (0, 3)
    assert verify_store(root) == []


def test_read_any_order_with_repeats_across_shards(tmp_path):
    root, data = synthetic_store(tmp_path / "s")
    store = open_store(root)
    idx = [19, 3, 8, 3, 0, 15, 19]  # three shards, unsorted, repeated
    x, y = store.read("train", idx)
    np.testing.assert_array_equal(y, data["train"]["labels"][idx])
    np.testing.assert_allclose(x, data["train"]["images"][idx], atol=0.5 / IMAGE_SCALE + 1e-7)
    xs, _ = store.read("train", [2, 4, 6], channels=slice(1, 2))
    np.testing.assert_array_equal(xs, store.read("train", [2, 4, 6])[0][:, 1:2])
    for bad in ([20], [-1], [0.5]):
        with pytest.raises(UserError):
            store.read("train", bad)
    with pytest.raises(UserError, match="unknown split"):
        store.read("training")


def test_int16_coding_precision():
    x = np.linspace(-1, 1, 100001, dtype=np.float32)
    codes = encode_images(x)
    assert codes.dtype == np.int16 and codes.min() == -32767 and codes.max() == 32767
    assert np.abs(decode_images(codes) - x).max() <= 0.5 / IMAGE_SCALE + 1e-7
    assert np.array_equal(encode_images(np.array([-3.0, 2.0])), [-32767, 32767])  # clipped


def test_write_shard_bytes_are_deterministic(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"images": rng.uniform(-1, 1, (5, 2, 8, 8)), "labels": rng.uniform(size=(5, 3)),
              "seeds": np.arange(5), "energies": rng.normal(size=5)}
    a = write_shard(tmp_path / "a.h5", **arrays, attrs={"split": "train"})
    time.sleep(1.1)  # a timestamp anywhere in the file would now differ
    b = write_shard(tmp_path / "b.h5", **arrays, attrs={"split": "train"})
    assert a["sha256"] == b["sha256"] == sha256_file(tmp_path / "a.h5")
    assert not list(tmp_path.glob(".tmp-*"))


def test_open_store_rejects_missing_foreign_corrupt_incomplete(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_store(tmp_path / "nope")
    with pytest.raises(UserError, match="no manifest.json"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserError, match="not a moirescale dataset manifest"):
        open_store(tmp_path)
    root, _ = synthetic_store(tmp_path / "s")
    m = json.loads((root / "manifest.json").read_text())
    write_manifest(root, {**m, "complete": False})
    with pytest.raises(UserError, match="incomplete"):
        open_store(root)
    write_manifest(root, {**m, "shards": m["shards"][1:]})  # a shard record lost
    with pytest.raises(UserError, match="train shards do not cover"):
        open_store(root)
    del m["shards"][0]["sha256"]
    write_manifest(root, m)
    with pytest.raises(UserError, match="corrupt"):
        open_store(root)


def _copy(store: Path, dst: Path) -> Path:
    shutil.copytree(store, dst)
    return dst


def _chunk_offset(path: Path, chunk: int) -> int:
    with h5py.File(path, "r") as f:
        return f["images"].id.get_chunk_info(chunk).byte_offset


def test_corrupted_shard_is_detected_by_verify_and_loading(tiny_store, tmp_path):
    root = _copy(tiny_store, tmp_path / "s")
    shard = root / "train-00001.h5"
    off = _chunk_offset(shard, 3) + 10
    raw = bytearray(shard.read_bytes())
    raw[off] ^= 0xFF
    shard.write_bytes(bytes(raw))
    problems = verify_store(root)
    assert any("train-00001.h5" in p and "sha256" in p for p in problems), problems
    store = open_store(root)
    store.read("train", [0, 31])  # other shards still read
    with pytest.raises(UserError, match="train-00001.h5"):
        store.read("train", [40])
    # Without the whole-file checksum, the per-chunk fletcher32 still refuses the damaged sample.
    with pytest.raises(UserError, match="train-00001.h5"):
        open_store(root, checksum=False).read("train", [32 + 3])


def test_truncated_and_missing_shards_are_detected(tiny_store, tmp_path):
    root = _copy(tiny_store, tmp_path / "s")
    shard = root / "val-00000.h5"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    (root / "test-00000.h5").unlink()
    problems = verify_store(root)
    assert any("val-00000.h5" in p and "truncated" in p for p in problems), problems
    assert any("test-00000.h5: missing" in p for p in problems), problems
    for checksum in (True, False):
        store = open_store(root, checksum=checksum)
        with pytest.raises(UserError, match="val-00000.h5.*truncated"):
            store.read("val")
        with pytest.raises(UserError, match="test-00000.h5.*missing"):
            load_arrays(store, "test")


def test_real_store_contents(tiny_store):
    assert verify_store(tiny_store) == []
    store = open_store(tiny_store)
    m = store.manifest
    assert store.image_shape == (2, 32, 32)
    x, y = store.read("train")
    assert np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert x.std() > 0.1  # real domain images, not blanks
    for j, k in enumerate(("theta", "J", "D")):
        lo, hi = m["label_bounds"][k]
        assert lo <= y[:, j].min() and y[:, j].max() <= hi
    # Labels are spread over the ranges, not stuck: i.i.d. uniform draws.
    assert y[:, 1].max() - y[:, 1].min() > 0.5 and y[:, 2].max() - y[:, 2].min() > 0.6
    # The stored arrays are what the shards hold, in order.
    with h5py.File(Path(tiny_store) / "train-00002.h5", "r") as f:
        np.testing.assert_array_equal(f["labels"][:], y[64:96])
        np.testing.assert_array_equal(decode_images(f["images"][:]), x[64:96])


def test_splits_are_disjoint(tiny_store):
    store = open_store(tiny_store)
    seeds = {s: store.read_meta(s)["seeds"] for s in ("train", "val", "test")}
    labels = {s: store.read(s)[1] for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(seeds[a]) & set(seeds[b])
        assert not {tuple(r) for r in labels[a][:, 1:]} & {tuple(r) for r in labels[b][:, 1:]}
    for s, sd in seeds.items():
        info = store.manifest["splits"][s]
        np.testing.assert_array_equal(sd, np.arange(info["seed_lo"], info["seed_hi"] + 1))


def test_subsets_are_nested_and_seeded(tiny_store):
    store = open_store(tiny_store)
    small, big = store.subset_indices(10, seed=3), store.subset_indices(100, seed=3)
    np.testing.assert_array_equal(small, big[:10])
    assert len(set(big)) == 100 and big.max() < 128
    assert not np.array_equal(store.subset_indices(100, seed=4), big)
    np.testing.assert_array_equal(store.subset_indices(100, seed=3), big)
    assert sorted(store.subset_indices(128, seed=0)) == list(range(128))
    with pytest.raises(UserError, match="training pool"):
        store.subset_indices(129, seed=0)


def test_dataset_and_load_arrays_agree(tiny_store):
    store = open_store(tiny_store)
    idx = np.array([100, 3, 64, 3, 127])
    for channels, c in (("top", 1), ("both", 2)):
        x, y = load_arrays(store, "train", idx, channels=channels)
        assert x.shape == (5, c, 32, 32) and x.dtype == np.float32 and y.dtype == np.float32
        ds = StoreDataset(store, "train", idx, channels=channels)
        assert len(ds) == 5
        for i in range(5):
            xi, yi = ds[i]
            assert isinstance(xi, torch.Tensor) and xi.dtype == torch.float32
            np.testing.assert_array_equal(xi.numpy(), x[i])
            np.testing.assert_array_equal(yi.numpy(), y[i])
    full_x, full_y = store.read("train", idx)
    np.testing.assert_array_equal(load_arrays(store, "train", idx)[0], full_x[:, :1])  # top = channel 0
    # labels are scaled by the store's own ranges (theta in [1.5, 2] here, not the global [0.5, 2])
    assert store.manifest["label_ranges"]["theta"] == [1.5, 2.0]
    scaler = LabelScaler.from_manifest(store.manifest)
    np.testing.assert_array_equal(load_arrays(store, "train", idx)[1], scaler.scale(full_y))
    np.testing.assert_allclose(scaler.unscale(y), full_y, rtol=1e-6)
    assert y.min() >= -0.05 and y.max() <= 1.05  # theta_eff strays a little by rounding of n
    assert y[:, 0].max() - y[:, 0].min() > 0.3  # theta spans its own range, not a third of the global one
    loader = torch.utils.data.DataLoader(StoreDataset(store, "val"), batch_size=16, num_workers=2)
    xb = torch.cat([b[0] for b in loader])
    np.testing.assert_array_equal(xb.numpy(), load_arrays(store, "val")[0])
    with pytest.raises(UserError, match="channels"):
        load_arrays(store, "train", channels="left")


def test_label_scaler_round_trip_and_edges():
    rng = np.random.default_rng(0)
    scaler = LabelScaler.from_dict({"theta": [1.5, 2.0], "J": [0.2, 1.0], "D": [0.0, 1.0]})
    y = np.column_stack([rng.uniform(1.5, 2.0, 50), rng.uniform(0.2, 1.0, 50), rng.uniform(0, 1, 50)])
    z = scaler.scale(y)
    assert z.dtype == np.float32 and z.min() >= 0 and z.max() <= 1
    np.testing.assert_allclose(scaler.unscale(z), y, rtol=1e-6)
    np.testing.assert_allclose(scaler.unscale(z[:, 1], [1]), y[:, 1], rtol=1e-6)  # one column
    assert LabelScaler.from_dict(scaler.to_dict()) == scaler
    # a checkpoint older than per-dataset ranges (no label_ranges) was trained on the global table
    legacy = LabelScaler.from_dict(None)
    assert legacy.ranges["theta"] == (0.5, 2.0)
    assert LabelScaler.from_manifest({}) == legacy
    # a label held fixed scales by its default width instead of dividing by zero
    fixed = LabelScaler.from_dict({"theta": [1.0, 1.0], "J": [0.2, 1.0], "D": [0.0, 1.0]})
    assert np.isfinite(fixed.scale(np.array([[1.0, 0.5, 0.5]]))).all()
    assert fixed.scale(np.array([[1.0, 0.5, 0.5]]))[0, 0] == 0.0
    for bad in ({"theta": [2.0, 1.0], "J": [0.2, 1.0], "D": [0, 1]}, {"J": [0.2, 1.0]},
                {"theta": [0.5, float("nan")], "J": [0.2, 1.0], "D": [0, 1]}, {"theta": "x", "J": 1, "D": 2}):
        with pytest.raises(UserError, match="label range"):
            LabelScaler.from_dict(bad)
