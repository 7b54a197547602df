"""Mixed precision (issue 27): bf16 really computes in bf16, keeps fp32 where the field keeps it, is part of
a run's identity, and a run directory holds one precision per grid point. Images in memory: int16, exact."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from moirescale.data.store import decode_images as store_decode
from moirescale.data.store import encode_images
from moirescale.errors import UserError
from moirescale.models import create_model
from moirescale.results import read_results
from moirescale.train import TrainData, TrainSpec, group_id, load_checkpoint, train_arrays
from moirescale.train.engines import FCNEnsemble, ModuleEngine
from moirescale.train.loop import Tensors
from moirescale.train.precision import check_precision, decode_images
from moirescale.train.resolve import check_fields
from moirescale.train.spec import precision_twins
from synthetic import synth


@pytest.fixture(scope="module")
def codes_data() -> TrainData:
    """The synthetic regression of test_train with its images as the store's int16 codes."""
    (xa, ya), (xb, yb), (xc, yc) = synth(512, 0, size=12), synth(128, 1, size=12), synth(128, 2, size=12)
    return TrainData(encode_images(xa), ya, encode_images(xb), yb, encode_images(xc), yc)


def spec(**kw) -> TrainSpec:
    base = dict(arch="fcn", target="J", n_train=384, realizations=(0, 1, 2), batch_size=32,
                model_kw={"n_layers": 2, "width": 32}, schedule="plateau", max_epochs=8, lr=3e-3)
    base.update(kw)
    return TrainSpec(**base)


def test_decode_matches_the_store_bit_for_bit():
    codes = np.arange(-32767, 32768, dtype=np.int16).reshape(-1, 1, 1, 1)
    ours = decode_images(torch.as_tensor(codes)).numpy()
    assert ours.dtype == np.float32 and np.array_equal(ours, store_decode(codes))
    buf = torch.empty(codes.size + 7)  # a reused buffer gives the same values
    assert np.array_equal(decode_images(torch.as_tensor(codes), buf=buf).numpy(), ours)
    bf = decode_images(torch.as_tensor(codes), torch.bfloat16)  # rounded once, from the exact fp32 value
    assert torch.equal(bf, torch.as_tensor(ours).to(torch.bfloat16))


def test_int16_images_train_exactly_like_float32_images(codes_data):
    """Holding the codes instead of float32 images changes nothing in fp32 (the per-batch decode is exact)."""
    floats = TrainData(*(store_decode(a) if a.dtype == np.int16 else a for a in (
        codes_data.x_train, codes_data.y_train, codes_data.x_val, codes_data.y_val,
        codes_data.x_test, codes_data.y_test)))
    for s in (spec(), spec(shared_data=True), spec(realizations=(0,))):
        a = train_arrays(s, codes_data)
        b = train_arrays(s, floats)
        for p, q in zip(a, b, strict=True):
            assert p.result.steps == q.result.steps
            assert np.array_equal(p.result.test_mse, q.result.test_mse)


def test_bf16_is_close_to_fp32_but_not_equal(codes_data):
    """Same seeds, bf16 matmuls: the nets learn as well (MSE within a factor 2 here, 8x below the label
    variance 1/12) yet differ, so bf16 really ran; the ensemble and the module path agree in bf16 too."""
    fp = train_arrays(spec(max_epochs=25), codes_data)
    bf = train_arrays(spec(max_epochs=25, precision="bf16"), codes_data)
    one = train_arrays(spec(max_epochs=25, precision="bf16"), codes_data, ensemble=False)
    for a, b, c in zip(fp, bf, one, strict=True):
        ma, mb, mc = (float(t.result.test_mse[0]) for t in (a, b, c))
        assert max(ma, mb, mc) < 1 / 12 / 8
        assert ma != mb and 0.5 < mb / ma < 2.0
        assert 0.5 < mc / mb < 2.0  # autocast (one network) vs explicit casts (ensemble): same recipe
        assert all(v.dtype == torch.float32 for v in b.state.values())  # master weights stay fp32


