"""Spin array layouts and the conversions between them.

Public layout (samples, npz files, energy, rendering): ``(layer, i, j, sublattice, xyz)``, float32 unit
vectors ``(2, n, n, 2, 3)``; layer 0 is the top, sublattice 0 is A.
Internal "SoA" layout of every back end's sweep: ``(..., layer, sublattice, xyz, i, j)``, so one sublattice
plane is three contiguous ``(n, n)`` arrays and a colour's field is a few whole-array ops.
"""

from __future__ import annotations

import numpy as np


def _permute(a: np.ndarray) -> np.ndarray:
    # (layer, i, j, sub, xyz) <-> (layer, sub, xyz, i, j) is the same axis permutation both ways
    nd = a.ndim
    lead = tuple(range(nd - 5))
    return np.ascontiguousarray(np.transpose(a, lead + (nd - 5, nd - 2, nd - 1, nd - 4, nd - 3)))


def to_soa(spins: np.ndarray) -> np.ndarray:
    """``(..., 2, n, n, 2, 3)`` -> contiguous ``(..., 2, 2, 3, n, n)``."""
    return _permute(spins)


def from_soa(x: np.ndarray) -> np.ndarray:
    """``(..., 2, 2, 3, n, n)`` -> contiguous ``(..., 2, n, n, 2, 3)``."""
    return _permute(x)
