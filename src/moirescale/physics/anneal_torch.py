"""Batched torch back end (CPU or CUDA): many samples of one cell size n annealed at once, each with its own
J_perp landscape, DMI and seed. Same checkerboard heat bath, couplings and counter-based random numbers as the
numpy reference (:mod:`moirescale.physics.anneal_numpy`), written with whole-tensor ops so it runs unchanged
on a GPU. State layout ``(B, layer, sub, xyz, n, n)``, float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch

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


def _group_field(x, jp, dmi, j1, lam, bz, layer: int, sub: int) -> torch.Tensor:
    """Field on sublattice ``sub`` of ``layer`` for the whole batch: ``(B, 3, n, n)``."""
    nb = x[:, layer, 1 - sub]
    step = 1 if sub == 0 else -1
    ms = (nb, torch.roll(nb, step, dims=2), torch.roll(nb, step, dims=3))
    tot = ms[0] + ms[1] + ms[2]
    h = j1 * tot
    h[:, 2] += lam * tot[:, 2]
    sgn = 1.0 if sub == 0 else -1.0
    for k, m in enumerate(ms):
        dx = (sgn * dmi[:, k, 0]).view(-1, 1, 1)
        dy = (sgn * dmi[:, k, 1]).view(-1, 1, 1)
        h[:, 0] += dy * m[:, 2]
        h[:, 1] -= dx * m[:, 2]
        h[:, 2] += dx * m[:, 1] - dy * m[:, 0]
    h += jp[:, sub].unsqueeze(1) * x[:, 1 - layer, sub]
    h[:, 2] += bz
    return h


def heat_bath(h: torch.Tensor, temp: float, u: torch.Tensor | None, w: torch.Tensor | None) -> torch.Tensor:
    """New unit vectors (xyz on dim 1) drawn from exp(n.H/T); n = H/|H| at T = 0."""
    # explicit sum of squares: a strided vector_norm over dim 1 is ~20x slower on the CPU
    hn = torch.sqrt(h[:, 0] * h[:, 0] + h[:, 1] * h[:, 1] + h[:, 2] * h[:, 2]).clamp_min(1e-30).unsqueeze(1)
    hh = h / hn
    if temp <= 0:
        return hh
    x = (hn / temp)[:, 0]
    tail = torch.where(x > 20, torch.zeros_like(x), torch.exp(-2 * x.clamp(max=20)))
    c = 1 + torch.log(u + (1 - u) * tail) / x
    c = torch.where(x < 1e-4, 2 * u - 1, c).clamp(-1, 1)
    s = torch.sqrt(1 - c * c)
    phi = (2 * math.pi) * w
    cphi, sphi = torch.cos(phi), torch.sin(phi)
    hx, hy, hz = hh[:, 0], hh[:, 1], hh[:, 2]
    sign = torch.where(hz >= 0, 1.0, -1.0)
    a = -1 / (sign + hz)
    b = hx * hy * a
    return torch.stack(
        [
            c * hx + s * (cphi * (1 + sign * hx * hx * a) + sphi * b),
            c * hy + s * (cphi * sign * b + sphi * (sign + hy * hy * a)),
            c * hz - s * (cphi * sign * hx + sphi * hy),
        ],
        dim=1,
    )


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
        n = x.shape[-1]
        site = torch.arange(4 * n * n, dtype=torch.int64, device=dev).view(2, n, n, 2)
        j1, lam, bz = float(j1), float(lam), float(bz)
        for k, temp in enumerate(np.asarray(temps, dtype=np.float32).tolist()):
            for colour in (0, 1):
                groups = [(layer, (colour + layer) % 2) for layer in (0, 1)]
                fields = [_group_field(x, jp, dmi, j1, lam, bz, layer, sub) for layer, sub in groups]
                for (layer, sub), h in zip(groups, fields, strict=True):
                    if temp > 0:
                        u, w = draw(key, site[layer, :, :, sub] + k * 4 * n * n)
                    else:
                        u = w = None
                    x[:, layer, sub] = heat_bath(h, temp, u, w)
        return x.cpu().numpy()
