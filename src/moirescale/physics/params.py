"""Frozen parameter records shared by every back end: the fixed model constants, the annealing protocol and
the image specification (MODEL.md §2-4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moirescale.errors import UserError

# Image channels a store may hold (MODEL.md §4, §7): each layer's S_z, the net out-of-plane magnetisation
# (S_z^t + S_z^b)/2 that RMCD, MOKE and NV microscopy image, and the layer product S_z^t S_z^b.
CHANNELS = ("top", "bottom", "net", "afm")
LAYER_CHANNELS = ("top", "bottom")
ORIGINS = ("random", "fixed")  # image origin per sample: uniform over the cell, or (0, 0)
STARTS = ("seeded", "shared")  # start state + heat-bath stream: the sample's own, or one for every sample
JPERP_MODES = ("scale", "shift")  # how the label J enters J_perp (MODEL.md §2, §7)


@dataclass(frozen=True)
class ModelParams:
    """Fixed Hamiltonian constants (meV): intralayer exchange J1, XXZ anisotropy lam, Zeeman field B."""

    J1: float = 2.2
    lam: float = 0.09
    B: float = 0.0

    def validate(self) -> None:
        for name in ("J1", "lam", "B"):
            v = getattr(self, name)
            if not (np.isfinite(v) and abs(v) <= 1000.0):
                raise UserError(f"{name} must be a finite number in [-1000, 1000] meV, got {v}")


@dataclass(frozen=True)
class AnnealProtocol:
    """Heat-bath annealing: ``n_anneal`` sweeps with T geometric from ``t_start`` to ``t_end`` (meV), then
    ``n_zero`` sweeps at T = 0; start +z with Gaussian noise of relative size ``noise``.

    ``start``: ``seeded`` (each sample draws its start state and heat-bath stream from its own seed) or
    ``shared`` (every sample starts from the same state and draws the same stream, so the image is a
    deterministic function of the labels: MODEL.md §7)."""

    n_anneal: int = 200
    n_zero: int = 100
    t_start: float = 1.5
    t_end: float = 0.02
    noise: float = 0.1
    start: str = "seeded"

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
        if self.start not in STARTS:
            raise UserError(f"protocol start must be one of {', '.join(STARTS)}, got {self.start!r}")


@dataclass(frozen=True)
class ImageSpec:
    """Rendered image: ``size_px`` square pixels over ``fov_nm``, ``supersample``^2 points per pixel averaged,
    one image per name in ``channels`` (``top``/``bottom``: a layer's S_z; ``net``: (S_z^t + S_z^b)/2;
    ``afm``: S_z^t S_z^b). ``origin``: the image's corner in the periodic cell, ``random`` per sample (from
    its seed) or ``fixed`` at (0, 0) for every sample (MODEL.md §7)."""

    size_px: int = 100
    fov_nm: float = 160.0
    supersample: int = 2
    channels: tuple[str, ...] = LAYER_CHANNELS
    origin: str = "random"

    def validate(self) -> None:
        if int(self.size_px) != self.size_px or self.size_px < 1:
            raise UserError(f"image size_px must be a positive integer, got {self.size_px}")
        if not 0 < self.fov_nm < float("inf"):
            raise UserError(f"image fov_nm must be positive, got {self.fov_nm}")
        if int(self.supersample) != self.supersample or self.supersample < 1:
            raise UserError(f"image supersample must be a positive integer, got {self.supersample}")
        chans = tuple(self.channels)
        if not chans or any(c not in CHANNELS for c in chans) or len(set(chans)) != len(chans):
            raise UserError(
                f"image channels must be distinct names from {', '.join(CHANNELS)}, got {list(self.channels)}"
            )
        if self.origin not in ORIGINS:
            raise UserError(f"image origin must be one of {', '.join(ORIGINS)}, got {self.origin!r}")


@dataclass(frozen=True)
class JperpSpec:
    """How the label J sets the interlayer coupling (MODEL.md §2, §7), with f the unscaled landscape:
    ``scale``: J_perp = (J / 0.37205) f (the AFM region is the same for every J); ``shift``:
    J_perp = f + 0.37205 - J (the AFM region grows with J). Both give min J_perp = -J."""

    mode: str = "scale"

    def validate(self) -> None:
        if self.mode not in JPERP_MODES:
            raise UserError(f"jperp mode must be one of {', '.join(JPERP_MODES)}, got {self.mode!r}")