def test_bf16_engines_compute_in_bf16_and_report_fp32():
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 6, 6), torch.rand(16, 1)
    nets = [create_model("fcn", (1, 6, 6), 1, n_layers=2, width=8) for _ in range(2)]
    ens = FCNEnsemble(nets, precision="bf16")
    assert ens.input_dtype == torch.bfloat16 and ens.W[0].dtype == torch.float32
    loss = ens.train_step(x.to(torch.bfloat16), y, np.full(2, 1e-3))
    assert loss.dtype == ens.gW[0].dtype == ens.m[0].dtype == torch.float32
    ens.keep_best(np.ones(2, dtype=bool))
    best = ens.predict_best(x, [0, 1])  # the final MSEs: fp32 weights and arithmetic
    ref = torch.stack([
        torch.relu(torch.relu(x.flatten(1) @ ens.bestW[0][i].T + ens.bestb[0][i]) @ ens.bestW[1][i].T
                   + ens.bestb[1][i]) @ ens.bestW[2][i].T + ens.bestb[2][i] for i in range(2)])
    assert best.dtype == torch.float32 and torch.allclose(best, ref, atol=1e-5)
    assert not torch.allclose(ens.predict(x), best, atol=1e-6)  # monitoring runs in bf16: rounded
    eng = ModuleEngine(create_model("resnet18", (1, 32, 32), 1, width=4), "adamw", 0.0, "bf16",
                       channels_last=True)
    out = eng._run(torch.randn(4, 1, 32, 32), "bf16")
    assert out.dtype == torch.float32
    assert eng.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_precision_is_part_of_identity_but_fp32_ids_are_unchanged():
    s = spec()
    assert "precision" not in s.key()  # fp32: the key (and every id) of runs trained before the field
    assert group_id(replace(s, precision="bf16")) != group_id(s)
    twins = precision_twins(s)
    assert set(twins) == {"bf16", "tf32"} and group_id(s) not in twins.values()
    with pytest.raises(UserError, match="unknown precision"):
        check_fields(replace(s, precision="fp16"))
    with pytest.raises(UserError, match="CUDA"):
        check_precision("tf32", "cpu")


def test_tensors_hold_images_as_asked(codes_data):
    t = Tensors.from_data(codes_data, [1])
    assert t.x_train.dtype == torch.int16 and t.y_train.dtype == torch.float32
    b = Tensors.from_data(codes_data, [1], images=torch.bfloat16)
    assert b.x_val.dtype == torch.bfloat16
    assert torch.equal(b.x_val, decode_images(t.x_val, torch.bfloat16))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moirescale.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_bf16_rows_checkpoints_and_refused_resume(tiny_store, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--data", str(tiny_store), "--n-layers", "2", "--width", "8", "--target", "J",
            "--n-train", "64", "--realizations", "2", "--schedule-opt", "min_steps=40", "--batch-size", "16",
            "--no-progress", "--out", str(out)]
    r = cli(*base, "--precision", "bf16")
    assert r.returncode == 0, r.stderr
    df = read_results(out)
    assert list(df["precision"]) == ["bf16", "bf16"] and (df["status"] == "ok").all()
    _, meta = load_checkpoint(out / df["checkpoint"].iloc[0])
    assert meta["precision"] == "bf16" and meta["spec"]["precision"] == "bf16"
    parts = sorted((out / "results.parquet").iterdir())
    r = cli(*base)  # the same grid point in fp32 into the same run directory
    assert r.returncode == 2 and "bf16" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted((out / "results.parquet").iterdir()) == parts  # nothing written
    r = cli(*base, "--precision", "tf32")
    assert r.returncode == 2 and "CUDA" in r.stderr
    r = cli(*base, "--precision", "half")
    assert r.returncode == 2 and "unknown precision" in r.stderr


def test_sweep_grid_precision_key(tmp_path):
    from moirescale.sweep.config import load_config
    from moirescale.sweep.expand import grid_points

    cfg_text = (tmp_path / "c.yaml")
    body = """
name: p
dataset: {store: s}
recipes:
  fcn: {precision: bf16}
grids:
  - name: a
    model: {arch: fcn, n_layers: 2, width: 8}
    n_train: [224]
    targets: [J]
    realizations: 1
  - name: b
    model: {arch: fcn, n_layers: 2, width: 8}
    n_train: [224]
    targets: [J]
    realizations: 1
    train: {precision: fp32}
"""
    cfg_text.write_text(body)
    cfg = load_config(cfg_text).cfg
    (a,), (b,) = grid_points(cfg, cfg.grids[0]), grid_points(cfg, cfg.grids[1])
    assert a.precision == "bf16" and b.precision == "fp32" and group_id(a) != group_id(b)
    cfg_text.write_text(body.replace("precision: bf16", "precision: fp8"))
    with pytest.raises(UserError, match="precision"):
        load_config(cfg_text)
