"""Simulation throughput: spin updates/s and images/s of every back end, and the numba kernel on the
dataset's own samples with 1 and 2 workers, all in one run.

Back ends at one config (theta = 1 deg): the plain vectorised numpy sweep (the reference), the numba kernel
on 1 and 2 threads, the batched torch path on the CPU, and Spirit 2.2 (Metropolis Monte Carlo on a honeycomb
bilayer of the same size, in a subprocess; skipped with the reason if it cannot run). Then the first training
samples of configs/dataset.yaml (their seeds, labels and physics, through ``simulate_batch`` as ``generate``
calls it) with 1 and 2 workers in alternating rounds (1, 2, 2, 1, ...): the 2-worker / 1-worker ratio, the M
updates/s per core, identical bytes, and the paper-scale estimate. Rewrites only the ``simulate`` section of
docs/benchmarks.md. The machine is shared, so ratios come from one run, wall-clock and CPU-time rates are both
recorded, and so are the load average and the CPU time the run obtained per second (on 2 free cores: 1, 2).

    .venv/bin/python benchmarks/simulate.py [--quick] [--samples N] [--rounds R] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from moirescale.data.config import load_config, resolve_physics
from moirescale.data.generate import sample_labels, sample_seeds
from moirescale.labels import LABELS
from moirescale.physics import AnnealProtocol, cell_size, simulate_batch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from sections import write_section  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "simulate"
DATASET = ROOT / "configs" / "dataset.yaml"
THETA, J, D = 1.0, 0.6, 0.5  # default config: the middle of the dataset's angle range (n = 57)


def dataset_updates(cfg) -> tuple[int, float]:
    """Images and expected spin updates of a whole dataset config: theta ~ U[lo, hi] (the cell side n is
    ``round(m / theta_rad)``, so E[4 n^2] is averaged over a fine theta grid), n_anneal + n_zero sweeps."""
    _, protocol, _, _ = resolve_physics(cfg)
    images = cfg.splits.train + cfg.splits.val + cfg.splits.test
    lo, hi = cfg.labels.theta
    theta = np.linspace(lo, hi, 200_001)
    n = np.maximum(3, np.round(cfg.cells_per_side / np.radians(theta)))
    return images, images * float(np.mean(4 * n * n)) * (protocol.n_anneal + protocol.n_zero)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def bench_backend(backend: str, n_samples: int, protocol: AnnealProtocol, workers: int) -> dict:
    n = cell_size(THETA)[0]
    seeds = list(range(1000, 1000 + n_samples))
    args = ([THETA] * n_samples, [J] * n_samples, [D] * n_samples, seeds)
    simulate_batch(
        *[a[:1] for a in args],
        backend=backend,
        protocol=replace(protocol, n_anneal=2, n_zero=1),
        workers=workers,
    )  # warm-up / JIT
    _, wall, cpu = timed(lambda: simulate_batch(*args, backend=backend, protocol=protocol, workers=workers))
    sweeps = protocol.n_anneal + protocol.n_zero
    updates = n_samples * 4 * n * n * sweeps
    full = 4 * n * n * 300  # updates of one image with the default protocol
    return {
        "backend": backend,
        "workers": workers,
        "samples": n_samples,
        "sweeps": sweeps,
        "wall_s": wall,
        "cpu_s": cpu,
        "updates_per_s": updates / wall,
        "updates_per_cpu_s": updates / cpu,
        "images_per_s": updates / wall / full,  # at the full 300-sweep protocol
    }


SPIRIT_SCRIPT = r"""
import json, sys, time, os
from spirit import state, simulation, parameters, configuration, system
cfg, n_iter = sys.argv[1], int(sys.argv[2])
with state.State(cfg, quiet=True) as p:
    configuration.plus_z(p)
    parameters.mc.set_temperature(p, 17.4)   # 1.5 meV / k_B
    parameters.mc.set_iterations(p, 2, 2)
    simulation.start(p, simulation.METHOD_MC)  # warm-up
    parameters.mc.set_iterations(p, n_iter, n_iter)
    w0, c0 = time.perf_counter(), time.process_time()
    simulation.start(p, simulation.METHOD_MC)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(json.dumps({"nos": system.get_nos(p), "iterations": n_iter, "wall_s": wall, "cpu_s": cpu}))
