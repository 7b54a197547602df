"""simulate_sample / simulate_batch: labels and seeds in, annealed spins, J_perp and images out."""

from __future__ import annotations

import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from moirescale.errors import UserError
from moirescale.physics import rng
from moirescale.physics.energy import bond_energy, couplings
from moirescale.physics.jperp import jperp_landscape
from moirescale.physics.lattice import cell_size, check_theta, theta_eff
from moirescale.physics.layout import from_soa, to_soa
from moirescale.physics.params import AnnealProtocol, ImageSpec, JperpSpec, ModelParams
from moirescale.physics.render import render_image

BACKENDS = ("auto", "numba", "torch", "numpy")
# per torch or numpy chunk (whole-array sweeps): about 128 MiB of spin state, x ~10 for temporaries
_CHUNK_STATE_FLOATS = 1 << 25


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``torch`` when CUDA is available, else ``numba``; validates the name."""
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        import torch

        return "torch" if torch.cuda.is_available() else "numba"
    return backend


def _check_labels(theta_deg, J, D, seeds) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    try:
        th = np.atleast_1d(np.asarray(theta_deg, dtype=np.float64))
        jj = np.atleast_1d(np.asarray(J, dtype=np.float64))
        dd = np.atleast_1d(np.asarray(D, dtype=np.float64))
    except (TypeError, ValueError):
        raise UserError("theta, J and D must be numbers or arrays of numbers") from None
    seeds_l = [rng.check_seed(s) for s in np.atleast_1d(np.asarray(seeds, dtype=object)).tolist()]
    if th.ndim != 1 or not (len(th) == len(jj) == len(dd) == len(seeds_l)):
        raise UserError(
            "theta, J, D and seeds must be 1-D of equal length, got "
            f"{len(th)}, {len(jj)}, {len(dd)}, {len(seeds_l)}"
        )
    for t in th:
        check_theta(t)
    for name, arr in (("J", jj), ("D", dd)):
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > 100)
        if bad.any():
            raise UserError(f"{name} must be a finite coupling in [0, 100] meV, got {arr[bad][0]}")
    return th, jj, dd, seeds_l


def _sample_threads(be: str, count: int, workers: int | None) -> int:
    """Threads that each run whole samples: the numba thread count when the batch has at least that many
    samples, else 1 (the kernel then shares each sample's rows between its threads)."""
    if be != "numba" or count < 2:
        return 1
    from moirescale.physics import anneal_numba

    threads = anneal_numba.thread_count(workers)
    return threads if count >= threads else 1


def simulate_batch(
    theta_deg,
    J,
    D,
    seeds,
    *,
    backend: str = "auto",
    image: ImageSpec = ImageSpec(),
    protocol: AnnealProtocol = AnnealProtocol(),
    params: ModelParams = ModelParams(),
    cells_per_side: int = 1,
    jperp: JperpSpec = JperpSpec(),
    workers: int | None = None,
    device: str | None = None,
) -> list[dict]:
    """Simulate many samples; one dict per sample, in input order.

    Parameters
    ----------
    theta_deg, J, D, seeds : 1-D arrays of equal length: twist angle (deg), J_perp depth (meV), DMI (meV),
        seed.
    backend : ``auto`` (torch on CUDA if available, else numba), ``numba``, ``torch``, ``numpy`` (reference).
    image, protocol, params : image spec, annealing protocol, fixed model constants.
    cells_per_side : moire cells per side of the simulation cell (finer angle grid, m^2 the cost).
    jperp : how J enters the interlayer coupling (``scale``, the default, or ``shift``; MODEL.md §7).
    workers : numba threads (default all cores); also torch's CPU threads while it runs.
    device : torch device for the torch back end (default CUDA if available, else CPU).

    Returns
    -------
    list of dict with ``spins`` float32 (2,n,n,2,3), ``jperp`` float64 (n,n,2) meV, ``image`` float32 (C,H,W),
    ``theta_eff`` (deg), ``J``, ``D``, ``seed``, ``energy`` (total, meV). Deterministic given seed and
    back end.
    """
    th, jj, dd, seeds_l = _check_labels(theta_deg, J, D, seeds)
    be = resolve_backend(backend)
    image.validate()
    protocol.validate()
    jperp.validate()
    if workers is not None and (int(workers) != workers or workers < 1):
        raise UserError(f"workers must be a positive integer, got {workers}")
    temps = protocol.temperatures()
    groups: dict[int, list[int]] = defaultdict(list)
    sizes = {}
    for idx, t in enumerate(th):
        n, L0 = cell_size(t, cells_per_side)
        groups[n].append(idx)
        sizes[idx] = (n, L0)

    out: list[dict | None] = [None] * len(th)

    def run(n: int, idxs: list[int], threads: int | None) -> None:
        jperps = [jperp_landscape(n, sizes[i][1], jj[i], jperp.mode) for i in idxs]
        cps = [couplings(jp, dd[i], params) for jp, i in zip(jperps, idxs, strict=True)]
        starts = [rng.start_seed(seeds_l[i], protocol.start) for i in idxs]
        xs = np.stack([to_soa(rng.initial_spins(n, s, protocol.noise)) for s in starts])
        jps = np.ascontiguousarray(np.stack([np.moveaxis(cp["jperp"], 2, 0) for cp in cps]))
        dmis = np.ascontiguousarray(np.stack([cp["dmi"] for cp in cps]))
        keys = np.array([rng.sample_key(s) for s in starts], dtype=np.uint64)
        c0 = cps[0]
        xs = _run_backend(be, xs, jps, dmis, c0, keys, temps, threads, device)
        spins_all = from_soa(xs)
        for b, i in enumerate(idxs):
            spins = spins_all[b]
            out[i] = {
                "spins": spins,
                "jperp": jperps[b],
                "image": render_image(spins, rng.image_origin(n, seeds_l[i], image.origin), image),
                "theta_eff": theta_eff(sizes[i][1]),
                "J": float(jj[i]),
                "D": float(dd[i]),
                "seed": seeds_l[i],
                "energy": bond_energy(spins, jperps[b], dd[i], params),
            }

    chunks = []
    for n, members in groups.items():
        chunk = len(members) if be == "numba" else max(1, _CHUNK_STATE_FLOATS // (12 * n * n))
        chunks += [(n, members[s : s + chunk]) for s in range(0, len(members), chunk)]
    pool = _sample_threads(be, len(th), workers)
    if pool > 1:
        # numba: one whole sample (start state, anneal, image, energy) per thread, the largest first; the
        # kernel releases the GIL, so every core works and none waits at a barrier
        jobs = sorted(((n, [i]) for n, idxs in chunks for i in idxs), key=lambda job: -job[0])
        with ThreadPoolExecutor(pool) as ex:
            futures = [ex.submit(run, n, idxs, 1) for n, idxs in jobs]
            try:
                for f in futures:
                    f.result()
            finally:
                for f in futures:
                    f.cancel()
    else:
        for n, idxs in chunks:
            run(n, idxs, workers)
    return out  # type: ignore[return-value]


def anneal_spins(
    jperp: np.ndarray,
    D: float,
    seed: int,
    *,
    backend: str = "auto",
    protocol: AnnealProtocol = AnnealProtocol(),
    temps: np.ndarray | None = None,
    params: ModelParams = ModelParams(),
    spins0: np.ndarray | None = None,
    workers: int | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Anneal one sample on any J_perp landscape ``(n, n, 2)`` meV (e.g. a constant one, for tests).

    ``temps`` (one temperature per sweep) overrides ``protocol``; ``spins0`` overrides the seeded +z start.
    Returns float32 spins ``(2, n, n, 2, 3)``.
    """
    be = resolve_backend(backend)
    seed = rng.check_seed(seed)
    jperp = np.asarray(jperp, dtype=np.float64)
    n = jperp.shape[0]
    if jperp.shape != (n, n, 2):
        raise UserError(f"jperp must have shape (n, n, 2), got {jperp.shape}")
    temps = protocol.temperatures() if temps is None else np.asarray(temps, dtype=np.float32).reshape(-1)
    s0 = rng.initial_spins(n, seed, protocol.noise) if spins0 is None else np.asarray(spins0, np.float32)
    if s0.shape != (2, n, n, 2, 3):
        raise UserError(f"spins0 must have shape {(2, n, n, 2, 3)}, got {s0.shape}")
    cp = couplings(jperp, D, params)
    xs = to_soa(s0)[None].copy()
    jps = np.ascontiguousarray(np.moveaxis(cp["jperp"], 2, 0)[None])
    keys = np.array([rng.sample_key(seed)], dtype=np.uint64)
    xs = _run_backend(be, xs, jps, cp["dmi"][None].copy(), cp, keys, temps, workers, device)
    return from_soa(xs)[0]


def _run_backend(be, xs, jps, dmis, c0, keys, temps, workers, device):
    if be == "numba":
        from moirescale.physics import anneal_numba

        return anneal_numba.anneal(xs, jps, dmis, c0["j1"], c0["lam"], c0["bz"], keys, temps, workers=workers)
    if be == "torch":
        import torch

        from moirescale.physics import anneal_torch

        old = torch.get_num_threads()
        # Small tensors gain nothing from intra-op threads, and their barriers cost a lot on a busy CPU.
        per_op = xs.shape[0] * xs.shape[-1] ** 2 * 3
        threads = int(workers) if workers is not None else min(old, max(1, per_op // (1 << 16)))
        torch.set_num_threads(threads)
        try:
            return anneal_torch.anneal(
                xs, jps, dmis, c0["j1"], c0["lam"], c0["bz"], keys, temps, device=device
            )
        finally:
            torch.set_num_threads(old)
    from moirescale.physics import anneal_numpy

    return anneal_numpy.anneal(xs, jps, dmis, c0["j1"], c0["lam"], c0["bz"], keys, temps)


def simulate_sample(
    theta_deg: float,
    J: float,
    D: float,
    seed: int,
    *,
    backend: str = "auto",
    image: ImageSpec = ImageSpec(),
    protocol: AnnealProtocol = AnnealProtocol(),
    params: ModelParams = ModelParams(),
    cells_per_side: int = 1,
    jperp: JperpSpec = JperpSpec(),
    workers: int | None = None,
    device: str | None = None,
) -> dict:
    """Simulate one sample; see :func:`simulate_batch` for the arguments and the returned dict."""
    for name, val in (("theta", theta_deg), ("J", J), ("D", D)):
        if np.ndim(val) != 0:
            raise UserError(f"{name} must be a single number for simulate_sample")
        if not isinstance(val, int | float | np.number) or not math.isfinite(float(val)):
            raise UserError(f"{name} must be a finite number, got {val!r}")
    return simulate_batch(
        [theta_deg],
        [J],
        [D],
        [seed],
        backend=backend,
        image=image,
        protocol=protocol,
        params=params,
        cells_per_side=cells_per_side,
        jperp=jperp,
        workers=workers,
        device=device,
    )[0]
