"""Synthetic results tables with known scaling laws, for the tests (moved here from moirescale.analysis).

The loss of realization r at a grid point is ``law(n_params, n_train, target) * exp(sigma * z_r +
sigma_data * d_r(N_D))`` with ``z_r ~ N(0, 1)`` (log-normal scatter over seeds, as observed for trained
networks) and an optional data term ``d_r`` (:func:`nested_data_term`: which images realization r's nested
subsets hold, shared by its networks of every size and target, or by all realizations with ``shared_data``),
optionally with a fraction of outliers multiplied by ``outlier_factor`` and a fraction of failed / diverged
runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from moirescale.models import fcn_param_count

Law = Callable[[int, int, str], float]


def fcn_params(width: int, n_layers: int, n_in: int = 32 * 32, n_out: int = 1) -> int:
    """Trainable parameters of an FCN with ``n_layers`` hidden layers of ``width`` neurons."""
    return fcn_param_count(n_in, n_out, n_layers, width)


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


def nested_data_term(rng: np.random.Generator, n_trains: Sequence[float], n_paths: int) -> np.ndarray:
    """(n_paths, len(n_trains)) unit-variance effects of nested training subsets on the log loss.

    ``d(N) = W(N) / sqrt(N)`` for a Brownian motion ``W``: the standardised mean of a per-image effect over
    the first N images of one permutation. Nested subsets overlap, so ``corr(d(N), d(N')) = sqrt(min / max)``:
    a realization that drew helpful images at N_D = 224 still holds them at 448.
    """
    n = np.asarray(n_trains, dtype=float)
    order = np.argsort(n)
    ns = n[order]
    steps = np.diff(np.concatenate([[0.0], ns]))
    w = np.cumsum(rng.standard_normal((n_paths, ns.size)) * np.sqrt(steps), axis=1)
    out = np.empty_like(w)
    out[:, order] = w / np.sqrt(ns)
    return out


def curve_logs(
    rng: np.random.Generator,
    n_trains: Sequence[float],
    *,
    alpha: float = 1.5,
    prefactor: float = 1.0e3,
    sigma: float = 0.3,
    sigma_data: float = 0.3,
    n_r: int = 10,
    shared_data: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One N_D curve ``prefactor * N^-alpha``: per point, the log MSEs of ``n_r`` realizations and their
    labels.

    Log noise = ``sigma`` x independent per network (initialisation, training) + ``sigma_data`` x
    :func:`nested_data_term` per realization (own subsets), or one term for all (``shared_data``).
    """
    n = np.asarray(n_trains, dtype=float)
    d = nested_data_term(rng, n, 1 if shared_data else n_r)
    logs = np.log(prefactor) - alpha * np.log(n) + sigma * rng.standard_normal((n_r, n.size)) + sigma_data * d
    return [logs[:, k] for k in range(n.size)], [np.arange(n_r)] * n.size


def alpha_coverage(
    n_draws: int,
    n_trains: Sequence[float],
    *,
    joint: bool = True,
    n_boot: int = 400,
    seed: int = 0,
    **curve_kw: Any,
) -> dict[str, float]:
    """Coverage of the 95 % α interval of :func:`moirescale.analysis.fits.fit_power_law` on ``n_draws`` curves
    of :func:`curve_logs`: the fraction that contains the true α, the median interval width, and the SD of
    the estimates over the draws (a calibrated interval is about 2 x 1.96 x that wide). ``joint``: resample
    realizations jointly across the curve (what the analysis does) instead of each point on its own."""
    from moirescale.analysis.fits import fit_power_law

    rng = np.random.default_rng(seed)
    truth = float(curve_kw.get("alpha", 1.5))
    hits, widths, est = 0, [], []
    for d in range(n_draws):
        logs, labels = curve_logs(rng, n_trains, **curve_kw)
        fit = fit_power_law(n_trains, logs, n_boot=n_boot, seed=d, labels=labels if joint else None)
        lo, hi = fit.interval(1)
        hits += lo <= truth <= hi
        widths.append(hi - lo)
        est.append(fit.alpha)
    return {
        "coverage": hits / n_draws,
        "median_width": float(np.median(widths)),
        "sd_alpha": float(np.std(est, ddof=1)),
    }


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
    sigma_data: float = 0.0,
    shared_data: bool = False,
    outlier_frac: float = 0.0,
    outlier_factor: float = 30.0,
    failed_frac: float = 0.0,
    schedules: Sequence[str] = ("adjustable",),
    grid: str = "synthetic",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows of the results table (see :mod:`moirescale.results`) drawn from ``law``.

    For FCNs the model sizes come from ``widths x n_layers``; for other archs pass ``n_params`` (one model per
    value, width and n_layers null). ``sigma_data`` adds the data term of :func:`nested_data_term`
    (realization r's, for all its models and targets; or one for all realizations with ``shared_data``), drawn
    from a separate stream so that tables without it are unchanged.
    """
    rng = np.random.default_rng(seed)
    data_term = np.zeros((n_realizations, len(n_trains)))
    if sigma_data > 0:
        drng = np.random.default_rng([seed, 1])
        paths = nested_data_term(drng, n_trains, 1 if shared_data else n_realizations)
        data_term = sigma_data * np.broadcast_to(paths, data_term.shape)
    if arch == "fcn":
        models = [(L, w, fcn_params(w, L)) for L in n_layers for w in widths]
    else:
        models = [(None, None, int(p)) for p in (n_params or (11_000_000,))]
    rows: list[dict[str, Any]] = []
    for sched in schedules:
        for L, w, p in models:
            for t in targets:
                for k, nd in enumerate(n_trains):
                    base = law(p, nd, t)
                    for r in range(n_realizations):
                        mse = base * float(np.exp(sigma * rng.standard_normal() + data_term[r, k]))
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
                                "data_seed": seed if shared_data else 1000 + r,
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


def synth(n: int, seed: int, c: int = 1, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Images that are a smooth function of the scaled labels (a learnable regression)."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    gy, gx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    t, j, d = (y[:, k, None, None] for k in range(3))
    img = np.cos(2 * np.pi * (t * gx + 0.5 * gy)) * (0.5 + j) + d * gy
    return np.repeat(img[:, None], c, axis=1).astype(np.float32), y