"""


def spirit_config(n: int) -> str:
    """Honeycomb bilayer, 4 spins per cell (A/B of two layers), periodic in-plane, the model's couplings."""
    s2 = 9.0 / 4.0
    j1, jp, d = s2 * 2.2, s2 * 0.3, s2 * D
    rows = []
    for layer in (0, 1):
        a, b = 2 * layer, 2 * layer + 1
        # A(i,j) - B(i,j), B(i-1,j), B(i,j-1); DMI z x e_k (Neel) per bond
        for (da, db), (ex, ey) in zip(
            ((0, 0), (-1, 0), (0, -1)), ((0.5, 0.2887), (-0.5, 0.2887), (0.0, -0.5774)), strict=True
        ):
            norm = math.hypot(ex, ey)
            rows.append(f"{a} {b} {da} {db} 0 {j1:.5f} {-ey / norm * d:.5f} {ex / norm * d:.5f} 0.0")
    rows += [f"0 2 0 0 0 {jp:.5f} 0.0 0.0 0.0", f"1 3 0 0 0 {jp:.5f} 0.0 0.0 0.0"]
    return (
        textwrap.dedent(
            f"""\
        log_to_console 0
        log_to_file 0
        mc_output_any 0
        bravais_lattice hex2d
        basis
        4
        0 0 0
        0.3333333333 0.3333333333 0
        0 0 0.5
        0.3333333333 0.3333333333 0.5
        mu_s 3 3 3 3
        n_basis_cells {n} {n} 1
        hamiltonian heisenberg_pairs
        boundary_conditions 1 1 0
        anisotropy_magnitude {s2 * 0.09 * 3:.5f}
        anisotropy_normal 0 0 1
        ddi_method none
        n_interaction_pairs {len(rows)}
        i j da db dc Jij Dijx Dijy Dijz
        """
        )
        + "\n".join(rows)
        + "\n"
    )


