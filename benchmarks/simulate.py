"""Simulation throughput: spin updates/s and images/s of every back end at the default config, in one run.

Back ends: the plain vectorised numpy sweep (the reference), the numba kernel on 1 and 2 threads, the batched
torch path on the CPU, and Spirit 2.2 (Metropolis Monte Carlo on a honeycomb bilayer of the same size, in a
subprocess; skipped with the reason if it cannot run). Rewrites only the ``simulate`` section of
docs/benchmarks.md. The machine is shared, so compare ratios within one run; wall-clock and CPU-time rates
are both recorded (CPU time is the fairer per-core figure when other jobs compete for the cores).

    .venv/bin/python benchmarks/simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import replace
from pathlib import Path

from moirescale.physics import AnnealProtocol, cell_size, simulate_batch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "simulate"
PAPER_IMAGES = 157_696
THETA, J, D = 1.0, 0.6, 0.5  # default config: the middle of the dataset's angle range (n = 57)


def paper_updates(n_sweeps: int = 300) -> float:
    """Spin updates of the paper-scale dataset: theta ~ U[0.5, 2] deg, n ~ 1/theta_rad, 4 n^2 spins."""
    t1, t2 = math.radians(0.5), math.radians(2.0)
    mean_inv_theta2 = 1.0 / (t1 * t2)  # E[1/theta^2] for theta uniform on [t1, t2]
    return PAPER_IMAGES * 4 * mean_inv_theta2 * n_sweeps


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


def write_section(text: str) -> None:
    begin, end = f"<!-- BEGIN {SECTION} -->", f"<!-- END {SECTION} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if begin in old and end in old:
        new = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(DOC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run: fewer samples and sweeps")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    a = ap.parse_args()
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

    base = res["spirit"].get("updates_per_cpu_s")
    nb2 = res["numba-2"]["updates_per_s"]
    total = paper_updates()
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs: wall-clock rates are noisy, CPU-time rates are the "
        f"fairer per-core figure), `{'--quick' if a.quick else 'full'}` run.",
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
    lines += [
        "",
        f"- numba 2 threads / 1 thread (wall): {nb2 / res['numba-1']['updates_per_s']:.2f}×; "
        f"numba 1 thread / numpy (CPU-s): {per_cpu['numba-1'] / per_cpu['numpy']:.1f}×; "
        f"numba 1 thread / torch CPU (CPU-s): {per_cpu['numba-1'] / per_cpu['torch-cpu']:.1f}×.",
        f"- Paper scale: {PAPER_IMAGES:,} images, θ ~ U[0.5°, 2°] → {total:.2e} spin updates; at the numba "
        f"2-thread rate measured here: {total / nb2 / 3600:.1f} h on these 2 cores "
        f"(at {res['numba-1']['updates_per_cpu_s'] / 1e6:.1f} M/s per core with 2 idle cores: "
        f"{total / (2 * res['numba-1']['updates_per_cpu_s']) / 3600:.1f} h).",
        "- Spirit 2.2: Metropolis MC (one iteration = one trial move per spin) at T = 1.5 meV on a honeycomb "
        "bilayer with the same spin count and couplings (constant interlayer J⊥, Néel DMI per pair, XXZ "
        "replaced by on-site anisotropy), OMP_NUM_THREADS=1."
        if "error" not in res["spirit"]
        else f"- Spirit 2.2 could not be run: {res['spirit']['error']}",
        "- GPU: not measured (no GPU lent in this session); the torch path is device-agnostic "
        "(`backend='torch'` picks CUDA when available).",
    ]
    text = "\n".join(lines)
    print(text)
    if not a.no_write:
        write_section(f"## Simulation throughput (`benchmarks/simulate.py`)\n\n{text}")


if __name__ == "__main__":
    main()
