"""Frozen parameter records shared by every back end: the fixed model constants, the annealing protocol and
the image specification (MODEL.md §2-4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moirescale.errors import UserError

CHANNELS = ("top", "bottom")


@dataclass(frozen=True)
class ModelParams:
    """Fixed Hamiltonian constants (meV): intralayer exchange J1, XXZ anisotropy lam, Zeeman field B."""

    J1: float = 2.2
    lam: float = 0.09
    B: float = 0.0


@dataclass(frozen=True)
class AnnealProtocol:
    """Heat-bath annealing: ``n_anneal`` sweeps with T geometric from ``t_start`` to ``t_end`` (meV), then
    ``n_zero`` sweeps at T = 0; start +z with Gaussian noise of relative size ``noise``."""

    n_anneal: int = 200
    n_zero: int = 100
    t_start: float = 1.5
    t_end: float = 0.02
    noise: float = 0.1

    def temperatures(self) -> np.ndarray:
        """Temperature of every sweep (meV), float32 ``(n_anneal + n_zero,)``; zeros for the T = 0 sweeps."""
        self.validate()
        k = np.arange(self.n_anneal, dtype=np.float64)
        denom = max(self.n_anneal - 1, 1)
        t = self.t_start * (self.t_end / self.t_start) ** (k / denom)
        return np.concatenate([t, np.zeros(self.n_zero)]).astype(np.float32)

    def validate(self) -> None:
        if self.n_anneal < 0 or self.n_zero < 0 or self.n_anneal + self.n_zero < 1:
            raise UserError("the annealing protocol needs n_anneal >= 0, n_zero >= 0 and at least one sweep")
        if self.n_anneal and not (0 < self.t_end <= self.t_start < float("inf")):
            raise UserError("annealing temperatures need 0 < t_end <= t_start (meV)")
        if not 0 <= self.noise < float("inf"):
            raise UserError("the start noise must be a finite number >= 0")


@dataclass(frozen=True)
class ImageSpec:
    """Rendered image: ``size_px`` square pixels over ``fov_nm``, ``supersample``^2 points per pixel averaged,
    one channel per layer in ``channels`` (S_z of the top and/or bottom layer)."""

    size_px: int = 100
    fov_nm: float = 160.0
    supersample: int = 2
    channels: tuple[str, ...] = CHANNELS

    def validate(self) -> None:
        if int(self.size_px) != self.size_px or self.size_px < 1:
            raise UserError(f"image size_px must be a positive integer, got {self.size_px}")
        if not 0 < self.fov_nm < float("inf"):
            raise UserError(f"image fov_nm must be positive, got {self.fov_nm}")
        if int(self.supersample) != self.supersample or self.supersample < 1:
            raise UserError(f"image supersample must be a positive integer, got {self.supersample}")
        chans = tuple(self.channels)
        if not chans or any(c not in CHANNELS for c in chans):
            raise UserError(f"image channels must be a non-empty subset of {CHANNELS}, got {self.channels}")
