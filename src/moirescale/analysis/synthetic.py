"""Synthetic results tables with known scaling laws, for tests, docs and trying the report without a sweep.

The loss of realization r at a grid point is ``law(n_params, n_train, target) * exp(sigma * z_r)`` with
``z_r ~ N(0, 1)`` (log-normal scatter over seeds, as observed for trained networks),
optionally with a fraction
of outliers multiplied by ``outlier_factor`` and a fraction of failed / diverged runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from moirescale import results

Law = Callable[[int, int, str], float]


def fcn_params(width: int, n_layers: int, n_in: int = 32 * 32, n_out: int = 1) -> int:
    """Trainable parameters of an FCN with ``n_layers`` hidden layers of ``width`` neurons."""
    return n_in * width + width + (n_layers - 1) * (width * width + width) + width * n_out + n_out


def joint_law(E: float = 0.0, A: float = 0.0, a: float = 0.5, B: float = 1.0e3, b: float = 1.5) -> Law:
    """``eps = E + A * N_M^-a + B * N_D^-b`` (the same for every target)."""

    def law(n_params: int, n_train: int, target: str) -> float:
        return E + A * float(n_params) ** -a + B * float(n_train) ** -b

    return law


def size_dependent_law(a_D: float = 0.3, b_D: float = 1.5, B: float = 1.0e3, ref: float = 1.0e4) -> Law:
    """``eps = B * (N_D/ref)^-alpha_D(N_M) / ref`` with ``alpha_D = a_D * log10(N_M / 1e6) + b_D``
    (Fig. 5)."""

    def law(n_params: int, n_train: int, target: str) -> float:
        alpha = a_D * np.log10(n_params / 1e6) + b_D
        return B / ref * (n_train / ref) ** -alpha

    return law


def synthetic_rows(
    law: Law,
    *,
    arch: str = "fcn",
    widths: Sequence[int] = (4, 16, 64),
    n_layers: Sequence[int] = (3,),
    n_params: Sequence[int] | None = None,
    targets: Sequence[str] = ("J",),
    n_trains: Sequence[int] = tuple(224 * 2**k for k in range(6)),
    n_realizations: int = 10,
    sigma: float = 0.3,
    outlier_frac: float = 0.0,
    outlier_factor: float = 30.0,
    failed_frac: float = 0.0,
    schedules: Sequence[str] = ("adjustable",),
    grid: str = "synthetic",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of the results table (see :mod:`moirescale.results`) drawn from ``law``.

    For FCNs the model sizes come from ``widths x n_layers``; for other archs pass ``n_params`` (one model per
    value, width and n_layers null).
    """
    rng = np.random.default_rng(seed)
    if arch == "fcn":
        models = [(L, w, fcn_params(w, L)) for L in n_layers for w in widths]
    else:
        models = [(None, None, int(p)) for p in (n_params or (11_000_000,))]
    rows: list[dict[str, Any]] = []
    for sched in schedules:
        for L, w, p in models:
            for t in targets:
                for nd in n_trains:
                    base = law(p, nd, t)
                    for r in range(n_realizations):
                        mse = base * float(np.exp(sigma * rng.standard_normal()))
                        if rng.random() < outlier_frac:
                            mse *= outlier_factor
                        status, err = "ok", ""
                        u = rng.random()
                        if u < failed_frac / 2:
                            status, mse, err = "failed", float("nan"), "synthetic failure"
                        elif u < failed_frac:
                            status, mse, err = "diverged", float("nan"), "synthetic NaN loss"
                        rid = f"{arch}-{L}-{w}-{p}-{t}-{nd}-{sched}-{r}"
                        rows.append(
                            {
                                "run_id": rid,
                                "group_id": rid.rsplit("-", 1)[0],
                                "grid": grid,
                                "arch": arch,
                                "n_layers": L,
                                "width": w,
                                "n_params": p,
                                "target": t,
                                "n_train": nd,
                                "realization": r,
                                "seed": r,
                                "schedule": sched,
                                "test_mse": mse,
                                "val_mse": mse,
                                "status": status,
                                "error": err,
                                "device": "synthetic",
                                "noise_train": 0.0,
                            }
                        )
    return rows


def write_synthetic(rundir: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Append rows to ``RUNDIR/results.parquet`` with the real writer."""
    results.append_rows(rundir, rows)


def demo_rows(n_realizations: int = 8, n_nd: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """A full synthetic sweep with every figure's ingredients: FCN widths and depths, ResNet-18 and ViT, three
    targets, two schedules for one model, failed runs. Exponents follow :func:`joint_law` per target."""
    nds = tuple(224 * 2**k for k in range(n_nd))
    laws = {
        "theta": joint_law(E=5e-5, A=2.0, a=0.5, B=400.0, b=1.3),
        "J": joint_law(E=1e-4, A=3.0, a=0.6, B=800.0, b=1.6),
        "D": joint_law(E=2e-4, A=1.0, a=0.4, B=300.0, b=1.1),
    }

    def law(p: int, nd: int, t: str) -> float:
        return laws[t](p, nd, t)

    common = {
        "targets": ("theta", "J", "D"),
        "n_trains": nds,
        "n_realizations": n_realizations,
        "failed_frac": 0.03,
    }
    rows = synthetic_rows(law, widths=(4, 16, 64, 256), n_layers=(3,), seed=seed, **common)
    rows += synthetic_rows(law, widths=(16,), n_layers=(1, 5), seed=seed + 1, **common)
    rows += synthetic_rows(law, arch="resnet18", n_params=(11_170_000,), seed=seed + 2, **common)
    rows += synthetic_rows(law, arch="vit", n_params=(5_500_000,), seed=seed + 3, **common)
    slow = joint_law(E=3e-4, A=3.0, a=0.6, B=800.0, b=1.2)
    rows += synthetic_rows(
        lambda p, nd, t: slow(p, nd, t),
        widths=(16,),
        n_layers=(3,),
        schedules=("constant",),
        seed=seed + 4,
        **common,
    )
    return rows


def noise_rows(seed: int = 0) -> list[dict[str, Any]]:
    """A synthetic ``noise.parquet`` table
    (arch, width, n_layers, target, n_train, noise_kind, noise_level, mse)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("gaussian", "flip"):
        for level in (0.0, 0.05, 0.1, 0.2, 0.4):
            for w in (16, 256):
                for r in range(4):
                    mse = (
                        1e-3
                        * (64 / w) ** 0.5
                        * (1 + 40 * level**1.5)
                        * float(np.exp(0.2 * rng.standard_normal()))
                    )
                    out.append(
                        {
                            "arch": "fcn",
                            "width": w,
                            "n_layers": 3,
                            "target": "J",
                            "n_train": 28672,
                            "noise_kind": kind,
                            "noise_level": level,
                            "mse": mse,
                            "realization": r,
                        }
                    )
    return out
