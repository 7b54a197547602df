"""Training speed by precision (fp32 vs bf16) and memory layout, written to the `train-precision` section of
docs/benchmarks.md.

    .venv/bin/python benchmarks/precision.py [--quick] [--no-write]

Every figure is a ratio of two jobs measured in the same run, interleaved round by round on one thread, as
training steps per CPU-second (``time.process_time``), so the load of a shared machine falls on both:
  - FCN 3 x 256, one network (autograd + fused Adam, autocast for bf16) and an own-data ensemble of 5
    (moirescale.train.engines.FCNEnsemble, explicit bf16 casts), on 1x48x48 (batch 128) and 1x100x100
    (batch 64);
  - ResNet-18 width 8 on 1x48x48 (batch 128): fp32, fp32 channels-last, bf16, bf16 channels-last;
  - ViT (n_l 4, width 96, heads 3, patch 10) on 1x100x100 (batch 64): fp32 vs bf16 channels-last;
  - the own-subset ensemble of width 16 (N_r 10) against one shared batch, images held as float32 (before)
    and as the store's int16 codes decoded per batch (now), in fp32 and bf16: steps as ``loop.fit`` takes
    them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sections import write_section  # noqa: E402


def interleaved(jobs: dict[str, Callable[[], None]], calls: dict[str, int], rounds: int) -> dict[str, float]:
    """Best steps per CPU-second of each job over ``rounds`` rounds that run every job in turn."""
    best = dict.fromkeys(jobs, 0.0)
    for _ in range(rounds):
        for name, fn in jobs.items():
            fn()
            t = time.process_time()
            for _ in range(calls[name]):
                fn()
            best[name] = max(best[name], calls[name] / max(time.process_time() - t, 1e-9))
    return best


def module_step(arch: str, kw: dict, shape: tuple[int, ...], batch: int, precision: str, channels_last: bool):
    """One training step of one network (ModuleEngine) on a fixed int16 batch, decoded as loop.fit does."""
    from moirescale.models import create_model
    from moirescale.train.engines import ModuleEngine
    from moirescale.train.precision import decode_images

    torch.manual_seed(0)
    eng = ModuleEngine(create_model(arch, shape, 1, **kw), "adam", 0.0, precision, channels_last)
    codes = torch.randint(-32767, 32768, (batch, *shape), dtype=torch.int32).to(torch.int16)
    y, lr = torch.rand(batch, 1), np.full(1, 1e-4)
    dbuf = torch.empty(codes.numel())
    if precision == "bf16":
        codes = decode_images(codes, torch.bfloat16)  # held as bf16, as loop.fit holds them
    return lambda: eng.train_step(decode_images(codes, eng.input_dtype, dbuf), y, lr)


def ensemble_steps(shape: tuple[int, ...], batch: int, n_nets: int, width: int, precision: str, codes: bool,
                   pool: int = 4096) -> tuple[Callable[[], None], Callable[[], None]]:
    """(shared-batch step, own-data step) of two equal FCN ensembles as ``loop.fit`` drives them."""
    from moirescale.models import create_model
    from moirescale.train.data import BatchStream, MemberStreams
    from moirescale.train.engines import FCNEnsemble
    from moirescale.train.loop import gather_rows
    from moirescale.train.precision import decode_images

    x = torch.randint(-32767, 32768, (pool, *shape), dtype=torch.int32).to(torch.int16)
    if not codes:  # before: float32 images
        x = decode_images(x)
    elif precision == "bf16":  # a bf16 run holds its images as bf16 (moirescale.train.precision.images_for)
        x = decode_images(x, torch.bfloat16)
    y = torch.rand(pool, 1)
    rng = np.random.default_rng(0)
    subsets = [rng.permutation(pool)[: pool // 2] for _ in range(n_nets)]

    def ensemble() -> FCNEnsemble:
        torch.manual_seed(0)
        nets = [create_model("fcn", shape, 1, n_layers=3, width=width) for _ in range(n_nets)]
        return FCNEnsemble(nets, precision=precision)

    shared_eng, own_eng = ensemble(), ensemble()
    stream, members = BatchStream(subsets[0], batch, 0), MemberStreams(subsets, batch, list(range(n_nets)))
    act, lr = np.arange(n_nets), np.full(n_nets, 1e-4)
    buf = x.new_empty((n_nets * batch, *shape))
    dbuf = torch.empty(buf.numel())  # the fp32 decode buffer loop.fit reuses

    def shared() -> None:
        idx = stream.next()
        shared_eng.train_step(decode_images(x[idx], shared_eng.input_dtype, dbuf), y[idx], lr)

    def own() -> None:
        idx = members.next(act)
        xb = decode_images(gather_rows(x, idx, buf), own_eng.input_dtype, dbuf)
        own_eng.train_step(xb, gather_rows(y, idx), lr)

    return shared, own


def ratio_rows(pairs: list[tuple[str, dict[str, Callable[[], None]], int]], rounds: int) -> list[tuple]:
    """Measure each (label, {a: fn, b: fn}, calls) pair interleaved; rows of (label, rate a, rate b, b/a)."""
    rows = []
    for label, jobs, calls in pairs:
        r = interleaved(jobs, dict.fromkeys(jobs, calls), rounds)
        names = list(jobs)
        rows.append((label, *(r[n] for n in names), r[names[-1]] / r[names[0]], names))
        print(f"{label}: " + ", ".join(f"{n} {r[n]:.1f}/s" for n in names), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds = 2 if args.quick else 4
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    fcn = {"n_layers": 3, "width": 256}
    lines_fcn = []
    for shape, batch in (((1, 48, 48), 128), ((1, 100, 100), 64)):
        px = f"{shape[1]} px"
        single = {p: module_step("fcn", fcn, shape, batch, p, False) for p in ("fp32", "bf16")}
        own = {p: ensemble_steps(shape, batch, 5, 256, p, True)[1] for p in ("fp32", "bf16")}
        lines_fcn += ratio_rows(
            [
                (f"FCN 3 x 256, one network, {px}, batch {batch}", single, 10 if shape[1] == 48 else 5),
                (f"FCN 3 x 256, ensemble of 5 (own data), {px}, batch {batch}", own,
                 4 if shape[1] == 48 else 2),
            ],
            rounds,
        )
    conv = []
    rn, vit = {"width": 8}, {"n_layers": 4, "width": 96}
    conv += ratio_rows(
        [
            (
                "ResNet-18 width 8, 48 px, batch 128",
                {
                    "fp32": module_step("resnet18", rn, (1, 48, 48), 128, "fp32", False),
                    "fp32 channels-last": module_step("resnet18", rn, (1, 48, 48), 128, "fp32", True),
                    "bf16": module_step("resnet18", rn, (1, 48, 48), 128, "bf16", False),
                    "bf16 channels-last": module_step("resnet18", rn, (1, 48, 48), 128, "bf16", True),
                },
                3,
            ),
            (
                "ViT n_l 4, width 96, patch 10, 100 px, batch 64",
                {
                    "fp32": module_step("vit", vit, (1, 100, 100), 64, "fp32", False),
                    "fp32 channels-last": module_step("vit", vit, (1, 100, 100), 64, "fp32", True),
                    "bf16": module_step("vit", vit, (1, 100, 100), 64, "bf16", False),
                    "bf16 channels-last": module_step("vit", vit, (1, 100, 100), 64, "bf16", True),
                },
                3,
            ),
        ],
        rounds,
    )
    own_rows = []
    for label, codes, prec in (
        ("float32 images, fp32 (before)", False, "fp32"),
        ("int16 codes, fp32", True, "fp32"),
        ("bf16 images, bf16", True, "bf16"),
    ):
        shared, own = ensemble_steps((1, 48, 48), 128, 10, 16, prec, codes)
        own_rows += ratio_rows([(label, {"shared": shared, "own": own}, 20)], rounds)
    elapsed, load1 = time.perf_counter() - t0, os.getloadavg()[0]
    from moirescale import __version__ as _v  # noqa: F401  (the package imports: the benchmark ran its code)

    out = [
        "## train: precision and layout (`benchmarks/precision.py`)",
        "",
        f"Run: {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {elapsed:.0f} s, load average "
        f"{load0:.1f} → {load1:.1f} on 2 cores, CPU: {_cpu_name()}. One thread; training steps per "
        "**CPU-second**, the best of interleaved rounds, so both columns of a ratio share the machine's "
        "load. "
        "Inputs are the store's int16 codes decoded per batch into the compute dtype (what `loop.fit` does).",
        "",
        "| job | fp32 steps/s | bf16 steps/s | bf16 / fp32 |",
        "|---|---|---|---|",
    ]
    out += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | **{r[3]:.2f}** |" for r in lines_fcn]
    heads = conv[0][-1]
    ratios = " | channels-last / fp32 | bf16 channels-last / fp32 |"
    out += ["", "| job (steps/s) | " + " | ".join(heads) + ratios, "|---" * (len(heads) + 3) + "|"]
    for r in conv:
        rates = r[1 : 1 + len(heads)]
        cells = " | ".join(f"{v:.2f}" for v in rates)
        out.append(f"| {r[0]} | {cells} | {rates[1] / rates[0]:.2f} | **{rates[3] / rates[0]:.2f}** |")
    out += [
        "",
        "Own-subset ensemble (FCN 3 × 16, N_r 10, 1×48×48, batch 128) against one shared batch, steps as "
        "`loop.fit` takes them (one `index_select` of R·B rows, decoded once for all members):",
        "",
        "| images in memory, precision | shared steps/s | own steps/s | own / shared |",
        "|---|---|---|---|",
    ]
    out += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | **{r[3]:.2f}** |" for r in own_rows]
    out += ["", *goals(lines_fcn, conv, own_rows)]
    print("\n".join(out))
    if not args.no_write:
        write_section(out, "train-precision")
        print("wrote the train-precision section of docs/benchmarks.md")


def goals(fcn: list[tuple], conv: list[tuple], own: list[tuple]) -> list[str]:
    """Issue 27's goals against this run's ratios (the FCN goal is the ensemble's: sweeps train FCNs so)."""
    def verdict(value: float, goal: float) -> str:
        return f"{value:.2f} ({'met' if value >= goal else 'NOT met'}, goal ≥ {goal})"

    ens = {r[0].split(", ")[2]: r[3] for r in fcn if "ensemble" in r[0]}
    resnet = conv[0][1:5]
    return [
        "Goals (issue 27), this run: FCN 3 × 256 ensemble bf16 / fp32 at 48 px " + verdict(ens["48 px"], 1.7)
        + ", at 100 px " + verdict(ens["100 px"], 1.4) + "; ResNet-18 width 8, bf16 channels-last / fp32 "
        + verdict(resnet[3] / resnet[0], 1.5) + "; own-subset ensemble of width 16 / shared batch (bf16) "
        + verdict(own[-1][3], 0.8) + ".",
    ]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                bf16 = "avx512_bf16" in flags
                amx = "amx_bf16" in flags
                return f"{line.split(':', 1)[1].strip()} (AVX-512 BF16: {bf16}, AMX: {amx})"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
