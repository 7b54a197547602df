"""Noise robustness (as in Lee et al. 2024): corrupt test images, evaluate trained networks, tabulate the MSE.

Two corruptions of images in [-1, 1]:

- ``gaussian``: add N(0, sigma^2) per pixel, then clip to [-1, 1] (the images stay valid inputs);
- ``flip``: flip the sign of a random fraction p of the pixels (a domain read with the wrong polarity).

Both are deterministic given a seed. The noise of one (kind, level) is the same for every network, so the
MSE differences between networks are paired, not a fresh draw each. ``evaluate_noise`` writes
``RUNDIR/noise.parquet`` (one row per network and noise setting); the report shows it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moirescale.errors import UserError

GAUSSIAN_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # sigma, as in Lee et al. 2024
FLIP_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)  # fraction of pixels with flipped sign
KINDS = ("clean", "gaussian", "flip")
NOISE_TABLE = "noise.parquet"
NOISE_COLUMNS = [
    "run_id", "arch", "width", "n_layers", "target", "n_train", "realization",
    "noise_kind", "noise_level", "mse", "mse_theta", "mse_J", "mse_D", "n_test",
]


def noise_seed(seed: int, kind: str, level: float) -> int:
    """Seed of one noise setting: independent streams per (kind, level), the same for every network."""
    h = hashlib.sha256(f"{seed}:{kind}:{level:.6g}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"images must be floating point in [-1, 1], got dtype {x.dtype}")
    return x


def add_gaussian(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Images plus N(0, sigma^2) per pixel, clipped to [-1, 1]. Returns a new float32 array.

    Parameters
    ----------
    images : array in [-1, 1], any shape (typically (N, C, H, W))
    sigma : standard deviation of the noise, >= 0
    seed : the same seed gives the same noise
    """
    x = _check_images(images)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise UserError(f"gaussian noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    out = x.astype(np.float32, copy=True)
    if sigma > 0:
        out += rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
        np.clip(out, -1.0, 1.0, out=out)
    return out


def flip_pixels(images: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Images with the sign of each pixel flipped independently with probability ``fraction``.

    Every value (each channel of each pixel) is an independent Bernoulli draw, so the flipped fraction of a
    large image is ``fraction`` up to binomial fluctuations. Returns a new float32 array.
    """
    x = _check_images(images)
    if not (0.0 <= fraction <= 1.0):
        raise UserError(f"flip fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    out = x.astype(np.float32, copy=True)
    if fraction > 0:
        mask = rng.random(size=x.shape) < fraction
        out[mask] = -out[mask]
    return out


def apply_noise(images: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """Dispatch on ``kind``: 'clean' (a copy), 'gaussian' (sigma = level) or 'flip' (fraction = level)."""
    if kind == "clean":
        return _check_images(images).astype(np.float32, copy=True)
    if kind == "gaussian":
        return add_gaussian(images, level, seed)
    if kind == "flip":
        return flip_pixels(images, level, seed)
    raise UserError(f"unknown noise kind {kind!r}; choose one of {', '.join(KINDS)}")


def gaussian_noise_torch(x: Any, sigma: float, generator: Any = None) -> Any:
    """Training-time augmentation: ``x + N(0, sigma^2)`` clipped to [-1, 1], on x's device (torch tensors).

    For the training loop (``TrainSpec.noise_train``): a fresh draw per batch, from ``generator`` if given.
    """
    import torch

    if sigma <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + sigma * noise).clamp_(-1.0, 1.0)


def noise_settings(
    levels: Sequence[float] = GAUSSIAN_LEVELS, flips: Sequence[float] = FLIP_LEVELS
) -> list[tuple[str, float]]:
    """The (kind, level) pairs to evaluate: clean first (the baseline), then gaussian, then flip."""
    for s in levels:
        if not (np.isfinite(s) and s >= 0):
            raise UserError(f"--levels: sigma must be >= 0, got {s}")
    for p in flips:
        if not (0 <= p <= 1):
            raise UserError(f"--flip: fraction must be in [0, 1], got {p}")
    return [("clean", 0.0)] + [("gaussian", float(s)) for s in levels] + [("flip", float(p)) for p in flips]


def noise_table_path(rundir: str | os.PathLike[str]) -> Path:
    return Path(rundir) / NOISE_TABLE


def read_noise(rundir: str | os.PathLike[str]) -> pd.DataFrame:
    """The noise table of a run directory (empty, with every column, if none yet)."""
    path = noise_table_path(rundir)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in NOISE_COLUMNS})
    return pd.read_parquet(path)


def _write_noise(rundir: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    # Write-to-temp + atomic rename: a killed evaluation never leaves a half-written table behind.
    path = noise_table_path(rundir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path
