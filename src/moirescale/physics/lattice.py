"""Honeycomb bilayer geometry (MODEL.md §1): constants, bond vectors, cell size and the stored angle label.

Lengths are in units of the lattice constant ``a`` unless a name says ``_nm``. Angles are degrees at the
interface, radians inside.
"""

from __future__ import annotations

import math

import numpy as np

from moirescale.errors import UserError

A_NM = 0.686  # CrI3 Cr-Cr honeycomb lattice constant (nm)
S2 = 9.0 / 4.0  # S^2 with S = 3/2 folded into every coupling
ZEEMAN = 1.5  # the Zeeman prefactor (3/2) B

A1 = np.array([1.0, 0.0])
A2 = np.array([0.5, math.sqrt(3.0) / 2.0])
DELTA = (A1 + A2) / 3.0  # B = A + delta
# A(i,j) bonds to B(i,j), B(i-1,j), B(i,j-1); each bond vector points from the A end to the B end.
BOND_VECTORS = np.stack([DELTA, DELTA - A1, DELTA - A2])  # (3, 2), |e| = 1/sqrt(3)
BOND_UNIT = BOND_VECTORS / np.linalg.norm(BOND_VECTORS, axis=1, keepdims=True)
# Neighbour offsets (di, dj) of the B partner of A(i,j), in the same order as BOND_VECTORS.
BOND_OFFSETS = ((0, 0), (-1, 0), (0, -1))

THETA_MIN_DEG = 0.1  # accepted range of the simulator (the dataset range, MODEL.md §5, is 0.5-2.0 deg)
THETA_MAX_DEG = 10.0


def check_theta(theta_deg: float) -> float:
    """Return ``theta_deg`` as a float or raise UserError when outside [0.1, 10] degrees or not finite."""
    t = float(theta_deg)
    if not math.isfinite(t) or not THETA_MIN_DEG <= t <= THETA_MAX_DEG:
        raise UserError(
            f"theta must be a finite angle in [{THETA_MIN_DEG}, {THETA_MAX_DEG}] degrees, got {theta_deg}"
        )
    return t


def cell_size(theta_deg: float, cells_per_side: int = 1) -> tuple[int, float]:
    """Cell size ``n`` (unit cells per side) and moire period ``L0`` (in unit cells) for a twist angle.

    ``n = round(m / theta_rad)`` with ``m = cells_per_side`` moire cells per side, ``L0 = n / m``.
    """
    t = check_theta(theta_deg)
    m = int(cells_per_side)
    if m != cells_per_side or m < 1:
        raise UserError(f"cells_per_side must be a positive integer, got {cells_per_side}")
    n = cell_side(t, m)
    return n, n / m


def cell_side(theta_deg: float, cells_per_side: int = 1) -> int:
    """Unit cells per side of the simulation cell: ``n = max(3, round(m / theta_rad))`` (unchecked inputs;
    :func:`cell_size` checks them)."""
    return max(3, int(round(cells_per_side / math.radians(theta_deg))))


def theta_eff_range(lo: float, hi: float, cells_per_side: int = 1) -> tuple[float, float]:
    """Smallest and largest ``theta_eff`` (degrees) of the cells that twist angles in [lo, hi] get.

    Computed as ``2 arcsin(m / (2 n))`` of the largest and the smallest cell; this can differ from
    :func:`theta_eff` of the same cell in the last bit, so callers allow a relative tolerance.
    """

    def eff(n: int) -> float:
        return math.degrees(2 * math.asin(cells_per_side / (2 * n)))

    return eff(cell_side(lo, cells_per_side)), eff(cell_side(hi, cells_per_side))


def theta_eff(L0: float) -> float:
    """The angle (degrees) whose moire period is exactly ``L0`` cells: ``2 arcsin(1 / (2 L0))``."""
    return math.degrees(2.0 * math.asin(1.0 / (2.0 * L0)))


def moire_period_nm(theta_deg: float) -> float:
    """Moire lattice constant ``a / (2 sin(theta/2))`` in nm."""
    return A_NM / (2.0 * math.sin(math.radians(theta_deg) / 2.0))


def site_uv(n: int, L0: float) -> tuple[np.ndarray, np.ndarray]:
    """Fractional moire coordinates ``(u, v)``, each (n, n, 2): ``u = (i + s/3)/L0``, ``v = (j + s/3)/L0``."""
    i = np.arange(n, dtype=np.float64)[:, None, None]
    j = np.arange(n, dtype=np.float64)[None, :, None]
    s = np.array([0.0, 1.0 / 3.0])[None, None, :]
    return np.broadcast_to((i + s) / L0, (n, n, 2)).copy(), np.broadcast_to((j + s) / L0, (n, n, 2)).copy()
