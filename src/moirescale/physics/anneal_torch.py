"""Batched torch back end (CPU or CUDA): many samples of one cell size n annealed at once, each with its own
J_perp landscape, DMI and seed. The sweep is :mod:`moirescale.physics.heatbath`, the same code the numpy
reference runs, here on torch tensors (whole-tensor, device-agnostic ops, so it runs unchanged on a GPU);
this module adds the device handling and a torch port of the counter RNG. State layout
``(B, layer, sub, xyz, n, n)``, float32.
"""

from __future__ import annotations

import numpy as np
import torch

from moirescale.physics import heatbath
from moirescale.physics.rng import GAMMA, MIX1, MIX2


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no full uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GAMMA = _signed(GAMMA)
_MIX1 = _signed(MIX1)
_MIX2 = _signed(MIX2)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def draw(keys: torch.Tensor, ctr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counter-based uniforms, bit-identical to :func:`moirescale.physics.rng.draw` (int64 wraps)."""
    z = keys + ctr * _GAMMA
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    z = z ^ _srl(z, 31)
    inv = 1.0 / (1 << 24)
    u = (_srl(z, 40) + 1).to(torch.float32) * inv
    w = (_srl(z, 16) & 0xFFFFFF).to(torch.float32) * inv
    return u, w


def anneal(
    xs: np.ndarray,
    jps: np.ndarray,
    dmis: np.ndarray,
    j1: float,
    lam: float,
    bz: float,
    keys: np.ndarray,
    temps: np.ndarray,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Anneal a batch (same arguments and layout as :func:`moirescale.physics.anneal_numba.anneal`); returns a
    new float32 numpy array ``(B, 2, 2, 3, n, n)``."""
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(xs), dtype=torch.float32, device=dev).clone()
        jp = torch.as_tensor(np.ascontiguousarray(jps), dtype=torch.float32, device=dev)
        dmi = torch.as_tensor(np.ascontiguousarray(dmis), dtype=torch.float32, device=dev)
        key = torch.as_tensor(np.asarray(keys, dtype=np.uint64).view(np.int64), device=dev).view(-1, 1, 1)
        j1, lam, bz = float(j1), float(lam), float(bz)
        heatbath.anneal(
            x, jp, dmi, j1, lam, bz, np.asarray(temps, dtype=np.float32).tolist(), lambda ctr: draw(key, ctr)
        )
        return x.cpu().numpy()
