"""Label names, physical ranges (MODEL.md §5) and the min-max scaling that networks regress."""

from __future__ import annotations

import numpy as np

LABELS: tuple[str, ...] = ("theta", "J", "D")
UNITS: dict[str, str] = {"theta": "deg", "J": "meV", "D": "meV"}
# Sampling ranges; theta is stored as theta_eff, which can stray slightly outside [0.5, 2.0] by rounding of n.
RANGES: dict[str, tuple[float, float]] = {"theta": (0.5, 2.0), "J": (0.2, 1.0), "D": (0.0, 1.0)}

_LO = np.array([RANGES[k][0] for k in LABELS], dtype=np.float64)
_HI = np.array([RANGES[k][1] for k in LABELS], dtype=np.float64)


def target_index(target: str) -> list[int]:
    """Columns of the (N, 3) label array that a target names: 'theta', 'J', 'D' or 'all'."""
    if target == "all":
        return [0, 1, 2]
    if target not in LABELS:
        from moirescale.errors import UserError

        raise UserError(f"unknown target {target!r}; choose one of theta, J, D, all")
    return [LABELS.index(target)]


def scale(y: np.ndarray) -> np.ndarray:
    """Map physical labels (N, 3) = (theta_eff, J, D) to [0, 1] per column."""
    return ((np.asarray(y, dtype=np.float64) - _LO) / (_HI - _LO)).astype(np.float32)


def unscale(z: np.ndarray, columns: list[int] | None = None) -> np.ndarray:
    """Inverse of :func:`scale`; ``columns`` selects which label columns ``z`` holds."""
    cols = list(range(3)) if columns is None else columns
    return np.asarray(z, dtype=np.float64) * (_HI[cols] - _LO[cols]) + _LO[cols]
