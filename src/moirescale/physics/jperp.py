"""The interlayer coupling landscape J_perp(u, v) (MODEL.md §2): a 3-shell C3-symmetric fit of DFT stacking
energies (Sivadas et al., Nano Lett. 18, 7658 (2018)), rescaled so that its most antiferromagnetic value
is -J.
"""

from __future__ import annotations

import math

import numpy as np

from moirescale.physics.lattice import site_uv

# (c0, c1cos, c1sin, c2cos, c2sin, c3cos, c3sin) in meV
COEFFS = (0.16662, 0.10277, -0.05483, 0.23546, 0.01318, 0.06179, 0.11617)
F_MIN = -0.37205  # min of f: J_perp = (J / |F_MIN|) f, so J is the depth of the most AFM coupling

_G1 = 2.0 * math.pi * np.array([1.0, -1.0 / math.sqrt(3.0)])
_G2 = 2.0 * math.pi * np.array([0.0, 2.0 / math.sqrt(3.0)])
_G3 = -_G1 - _G2
SHELLS = (
    np.stack([_G1, _G2, _G3]),
    np.stack([_G1 - _G2, _G3 - _G1, _G2 - _G3]),
    np.stack([2 * _G1, 2 * _G2, 2 * _G3]),
)


def f_landscape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The unscaled landscape f(u, v) in meV at fractional moire coordinates (any broadcastable shapes)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    # r' = u a1 + v a2 - (a1 + a2)/3, in units of a
    x = u + 0.5 * v - 0.5
    y = (math.sqrt(3.0) / 2.0) * v - math.sqrt(3.0) / 6.0
    out = np.full(np.broadcast(x, y).shape, COEFFS[0])
    for k, shell in enumerate(SHELLS):
        ccos, csin = COEFFS[1 + 2 * k], COEFFS[2 + 2 * k]
        for gx, gy in shell:
            phase = gx * x + gy * y
            out = out + ccos * np.cos(phase) + csin * np.sin(phase)
    return out


def jperp_from_f(f: np.ndarray, J: float, mode: str = "scale") -> np.ndarray:
    """J_perp (meV) from the unscaled landscape ``f`` for the label ``J`` (MODEL.md §2, §7).

    ``scale``: ``(J / |F_MIN|) f``: the AFM region (f < 0) is fixed and only its depth follows J.
    ``shift``: ``f + |F_MIN| - J``: the landscape moves down rigidly, so the AFM region grows with J.
    Both give ``min J_perp = -J`` and agree at ``J = |F_MIN|``.
    """
    if mode == "scale":
        return (float(J) / -F_MIN) * f
    if mode == "shift":
        return f + (-F_MIN - float(J))
    raise ValueError(f"unknown jperp mode {mode!r}")


def jperp_landscape(n: int, L0: float, J: float, mode: str = "scale") -> np.ndarray:
    """J_perp at every vertical pair of an ``n x n`` cell with moire period ``L0``: float64 (n, n, 2) meV."""
    u, v = site_uv(n, L0)
    return jperp_from_f(f_landscape(u, v), J, mode)