def bench_spirit(n_iter: int) -> dict:
    n = cell_size(THETA)[0]
    try:
        import spirit  # noqa: F401
    except ImportError as exc:
        return {"error": f"spirit not importable ({exc}); install the bench extra: pip install spirit==2.2.0"}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bilayer.cfg"
        cfg.write_text(spirit_config(n))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        try:
            r = subprocess.run(
                [sys.executable, "-c", SPIRIT_SCRIPT, str(cfg), str(n_iter)],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=tmp,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return {"error": "timed out after 900 s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"}
    res = json.loads(lines[-1])
    updates = res["nos"] * res["iterations"]
    res.update(
        updates_per_s=updates / res["wall_s"],
        updates_per_cpu_s=updates / res["cpu_s"],
        images_per_s=updates / res["wall_s"] / (4 * n * n * 300),
        expected_nos=4 * n * n,
    )
    return res


def two_core_model(jobs: list[tuple[float, float]]) -> float:
    """Predicted wall time of ``jobs`` on 2 free cores as ``simulate_batch`` runs them with 2 worker threads,
    taken in the given order: a job ``(kernel_s, other_s)`` holds the GIL for ``other_s / 2`` before and
    after its kernel (pessimistic: numpy releases it in much of that time), and the kernel runs without it.
    An event simulation: the GIL goes to the waiting thread that asked first."""
    todo = list(jobs)
    ready = [0.0, 0.0]  # when each thread asks for its next phase
    phases: list[list[tuple[bool, float]]] = [[], []]  # (holds the GIL, seconds)
    gil_free = 0.0
    while True:
        for t in (0, 1):
            if not phases[t] and todo:
                kernel, other = todo.pop(0)
                phases[t] = [(True, other / 2), (False, kernel), (True, other / 2)]
        active = [t for t in (0, 1) if phases[t]]
        if not active:
            return max(ready)
        t = min(active, key=lambda k: ready[k])
        gil, dt = phases[t].pop(0)
        if gil:
            ready[t] = gil_free = max(ready[t], gil_free) + dt
        else:
            ready[t] += dt


def sample_costs(labels: np.ndarray, seeds: np.ndarray, kw: dict) -> list[tuple[float, float]]:
    """Per sample, one worker: (CPU s in the kernel, CPU s in the rest of ``simulate_batch``), largest cell
    first (the order the worker threads take them in)."""
    from moirescale.physics import anneal_numba

    kernel = anneal_numba.anneal
    spent = [0.0]

    def timed_kernel(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return kernel(*args, **kwargs)
        finally:
            spent[0] += time.thread_time() - t0

    costs = []
    anneal_numba.anneal = timed_kernel
    try:
        for i in np.argsort([-cell_size(t, kw["cells_per_side"])[0] for t in labels[:, 0]], kind="stable"):
            spent[0] = 0.0
            t0 = time.thread_time()
            simulate_batch(*labels[i : i + 1].T, seeds[i : i + 1], workers=1, **kw)
            total = time.thread_time() - t0
            costs.append((spent[0], total - spent[0]))
    finally:
        anneal_numba.anneal = kernel
    return costs


def bench_dataset(n_samples: int, rounds: int) -> dict:
    """The first ``n_samples`` training samples of configs/dataset.yaml through ``simulate_batch`` (numba),
    with 1 and 2 workers in alternating rounds 1, 2, 2, 1, ...; images, spins and energies must match."""
    cfg, _ = load_config(DATASET)
    params, protocol, image, jperp = resolve_physics(cfg)
    seeds = sample_seeds(cfg.seed, "train", 0, n_samples)
    labels = sample_labels(seeds, {k: getattr(cfg.labels, k) for k in LABELS})
    kw = {"image": image, "protocol": protocol, "params": params, "cells_per_side": cfg.cells_per_side}
    kw |= {"jperp": jperp, "backend": "numba"}
    sweeps = protocol.n_anneal + protocol.n_zero
    ns = [cell_size(t, cfg.cells_per_side)[0] for t in labels[:, 0]]
    updates = sum(4 * n * n * sweeps for n in ns)
    warm = replace(protocol, n_anneal=2, n_zero=1)
    for w in (1, 2):  # JIT / cache load, and the thread pool of each path
        simulate_batch(*labels[:2].T, seeds[:2], workers=w, **(kw | {"protocol": warm}))
    runs: dict[int, list[dict]] = {1: [], 2: []}
    first: dict[int, list[dict]] = {}
    load = [os.getloadavg()[0]]
    for r in range(rounds):
        for w in (1, 2) if r % 2 == 0 else (2, 1):
            out, wall, cpu = timed(lambda w=w: simulate_batch(*labels.T, seeds, workers=w, **kw))
            first.setdefault(w, out)
            runs[w].append({"wall_s": wall, "cpu_s": cpu})
            load.append(os.getloadavg()[0])
            print(f"dataset round {r}: workers={w} wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    identical = all(
        np.array_equal(a["image"], b["image"])
        and np.array_equal(a["spins"], b["spins"])
        and a["energy"] == b["energy"]
        for a, b in zip(first[1], first[2], strict=True)
    )
    wall = {w: float(np.median([x["wall_s"] for x in v])) for w, v in runs.items()}
    cpu = {w: float(np.median([x["cpu_s"] for x in v])) for w, v in runs.items()}
    best = {w: min(x["wall_s"] for x in v) for w, v in runs.items()}
    return {
        "samples": n_samples,
        "rounds": rounds,
        "theta": [float(labels[:, 0].min()), float(labels[:, 0].max())],
        "n": [min(ns), max(ns)],
        "updates": updates,
        "wall_s": wall,
        "cpu_s": cpu,
        "ratio": wall[1] / wall[2],  # median wall, 1 worker / 2 workers
        "ratio_best": best[1] / best[2],
        "rate_wall": {w: updates / wall[w] for w in wall},
        "rate_cpu": {w: updates / cpu[w] for w in cpu},
        "share": {w: cpu[w] / wall[w] for w in wall},  # CPU-s obtained per s: 1 and 2 on free cores
        "identical": identical,
        "load": load,
        **model_ratio(labels, seeds, kw),
    }


def model_ratio(labels: np.ndarray, seeds: np.ndarray, kw: dict) -> dict:
    """The 2-worker / 1-worker ratio that the per-sample CPU costs predict for 2 free cores."""
    costs = sample_costs(labels, seeds, kw)
    one = sum(k + o for k, o in costs)
    return {
        "model_ratio": one / two_core_model(costs),
        "other_share": sum(o for _, o in costs) / one,  # CPU share outside the kernel (GIL-bound at worst)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run: fewer samples and sweeps")
    ap.add_argument("--samples", type=int, default=None, help="dataset samples per run (default 32, quick 8)")
    ap.add_argument("--rounds", type=int, default=None, help="1/2-worker rounds (default 4, quick 2)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    a = ap.parse_args()
    t_start = time.strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()
    full = AnnealProtocol()
    short = AnnealProtocol(n_anneal=20, n_zero=10)
    proto = short if a.quick else full
    k = 2 if a.quick else 4
    n = cell_size(THETA)[0]
    res = {}
    res["numpy"] = bench_backend("numpy", 1, short if a.quick else AnnealProtocol(n_anneal=40, n_zero=20), 1)
    res["numba-1"] = bench_backend("numba", k, proto, 1)
    res["numba-2"] = bench_backend("numba", k, proto, 2)
    # torch on the CPU with one intra-op thread: on these small tensors more threads only add barrier waits
    res["torch-cpu"] = bench_backend(
        "torch", 2 * k, short if a.quick else AnnealProtocol(n_anneal=100, n_zero=50), 1
    )
    res["spirit"] = bench_spirit(10 if a.quick else 60)
    for name, r in res.items():
        print(name, json.dumps({k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in r.items()}))
    ds = bench_dataset(a.samples or (8 if a.quick else 32), a.rounds or (2 if a.quick else 4))
    print("dataset", json.dumps(ds))
    load1 = os.getloadavg()

    base = res["spirit"].get("updates_per_cpu_s")
    cfg, _ = load_config(DATASET)
    images, total = dataset_updates(cfg)
    per_core = ds["rate_cpu"][1]
    lines = [
        f"Measured {t_start} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"`{'--quick' if a.quick else 'full'}` run. The machine is shared: load average (1, 5, 15 min) "
        f"{load0[0]:.1f}, {load0[1]:.1f}, {load0[2]:.1f} at the start and {load1[0]:.1f}, {load1[1]:.1f}, "
        f"{load1[2]:.1f} at the end, so wall-clock rates are noisy and CPU-time rates are the fairer "
        "per-core figure.",
        f"Config: θ = {THETA}° (n = {n}, {4 * n * n} spins), J = {J} meV, D = {D} meV, default image spec; "
        "updates/s counts site updates over the whole protocol (heat bath + T = 0 sweeps), end to end "
        "through `simulate_batch` (start state, annealing, energy, rendering); images/s is scaled to the "
        "300-sweep protocol.",
        "",
        "| back end | threads | samples × sweeps | M updates/s (wall) | M updates/s per CPU-s "
        "| images/s (wall) | × Spirit (CPU-s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"| {name} | – | – | not run: {r['error']} | | | |")
            continue
        thr = r.get("workers", 1)
        sw = f"{r.get('samples', 1)} × {r.get('sweeps', r.get('iterations'))}"
        ratio = f"{r['updates_per_cpu_s'] / base:.1f}" if base else "–"
        lines.append(
            f"| {name} | {thr} | {sw} | {r['updates_per_s'] / 1e6:.2f} | "
            f"{r['updates_per_cpu_s'] / 1e6:.2f} | {r['images_per_s']:.2f} | {ratio} |"
        )
    per_cpu = {name: r.get("updates_per_cpu_s") for name, r in res.items()}
    nb_ratio = res["numba-2"]["updates_per_s"] / res["numba-1"]["updates_per_s"]
    lines += [
        "",
        f"- numba 2 threads / 1 thread (wall): {nb_ratio:.2f}×; "
        f"numba 1 thread / numpy (CPU-s): {per_cpu['numba-1'] / per_cpu['numpy']:.1f}×; "
        f"numba 1 thread / torch CPU (CPU-s): {per_cpu['numba-1'] / per_cpu['torch-cpu']:.1f}×.",
        "- Spirit 2.2: Metropolis MC (one iteration = one trial move per spin) at T = 1.5 meV on a honeycomb "
        "bilayer with the same spin count and couplings (constant interlayer J⊥, Néel DMI per pair, XXZ "
        "replaced by on-site anisotropy), OMP_NUM_THREADS=1."
        if "error" not in res["spirit"]
        else f"- Spirit 2.2 could not be run: {res['spirit']['error']}",
        "- GPU: not measured (no GPU lent in this session); the torch path is device-agnostic "
        "(`backend='torch'` picks CUDA when available).",
        "",
        "### The dataset's own samples: 1 and 2 workers",
        "",
        f"The first {ds['samples']} training samples of `configs/dataset.yaml` (θ {ds['theta'][0]:.2f}–"
        f"{ds['theta'][1]:.2f}°, n = {ds['n'][0]}–{ds['n'][1]}, {ds['updates'] / 1e6:.0f} M updates per "
        "run), "
        "through `simulate_batch` (numba) as `moirescale generate` calls it; "
        f"{ds['rounds']} rounds of alternating 1- and 2-worker runs (1, 2, 2, 1, …), medians. "
        f"Load average (1 min) during these runs: {min(ds['load']):.1f}–{max(ds['load']):.1f}.",
        "",
        "| workers | wall s | CPU s | M updates/s (wall) | M updates/s per CPU-s | CPU-s obtained per s |",
        "|---|---|---|---|---|---|",
    ]
    for w in (1, 2):
        lines.append(
            f"| {w} | {ds['wall_s'][w]:.2f} | {ds['cpu_s'][w]:.2f} | {ds['rate_wall'][w] / 1e6:.1f} | "
            f"{ds['rate_cpu'][w] / 1e6:.1f} | {ds['share'][w]:.2f} |"
        )
    free = ds["share"][2] >= 1.8
    lines += [
        "",
        f"- **2 workers / 1 worker: {ds['ratio']:.2f}×** (wall, medians; best run of each: "
        f"{ds['ratio_best']:.2f}×); images, spins and energies identical: "
        f"{'yes' if ds['identical'] else 'NO'}. "
        f"Predicted for 2 free cores from the per-sample CPU costs of this run ({ds['other_share']:.0%} of "
        "the CPU time outside the kernel, counted as holding the GIL): "
        f"{ds['model_ratio']:.2f}×. "
        + (
            "The 2-worker runs obtained about two CPU-s per second: the two cores were free enough."
            if free
            else f"The 2-worker runs obtained only {ds['share'][2]:.2f} CPU-s per second (2 on free cores): "
            "other jobs held the cores, so this ratio is a lower bound set by the machine's load, not by "
            "the code."
        ),
        f"- **Per core: {per_core / 1e6:.1f} M updates/s per CPU-s** (1 worker, end to end).",
        f"- **Paper scale** (`configs/dataset.yaml`: {images:,} images, θ ~ U[{cfg.labels.theta[0]}°, "
        f"{cfg.labels.theta[1]}°] → {total:.2e} spin updates), on 2 idle cores at the per-core rate above: "
        + (
            f"**{total / (per_core * ds['ratio']) / 3600:.2f} h** × the measured ratio "
            f"({total / (2 * per_core) / 3600:.2f} h at exactly 2×)"
            if free
            else f"**{total / (2 * per_core) / 3600:.2f} h** at 2×, "
            f"{total / (1.8 * per_core) / 3600:.2f} h at 1.8× (the ratio measured here is the machine's "
            "load, not the code's)"
        )
        + f"; at the 2-worker wall rate of this run, on the machine as loaded: "
        f"{total / ds['rate_wall'][2] / 3600:.2f} h.",
    ]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        write_section(f"## Simulation throughput (`benchmarks/simulate.py`)\n\n{text}", SECTION)


if __name__ == "__main__":
    main()
