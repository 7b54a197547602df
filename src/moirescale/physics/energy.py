"""The Hamiltonian of MODEL.md §2 in plain float64 numpy: energy bond by bond (the reference definition),
local fields, energy from the local fields, torque. The annealing back ends take their coefficients from
:func:`couplings`; the local fields are the sweeps' own field function in float64, tested to be the exact
gradient of :func:`bond_energy`.

Spins are unit vectors ``(2, n, n, 2, 3)`` = (layer top/bottom, i, j, sublattice A/B, xyz).
"""

from __future__ import annotations

import numpy as np

from moirescale.physics.heatbath import group_field
from moirescale.physics.lattice import BOND_OFFSETS, BOND_UNIT, S2, ZEEMAN
from moirescale.physics.layout import from_soa, to_soa
from moirescale.physics.params import ModelParams


def dmi_vectors(D: float) -> np.ndarray:
    """DMI vectors ``D (z x e_k)`` of the three bond directions (A -> B), float64 ``(3, 3)`` meV."""
    e = BOND_UNIT
    return float(D) * np.stack([-e[:, 1], e[:, 0], np.zeros(3)], axis=1)


def couplings(
    jperp: np.ndarray, D: float, params: ModelParams, dtype: type[np.floating] = np.float32
) -> dict[str, np.ndarray]:
    """Coefficients of the local field with S^2 folded in, as every back end consumes them (float32) and as
    :func:`local_fields` does (float64).

    ``j1 = S^2 J1``, ``lam = S^2 lam``, ``dmi = S^2 D (z x e_k)`` (3, 3), ``jperp = S^2 J_perp`` (n, n, 2),
    ``bz = (3/2) B``.
    """
    return {
        "j1": dtype(S2 * params.J1),
        "lam": dtype(S2 * params.lam),
        "dmi": (S2 * dmi_vectors(D)).astype(dtype),
        "jperp": (S2 * np.asarray(jperp, dtype=np.float64)).astype(dtype),
        "bz": dtype(ZEEMAN * params.B),
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
    """Local field ``H = -dE/dn`` on every spin, float64 ``(2, n, n, 2, 3)`` meV.

    The sweeps' own field function (:func:`moirescale.physics.heatbath.group_field`) in float64, so the field
    the back ends update with is the one tested against :func:`bond_energy`.
    """
    x = to_soa(np.asarray(spins, dtype=np.float64))[None]
    cp = couplings(jperp, D, params, np.float64)
    jp = np.moveaxis(cp["jperp"], 2, 0)[None]  # (n, n, sub) -> (1, sub, n, n)
    h = np.empty_like(x)
    for layer in (0, 1):
        for sub in (0, 1):
            h[:, layer, sub] = group_field(x, jp, cp["dmi"][None], cp["j1"], cp["lam"], cp["bz"], layer, sub)
    return from_soa(h[0])


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
