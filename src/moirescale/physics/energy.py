"""The Hamiltonian of MODEL.md §2 in plain float64 numpy: energy bond by bond, local fields, energy from the
local fields, torque. This is the reference definition; the annealing back ends take their coefficients from
:func:`couplings` and are tested against these functions.

Spins are unit vectors ``(2, n, n, 2, 3)`` = (layer top/bottom, i, j, sublattice A/B, xyz).
"""

from __future__ import annotations

import numpy as np

from moirescale.physics.lattice import BOND_OFFSETS, BOND_UNIT, S2, ZEEMAN
from moirescale.physics.params import ModelParams


def dmi_vectors(D: float) -> np.ndarray:
    """DMI vectors ``D (z x e_k)`` of the three bond directions (A -> B), float64 ``(3, 3)`` meV."""
    e = BOND_UNIT
    return float(D) * np.stack([-e[:, 1], e[:, 0], np.zeros(3)], axis=1)


def couplings(jperp: np.ndarray, D: float, params: ModelParams) -> dict[str, np.ndarray]:
    """Coefficients of the local field with S^2 folded in, float32, as every back end consumes them.

    ``j1 = S^2 J1``, ``lam = S^2 lam``, ``dmi = S^2 D (z x e_k)`` (3, 3), ``jperp = S^2 J_perp`` (n, n, 2),
    ``bz = (3/2) B``.
    """
    return {
        "j1": np.float32(S2 * params.J1),
        "lam": np.float32(S2 * params.lam),
        "dmi": (S2 * dmi_vectors(D)).astype(np.float32),
        "jperp": (S2 * np.asarray(jperp, dtype=np.float64)).astype(np.float32),
        "bz": np.float32(ZEEMAN * params.B),
    }


def _partner(arr: np.ndarray, di: int, dj: int, sign: int) -> np.ndarray:
    """``out[i, j] = arr[i + sign*di, j + sign*dj]`` on the periodic (n, n, ...) grid."""
    return np.roll(arr, shift=(-sign * di, -sign * dj), axis=(0, 1))


def bond_energy(spins: np.ndarray, jperp: np.ndarray, D: float, params: ModelParams = ModelParams()) -> float:
    """Total energy (meV), each bond's energy summed explicitly: exchange, DMI, interlayer, Zeeman."""
    s = np.asarray(spins, dtype=np.float64)
    d = dmi_vectors(D)
    e = 0.0
    for layer in range(2):
        a = s[layer, :, :, 0]
        b = s[layer, :, :, 1]
        for k, (di, dj) in enumerate(BOND_OFFSETS):
            bk = _partner(b, di, dj, +1)  # the B end of bond k of A(i, j)
            e -= S2 * (params.J1 * np.sum(a * bk) + params.lam * np.sum(a[..., 2] * bk[..., 2]))
            e += S2 * np.sum(np.cross(a, bk) @ d[k])
    e -= S2 * np.sum(np.asarray(jperp, dtype=np.float64) * np.sum(s[0] * s[1], axis=-1))
    e -= ZEEMAN * params.B * np.sum(s[..., 2])
    return float(e)


def local_fields(
    spins: np.ndarray, jperp: np.ndarray, D: float, params: ModelParams = ModelParams()
) -> np.ndarray:
    """Local field ``H = -dE/dn`` on every spin, float64 ``(2, n, n, 2, 3)`` meV."""
    s = np.asarray(spins, dtype=np.float64)
    d = dmi_vectors(D)
    zhat = np.array([0.0, 0.0, 1.0])
    h = np.zeros_like(s)
    for layer in range(2):
        a = s[layer, :, :, 0]
        b = s[layer, :, :, 1]
        for k, (di, dj) in enumerate(BOND_OFFSETS):
            bk = _partner(b, di, dj, +1)  # B partner of A
            ak = _partner(a, di, dj, -1)  # A partner of B
            h[layer, :, :, 0] += S2 * (params.J1 * bk + params.lam * bk[..., 2:3] * zhat + np.cross(d[k], bk))
            h[layer, :, :, 1] += S2 * (params.J1 * ak + params.lam * ak[..., 2:3] * zhat + np.cross(ak, d[k]))
    jp = S2 * np.asarray(jperp, dtype=np.float64)[..., None]
    h[0] += jp * s[1]
    h[1] += jp * s[0]
    h[..., 2] += ZEEMAN * params.B
    return h


def field_energy(spins: np.ndarray, fields: np.ndarray, params: ModelParams = ModelParams()) -> float:
    """Energy from the local fields: ``E = -1/2 sum n.(H - (3/2) B z) - (3/2) B sum n_z`` (meV)."""
    s = np.asarray(spins, dtype=np.float64)
    h = np.asarray(fields, dtype=np.float64).copy()
    bz = ZEEMAN * params.B
    h[..., 2] -= bz
    return float(-0.5 * np.sum(s * h) - bz * np.sum(s[..., 2]))


def torque(spins: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """``|n x H|`` per spin (meV), ``(2, n, n, 2)``; zero at a stationary point."""
    return np.linalg.norm(np.cross(np.asarray(spins, np.float64), np.asarray(fields, np.float64)), axis=-1)


def energy(spins: np.ndarray, jperp: np.ndarray, D: float, params: ModelParams = ModelParams()) -> float:
    """Total energy (meV), via the local fields."""
    return field_energy(spins, local_fields(spins, jperp, D, params), params)
