"""The GPU benchmark (issue 27): what a lent GPU should measure, in under 8 minutes, written to the `gpu`
section of docs/benchmarks.md.

    .venv/bin/python benchmarks/gpu.py                 # on a machine with CUDA
    .venv/bin/python benchmarks/gpu.py --device cpu --quick --no-write   # a smoke run of the same code here

  1. simulator: images/s of configs/dataset.yaml's first training samples (2 x 100 x 100 px) through the torch
     back end on the device (one batch), beside the numba kernel on this machine's CPU cores (the ratio);
  2. training steps/s in fp32, tf32 and bf16: an FCN 3 x 256 ensemble of 20 (own data, 1 x 100 x 100, batch
     64) and ResNet-18 width 64 (batch 64, channels-last);
  3. the accuracy each precision pays, paired: a small store simulated on the device (48 px, nuisance-free
     variant of configs/study48/fss.yaml, 4096 / 1024 / 2048), FCN 3 x 64 on J at N_D 224, 896, 3584, N_r 5,
     the same subsets and initialisations in each precision; geometric-mean test MSE and alpha_D each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sections import write_section  # noqa: E402

PRECISIONS_BY_DEVICE = {"cuda": ("fp32", "tf32", "bf16"), "cpu": ("fp32", "bf16")}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, dev: torch.device, calls: int, rounds: int = 3) -> float:
    """Best calls per second over ``rounds`` timings of ``calls`` calls (after one warm-up call)."""
    fn()
    sync(dev)
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(dev)
        best = max(best, calls / (time.perf_counter() - t))
    return best


def simulator(dev: torch.device, n: int) -> list[str]:
    """Images/s of the torch back end on ``dev`` and of numba on the CPU, same samples."""
    from moirescale.data.config import load_config, resolve_physics
    from moirescale.data.generate import sample_labels, sample_seeds
    from moirescale.physics import simulate_batch

    cfg, _ = load_config(ROOT / "configs" / "dataset.yaml")
    params, protocol, image, jperp = resolve_physics(cfg)
    seeds = sample_seeds(cfg.seed, "train", 0, n)
    lab = sample_labels(seeds, {"theta": cfg.labels.theta, "J": cfg.labels.J, "D": cfg.labels.D})
    kw = dict(params=params, protocol=protocol, image=image, jperp=jperp)
    out = []
    for backend, device in (("torch", str(dev)), ("numba", None)):
        args = (lab[:2, 0], lab[:2, 1], lab[:2, 2], seeds[:2])
        simulate_batch(*args, backend=backend, device=device, **kw)  # warm-up, JIT
        t = time.perf_counter()
        simulate_batch(lab[:, 0], lab[:, 1], lab[:, 2], seeds, backend=backend, device=device, **kw)
        out.append((backend, n / (time.perf_counter() - t)))
        print(f"simulator {backend}: {out[-1][1]:.1f} images/s", flush=True)
    return [
        f"| simulator, {n} images of configs/dataset.yaml | torch on {dev.type}: {out[0][1]:.1f} images/s | "
        f"numba on {torch.get_num_threads()} CPU threads: {out[1][1]:.1f} images/s | "
        f"**{out[0][1] / out[1][1]:.2f}** |"
    ]


def training(dev: torch.device, quick: bool) -> list[str]:
    """Steps/s of the FCN ensemble and ResNet-18 at each precision the device has."""
    from moirescale.models import create_model
    from moirescale.train.engines import FCNEnsemble, ModuleEngine
    from moirescale.train.precision import decode_images, matmul_mode

    precs = PRECISIONS_BY_DEVICE[dev.type]
    r_fcn, w_res = (4, 8) if quick else (20, 64)
    shape, batch = (1, 100, 100), 64
    codes = torch.randint(-32767, 32768, (r_fcn * batch, *shape), dtype=torch.int32).to(torch.int16).to(dev)
    y = torch.rand(r_fcn * batch, 1, device=dev)
    rows = []
    for name in ("fcn", "resnet"):
        rates = {}
        for p in precs:
            torch.manual_seed(0)
            if name == "fcn":
                nets = [create_model("fcn", shape, 1, n_layers=3, width=256).to(dev) for _ in range(r_fcn)]
                eng = FCNEnsemble(nets, precision=p)
                xb = decode_images(codes, eng.input_dtype).view(r_fcn, batch, *shape)
                yb, lr = y.view(r_fcn, batch, 1), np.full(r_fcn, 1e-4)
            else:
                eng = ModuleEngine(create_model("resnet18", shape, 1, width=w_res).to(dev), "adamw", 1e-4, p,
                                   channels_last=True)
                xb, yb, lr = decode_images(codes[:batch], eng.input_dtype), y[:batch], np.full(1, 1e-4)
            with matmul_mode(p):
                rates[p] = rate(lambda eng=eng, xb=xb, yb=yb, lr=lr: eng.train_step(xb, yb, lr), dev,
                                2 if quick else 20)
            print(f"{name} {p}: {rates[p]:.1f} steps/s", flush=True)
        label = (f"FCN 3 x 256, ensemble of {r_fcn} (own data), 100 px, batch 64" if name == "fcn"
                 else f"ResNet-18 width {w_res}, 100 px, batch 64, channels-last")
        cells = " | ".join(f"{p}: {rates[p]:.1f}" for p in precs)
        ratios = ", ".join(f"{p} {rates[p] / rates['fp32']:.2f}" for p in precs[1:])
        rows.append(f"| {label} | {cells} | **{ratios}** |")
    return rows


def accuracy(dev: torch.device, quick: bool) -> list[str]:
    """Paired fp32/tf32/bf16 curves on a small nuisance-free store simulated on the device."""
    from moirescale.analysis.fits import fit_power_law
    from moirescale.data.config import load_config
    from moirescale.data.generate import generate
    from moirescale.stats import geomean
    from moirescale.train import TrainSpec, train_arrays
    from moirescale.train.data import load_train_data
    from moirescale.train.run import resolve_on_store

    precs = PRECISIONS_BY_DEVICE[dev.type]
    cfg, _ = load_config(ROOT / "configs" / "study48" / "fss.yaml")
    n_tr, n_va, n_te = (448, 128, 128) if quick else (4096, 1024, 2048)
    cfg = cfg.model_copy(update={"splits": cfg.splits.model_copy(update={"train": n_tr, "val": n_va,
                                                                           "test": n_te}),
                                 "backend": "torch" if dev.type == "cuda" else "numba"})
    sizes = (224, 448) if quick else (224, 896, 3584)
    with tempfile.TemporaryDirectory() as tmp:
        store = generate(cfg, Path(tmp) / "store", progress=False)
        mses: dict[str, list[float]] = {p: [] for p in precs}
        logs: dict[str, list[np.ndarray]] = {p: [] for p in precs}
        for n_d in sizes:
            for p in precs:
                spec = TrainSpec("fcn", "J", n_d, realizations=tuple(range(5)), model_kw={"n_layers": 3,
                                 "width": 64}, batch_size=128, channels="net", precision=p,
                                 schedule_kw={"min_steps": 200} if quick else {})
                _, subsets, _ = resolve_on_store(spec, store)
                data, local = load_train_data(store, subsets, "net")
                trained = train_arrays(spec, data, local, device=dev)
                per_net = [float(t.result.test_mse[0]) for t in trained if t.result.status == "ok"]
                mses[p].append(geomean(per_net))
                logs[p].append(np.log(per_net))
                print(f"accuracy N_D {n_d} {p}: {mses[p][-1]:.4g}", flush=True)
    rows = []
    for p in precs:
        f = fit_power_law(np.array(sizes, float), logs[p], n_boot=200)
        lo, hi = f.interval(1)
        alpha = f"{f.alpha:.3f} [{lo:.3f}, {hi:.3f}]"
        moves = ", ".join(f"{m / b - 1:+.1%}" for m, b in zip(mses[p], mses["fp32"], strict=True))
        rows.append(f"| {p} | " + " | ".join(f"{m:.4g}" for m in mses[p]) + f" | {alpha} | {moves} |")
    head = "| precision | " + " | ".join(f"MSE(J) at N_D {n}" for n in sizes) + " | α_D | vs fp32 |"
    return [head, "|---" * (len(sizes) + 4) + "|", *rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (the point of it) or cpu (a smoke run)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run of the code)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA device here (use --device cpu for a smoke run)")
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    sim = simulator(dev, 2 if args.quick else 256)
    train = training(dev, args.quick)
    acc = accuracy(dev, args.quick)
    lines = [
        "## GPU: simulator, training precision, paired accuracy (`benchmarks/gpu.py`)",
        "",
        f"Run: {time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, "
        f"{time.perf_counter() - t0:.0f} s{' (--quick: smoke sizes, not a measurement)' * args.quick}.",
        "",
        "| job | device | reference | ratio |",
        "|---|---|---|---|",
        *sim,
        "",
        "| training job | steps/s by precision | speed-up over fp32 |",
        "|---|---|---|",
        *train,
        "",
        "Paired accuracy (same subsets and initialisations; FCN 3 × 64 on J, N_r 5, 48 px nuisance-free "
        "store simulated on the device):",
        "",
        *acc,
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines, "gpu")
        print("wrote the gpu section of docs/benchmarks.md")


if __name__ == "__main__":
    main()
