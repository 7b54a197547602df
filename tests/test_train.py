"""The training core on synthetic in-memory data: over-fitting, ensemble == sequential, determinism,
divergence, schedules, the schedule study."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from moirescale.errors import UserError
from moirescale.models import create_model, model_options
from moirescale.results import COLUMNS
from moirescale.sweep.worker import failed_rows
from moirescale.train import (
    Schedule,
    TrainData,
    TrainSpec,
    compare_schedules,
    data_seed,
    realization_seed,
    schedule_config,
    train_arrays,
)
from moirescale.train.data import BatchStream, MemberStreams
from moirescale.train.engines import FCNEnsemble
from moirescale.train.loop import Tensors, fit
from moirescale.train.resolve import resolve
from moirescale.train.rows import results_row
from moirescale.train.run import _threads
from synthetic import synth


def small_spec(**kw) -> TrainSpec:
    base = dict(arch="fcn", target="J", n_train=128, realizations=(0, 1, 2), batch_size=32,
                model_kw={"n_layers": 2, "width": 8}, schedule="plateau", max_epochs=6)
    base.update(kw)
    return TrainSpec(**base)


def test_overfits_a_tiny_set():
    x, y = synth(32, 5)
    d = TrainData(x, y, x, y, x, y)  # validate and test on the training set itself
    spec = TrainSpec("fcn", "all", 32, model_kw={"n_layers": 2, "width": 64}, schedule="adjustable", lr=3e-3,
                     batch_size=32, schedule_kw={"min_steps": 1500, "max_decays": 8, "eval_every": 50})
    (t,) = train_arrays(spec, d)
    assert t.result.status == "ok"
    assert float(np.max(t.result.test_mse)) < 2e-4  # labels have variance 1/12: >400x below it
    assert t.result.history[0][2] > 50 * t.result.history[-1][2]  # the training loss fell


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ensemble_equals_sequential(data, dtype):
    # Tight patience so plateau decays happen and the networks end at different rates (grouped fused Adam).
    spec = small_spec(schedule_kw={"patience": 4, "threshold": 0.2}, max_epochs=10)
    ens = train_arrays(spec, data, dtype=dtype, ensemble=True)
    seq = train_arrays(spec, data, dtype=dtype, ensemble=False)
    rtol = 1e-9 if dtype == torch.float64 else 1e-4
    for a, b in zip(ens, seq, strict=True):
        assert a.result.status == b.result.status == "ok"
        assert a.result.steps == b.result.steps
        np.testing.assert_allclose(a.result.test_mse, b.result.test_mse, rtol=rtol)
        np.testing.assert_allclose(a.state["head.weight"], b.state["head.weight"], rtol=100 * rtol, atol=1e-7)
    assert len({t.result.final_lr for t in ens}) > 1, "expected per-network rate decays in this setting"
    assert len({float(t.result.test_mse[0]) for t in ens}) == 3  # realizations differ by their init


def test_ensemble_equals_sequential_with_own_data_and_noise(data):
    spec = small_spec(shared_data=False, noise_train=0.05, target="all", max_epochs=3)
    ens = train_arrays(spec, data, dtype=torch.float64, ensemble=True)
    seq = train_arrays(spec, data, dtype=torch.float64, ensemble=False)
    for a, b in zip(ens, seq, strict=True):
        np.testing.assert_allclose(a.result.test_mse, b.result.test_mse, rtol=1e-9)


def test_checkpoint_state_rebuilds_the_network(data):
    spec = small_spec(realizations=(0, 1), max_epochs=2)
    for t in train_arrays(spec, data):
        m = create_model("fcn", data.in_shape, 1, **spec.model_kw)
        m.load_state_dict(t.state)
        with torch.no_grad():
            pred = m(torch.from_numpy(data.x_test)).numpy()[:, 0]
        mse = float(np.mean((pred.astype(np.float64) - data.y_test[:, 1]) ** 2))
        assert mse == pytest.approx(float(t.result.test_mse[0]), rel=1e-5)


def test_deterministic_on_cpu(data):
    spec = small_spec(realizations=(0, 1), max_epochs=3)
    a = [t.result.test_mse for t in train_arrays(spec, data)]
    b = [t.result.test_mse for t in train_arrays(spec, data)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    c = [t.result.test_mse for t in train_arrays(small_spec(realizations=(0, 1), max_epochs=3, seed=1), data)]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("ensemble", [True, False])
def test_divergence_is_caught_and_marked(data, ensemble):
    spec = small_spec(realizations=(0, 1), lr=1e8, schedule="constant", max_epochs=3)
    out = train_arrays(spec, data, ensemble=ensemble)
    for t in out:
        assert t.result.status == "diverged"
        assert "non-finite" in t.result.error
        row = results_row(resolve(spec, data.in_shape, sliced=True), t.realization, "cpu", trained=t,
                          checkpoint="")
        assert set(row) <= set(COLUMNS)
        assert row["status"] == "diverged" and row["test_mse"] is None and row["error"]


def test_one_diverging_member_leaves_the_others_alone(data):
    spec = small_spec(realizations=(0, 1, 2), max_epochs=3)
    cfg = schedule_config("plateau", 1e-3, 128, 32, 3)
    sub = [np.arange(128)]
    tens = Tensors.from_data(data, [1], "cpu", torch.float64)

    def run(poison: bool):
        models = []
        for r in spec.realizations:
            torch.manual_seed(realization_seed(spec, r))
            models.append(create_model("fcn", data.in_shape, 1, n_layers=2, width=8).double())
        if poison:
            with torch.no_grad():
                models[1].head.weight.fill_(float("inf"))
        eng = FCNEnsemble(models)
        return fit(eng, tens, sub, [7], 32, cfg)

    with _threads(torch.device("cpu"), 0.0):  # tiny nets: single-threaded, as train_arrays does
        clean, bad = run(False), run(True)
    assert bad[1].status == "diverged" and "step 1 " in bad[1].error
    for i in (0, 2):
        assert bad[i].status == "ok"
        np.testing.assert_allclose(bad[i].test_mse, clean[i].test_mse, rtol=1e-12)


# -- schedules


def drive(cfg, losses):
    """LR used before each step, given the validation loss observed at each evaluation."""
    s, lrs, it = Schedule(cfg, 1), [], iter(losses)
    for step in range(cfg.budget):
        lrs.append(float(s.lr(step)[0]))
        if (step + 1) % cfg.eval_every == 0:
            s.observe(step + 1, np.array([next(it, 1.0)]))
        if s.stopped[0]:
            break
    return np.array(lrs), s


def test_constant_and_warmup():
    cfg = schedule_config("constant", 1e-3, 640, 64, max_epochs=5, warmup=10)
    lrs, _ = drive(cfg, np.linspace(1, 0.1, 5))
    np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(1, 11) / 10)
    assert np.all(lrs[10:] == 1e-3) and len(lrs) == 50


def test_cosine_decays_to_min_lr():
    cfg = schedule_config("cosine", 1e-2, 6400, 64, max_epochs=10)
    lrs, _ = drive(cfg, np.linspace(1, 0.1, 10))
    w = cfg.warmup
    assert lrs[w - 1] == pytest.approx(1e-2) and np.all(np.diff(lrs[w:]) <= 0)
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-2)
    mid = w + (cfg.budget - w) // 2
    assert lrs[mid] == pytest.approx(0.5 * (1e-2 + 1e-4), rel=1e-2)


def test_plateau_matches_torch_reduce_lr_on_plateau():
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.linspace(1, 0.5, 5), 0.5 + 0.01 * rng.random(40), np.linspace(0.4, 0.1, 5)])
    cfg = schedule_config("plateau", 1e-2, 64, 64, max_epochs=50, patience=3, stop_patience=0)
    assert cfg.eval_every == 1
    ours, _ = drive(cfg, losses)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-2)
    ref_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3, min_lr=1e-5)
    ref = []
    for v in losses:
        ref.append(opt.param_groups[0]["lr"])
        ref_sched.step(float(v))
    np.testing.assert_allclose(ours, ref)
    assert ours[-1] < 1e-2  # it did decay


def test_adjustable_decays_on_plateau_then_stops():
    cfg = schedule_config("adjustable", 1e-3, 224, 64)
    assert (cfg.budget, cfg.eval_every, cfg.patience, cfg.warmup) == (2000, 40, 250, 100)
    cfg = schedule_config("adjustable", 1e-3, 224, 64, patience=200)
    # Improves for 16 evaluations (640 steps: 0.06 < 1/15 too), then flat: a decay after every > patience
    # steps, and a stop after max_decays + 1 plateaus.
    losses = [1.0 / (k + 1) for k in range(15)] + [0.06] * 100
    lrs, s = drive(cfg, losses)
    levels = sorted(set(np.round(lrs[cfg.warmup:] / 1e-3, 6)), reverse=True)
    assert levels == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert s.stopped[0] and len(lrs) < cfg.budget
    first_drop = cfg.warmup + int(np.argmax(lrs[cfg.warmup:] < 1e-3 * 0.99))
    assert 640 + cfg.patience < first_drop <= 640 + cfg.patience + cfg.eval_every


def test_adjustable_budget_grows_with_n_train():
    b = [schedule_config("adjustable", 1e-3, n, 64).budget for n in (224, 3584, 7168, 28672, 114688)]
    assert b == [2000, 2000, 2240, 8960, 35840]  # max(2000, 20 epochs)
    assert schedule_config("plateau", 1e-3, 224, 64).budget == 400  # 100 epochs of 4 steps


def test_bad_schedule_input():
    with pytest.raises(UserError, match="unknown schedule"):
        schedule_config("linear", 1e-3, 100, 10)
    with pytest.raises(UserError, match="unknown schedule option"):
        schedule_config("adjustable", 1e-3, 100, 10, patiense=3)
    with pytest.raises(UserError, match="learning rate"):
        schedule_config("constant", 0.0, 100, 10)


def test_bad_spec_is_a_user_error(data):
    with pytest.raises(UserError, match="unknown model"):
        train_arrays(small_spec(arch="mlp"), data)
    with pytest.raises(UserError, match="pool"):
        train_arrays(small_spec(n_train=10_000), data)
    with pytest.raises(UserError, match="divide"):
        train_arrays(small_spec(arch="vit", model_kw={"patch": 3}), data)
    with pytest.raises(UserError, match="empty"):
        TrainData(data.x_train, data.y_train, data.x_val[:0], data.y_val[:0], data.x_test, data.y_test)


def test_generic_loop_trains_resnet_and_vit():
    (xa, ya), (xb, yb) = synth(48, 0, size=32), synth(16, 1, size=32)
    d = TrainData(xa, ya, xb, yb, xb, yb)
    vit = {"n_layers": 1, "width": 16, "heads": 2, "patch": 8}
    for arch, kw in (("resnet18", {"width": 4}), ("vit", vit)):
        spec = TrainSpec(arch, "all", 48, realizations=(0, 1), model_kw=kw, batch_size=16, max_epochs=2)
        out = train_arrays(spec, d)
        assert [t.result.status for t in out] == ["ok", "ok"] and out[0].result.steps == 6
        assert np.all(np.isfinite(out[0].result.test_mse)) and out[0].result.test_mse.shape == (3,)


def test_schedule_comparison_rows(data):
    base = small_spec(realizations=(0, 1))
    summary, rows = compare_schedules(
        TrainSpec("fcn", "J", 64, realizations=(0, 1), model_kw={"n_layers": 1, "width": 4}, batch_size=32,
                  max_epochs=2),
        [32, 64], ("plateau", "adjustable"), data=data, device="cpu")
    assert len(rows) == 8 and {r["schedule"] for r in rows} == {"plateau", "adjustable"}
    assert [(s["schedule"], s["n_train"]) for s in summary] == [
        ("adjustable", 32), ("adjustable", 64), ("plateau", 32), ("plateau", 64)]
    for s in summary:
        assert s["n_ok"] == 2 and s["gmean_lo"] <= s["gmean_test_mse"] <= s["gmean_hi"]
    with pytest.raises(UserError):
        compare_schedules(base, [32], ("plateau",), data=data)


@pytest.mark.slow
def test_ensemble_equals_sequential_at_paper_shape():
    """100x100 inputs, n_n = 16, 8 realizations, a few hundred fp32 steps: still equal within 1e-4."""
    (xa, ya), (xb, yb) = synth(512, 0, size=100), synth(256, 1, size=100)
    d = TrainData(xa, ya, xb, yb, xb, yb)
    spec = TrainSpec("fcn", "J", 512, realizations=tuple(range(8)), model_kw={"n_layers": 3, "width": 16},
                     batch_size=64, max_epochs=40, schedule="plateau")
    ens = train_arrays(spec, d, ensemble=True)
    seq = train_arrays(spec, d, ensemble=False)
    for a, b in zip(ens, seq, strict=True):
        assert a.result.steps == b.result.steps
        np.testing.assert_allclose(a.result.test_mse, b.result.test_mse, rtol=1e-4)


# -- own data per realization (the default)


def test_member_streams_give_each_member_its_batch_stream():
    subsets = [np.random.default_rng(s).permutation(50)[:21] for s in range(3)]  # 21 = 8 + 8 + 5 per epoch
    seeds = [11, 12, 13]
    stacked = MemberStreams(subsets, 8, seeds)
    alone = [BatchStream(s, 8, seed) for s, seed in zip(subsets, seeds, strict=True)]
    act = np.arange(3)
    for step in range(10):
        if step == 4:
            act = np.array([0, 2])  # member 1 stops mid-epoch: the others' batches go on unchanged
        got = stacked.next(act)
        assert got.shape == (len(act), 8 if step % 3 < 2 else 5)
        for row, i in zip(got, act, strict=True):
            assert torch.equal(row, alone[i].next())


def test_own_data_ensemble_equals_each_member_trained_alone(data):
    """Each realization draws its own subset by default; the ensemble (one gather per step) trains member r
    exactly as a lone network on r's subset and order (fp64)."""
    spec = small_spec(realizations=(0, 1, 2, 3), schedule_kw={"patience": 4, "threshold": 0.2}, max_epochs=8)
    assert not spec.shared_data
    subsets = subsets_of(spec, data)
    assert len({tuple(s) for s in subsets}) == 4 and len({data_seed(spec, r) for r in spec.realizations}) == 4
    ens = train_arrays(spec, data, dtype=torch.float64, ensemble=True)
    for r, t in zip(spec.realizations, ens, strict=True):
        (alone,) = train_arrays(replace(spec, realizations=(r,)), data, dtype=torch.float64, ensemble=False)
        assert t.result.status == alone.result.status == "ok"
        assert t.result.steps == alone.result.steps
        np.testing.assert_allclose(t.result.test_mse, alone.result.test_mse, rtol=1e-9)
        np.testing.assert_allclose(t.state["layers.0.weight"], alone.state["layers.0.weight"], rtol=1e-7,
                                   atol=1e-12)


