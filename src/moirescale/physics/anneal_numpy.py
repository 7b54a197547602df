"""Reference back end: the checkerboard heat-bath sweep of MODEL.md §3 as plain vectorised numpy (float32).

Slow but short and obviously the model: the test oracle for the numba and torch back ends, and the numpy
baseline of the benchmark. Same layout, couplings and random numbers as the other back ends.

Internal layout ("SoA"): ``(layer, sublattice, xyz, i, j)``: a colour's field is a few array ops.
"""

from __future__ import annotations

import numpy as np

from moirescale.physics import rng


def to_soa(spins: np.ndarray) -> np.ndarray:
    """``(2, n, n, 2, 3)`` -> contiguous ``(2, 2, 3, n, n)``."""
    return np.ascontiguousarray(np.transpose(spins, (0, 3, 4, 1, 2)))


def from_soa(x: np.ndarray) -> np.ndarray:
    """``(..., 2, 2, 3, n, n)`` -> contiguous ``(..., 2, n, n, 2, 3)``."""
    nd = x.ndim
    lead = tuple(range(nd - 5))
    return np.ascontiguousarray(np.transpose(x, lead + (nd - 5, nd - 2, nd - 1, nd - 4, nd - 3)))


def group_field(x: np.ndarray, cp: dict, layer: int, sub: int) -> np.ndarray:
    """Local field (meV, S^2 folded in) on sublattice ``sub`` of ``layer``: float32 ``(3, n, n)``."""
    nb = x[layer, 1 - sub]  # the other sublattice of the same layer, (3, n, n)
    step = 1 if sub == 0 else -1  # A(i,j) sees B(i-1,j), B(i,j-1); B(i,j) sees A(i+1,j), A(i,j+1)
    ms = (nb, np.roll(nb, step, axis=1), np.roll(nb, step, axis=2))
    tot = ms[0] + ms[1] + ms[2]
    h = cp["j1"] * tot
    h[2] += cp["lam"] * tot[2]
    sgn = np.float32(1.0 if sub == 0 else -1.0)  # A: d x m_B ; B: m_A x d = -(d x m_A)
    for k, m in enumerate(ms):
        dx, dy = cp["dmi"][k, 0] * sgn, cp["dmi"][k, 1] * sgn
        h[0] += dy * m[2]
        h[1] -= dx * m[2]
        h[2] += dx * m[1] - dy * m[0]
    h += cp["jperp"][:, :, sub][None] * x[1 - layer, sub]
    h[2] += cp["bz"]
    return h


def heat_bath(h: np.ndarray, temp: float, u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """New unit vectors ``(3, ...)`` drawn from exp(n.H / T) (n = H/|H| at T = 0), float32."""
    hn = np.sqrt(np.sum(h * h, axis=0))
    hn = np.where(hn > 0, hn, np.float32(1e-30))
    hh = h / hn
    if temp <= 0:
        return hh.astype(np.float32)
    x = hn / np.float32(temp)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        tail = np.where(x > 20, np.float32(0), np.exp(-2 * np.minimum(x, 20)))
        c = 1 + np.log(u + (1 - u) * tail) / x
    c = np.where(x < 1e-4, 2 * u - 1, c)
    c = np.clip(c, -1, 1)
    s = np.sqrt(1 - c * c)
    phi = np.float32(2 * np.pi) * w
    cphi, sphi = np.cos(phi), np.sin(phi)
    # orthonormal frame (b1, b2) perpendicular to hh (Duff et al. 2017, branch-free)
    sign = np.where(hh[2] >= 0, np.float32(1), np.float32(-1))
    a = -1 / (sign + hh[2])
    b = hh[0] * hh[1] * a
    b1 = np.stack([1 + sign * hh[0] * hh[0] * a, sign * b, -sign * hh[0]])
    b2 = np.stack([b, sign + hh[1] * hh[1] * a, -hh[1]])
    return (c * hh + s * (cphi * b1 + sphi * b2)).astype(np.float32)


def anneal(spins: np.ndarray, cp: dict, temps: np.ndarray, key: np.uint64) -> np.ndarray:
    """Anneal a copy of one sample ``spins (2, n, n, 2, 3)``; returns the same layout, float32."""
    x = to_soa(np.asarray(spins, dtype=np.float32))
    n = x.shape[-1]
    sites = rng.site_index(n)  # (2, n, n, 2)
    for k, temp in enumerate(np.asarray(temps, dtype=np.float32)):
        for colour in (0, 1):
            groups = [(layer, (colour + layer) % 2) for layer in (0, 1)]
            fields = [group_field(x, cp, layer, sub) for layer, sub in groups]
            for (layer, sub), h in zip(groups, fields, strict=True):
                if temp > 0:
                    u, w = rng.draw(key, np.int64(k) * 4 * n * n + sites[layer, :, :, sub])
                else:
                    u = w = None
                x[layer, sub] = heat_bath(h, float(temp), u, w)
    return from_soa(x)