def test_shared_data_stays_an_option(data):
    spec = small_spec(shared_data=True, max_epochs=3)
    assert len(subsets_of(spec, data)) == 1
    ens = train_arrays(spec, data, dtype=torch.float64, ensemble=True)
    seq = train_arrays(spec, data, dtype=torch.float64, ensemble=False)
    for a, b in zip(ens, seq, strict=True):
        np.testing.assert_allclose(a.result.test_mse, b.result.test_mse, rtol=1e-9)


def test_rows_carry_the_data_seed(data):
    spec = small_spec(realizations=(0, 1), max_epochs=1)
    rs = resolve(spec, data.in_shape, sliced=True)
    ok = [results_row(rs, t.realization, "cpu", trained=t, checkpoint="") for t in train_arrays(spec, data)]
    bad = failed_rows(spec, rs, "boom " * 2000)
    same = ["run_id", "group_id", "grid", "arch", "n_layers", "width", "target", "n_train", "realization",
            "seed", "data_seed", "schedule", "noise_train"]  # fmt: skip
    for a, b in zip(ok, bad, strict=True):  # ok and failed rows of a grid point: one builder, same identity
        assert set(a) == set(b) and set(a) <= set(COLUMNS)
        assert {c: a[c] for c in same} == {c: b[c] for c in same}
        assert a["status"] == "ok" and a["n_params"] > 0 and a["width"] is not None
        assert b["status"] == "failed" and len(b["error"]) == 4000 and b["checkpoint"] is None
        assert all(b[c] is None for c in ("n_params", "test_mse", "val_mse", "steps", "wall_time_s"))
    # a failed row names the model as an ok row does, defaults included
    one = replace(spec, model_kw={}, realizations=(0,))
    (default,) = failed_rows(one, resolve(one, data.in_shape, sliced=True), "boom")
    opts = model_options("fcn")
    assert (default["n_layers"], default["width"]) == (opts["n_layers"], opts["width"])
    assert ok[0]["data_seed"] != ok[1]["data_seed"]
    shared = replace(spec, shared_data=True)
    rs = resolve(shared, data.in_shape, sliced=True)
    rows = [results_row(rs, t.realization, "cpu", trained=t) for t in train_arrays(shared, data)]
    assert rows[0]["data_seed"] == rows[1]["data_seed"] == spec.seed


def subsets_of(spec: TrainSpec, data: TrainData) -> list[np.ndarray]:
    """The training subsets of ``spec`` in ``data``'s pool (the resolved spec's, as training draws them)."""
    return resolve(spec, data.in_shape, sliced=True).subsets(len(data.x_train))
