"""Label names, default physical ranges (MODEL.md §5) and the per-dataset min-max label scaling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moirescale.errors import UserError

LABELS: tuple[str, ...] = ("theta", "J", "D")
UNITS: dict[str, str] = {"theta": "deg", "J": "meV", "D": "meV"}
# The default sampling ranges (a dataset config may narrow them; its store's manifest records its own, which
# set the scaling: LabelScaler.from_manifest). theta is stored as theta_eff, which can stray slightly outside
# its range by rounding of n.
RANGES: dict[str, tuple[float, float]] = {"theta": (0.5, 2.0), "J": (0.2, 1.0), "D": (0.0, 1.0)}


def target_index(target: str) -> list[int]:
    """Columns of the (N, 3) label array that a target names: 'theta', 'J', 'D' or 'all'."""
    if target == "all":
        return [0, 1, 2]
    if target not in LABELS:
        raise UserError(f"unknown target {target!r}; choose one of theta, J, D, all")
    return [LABELS.index(target)]


@dataclass(frozen=True)
class LabelScaler:
    """The min-max map between physical labels (theta_eff, J, D) and the [0, 1] units networks regress.

    One scaler per dataset: its ranges are the dataset's own sampling ranges, read from the store's manifest
    (:meth:`from_manifest`), saved in every checkpoint (:meth:`to_dict`) and read back by ``predict`` and
    ``noise`` (:meth:`from_dict`). Every reported MSE is in these units: (label range)^2 of the dataset.
    theta_eff can stray slightly outside its range (rounding of n), so scaled theta can leave [0, 1] a little.
    A label held fixed (lo == hi) is scaled by the width of its default range (:data:`RANGES`) instead.
    """

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise UserError(f"label ranges must be three finite (lo, hi) pairs, got {self.lo}, {self.hi}")
        if (hi < lo).any():
            bad = LABELS[int(np.argmax(hi < lo))]
            raise UserError(f"label range of {bad} must have lo <= hi, got {self.ranges[bad]}")

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (float(a), float(b)) for k, a, b in zip(LABELS, self.lo, self.hi, strict=True)}

    @classmethod
    def from_dict(cls, ranges: Mapping[str, Sequence[float]] | None) -> LabelScaler:
        """From ``{"theta": [lo, hi], "J": ..., "D": ...}``; None (a checkpoint older than per-dataset
        scaling) gives the global table :data:`RANGES` it was trained with."""
        ranges = RANGES if ranges is None else ranges
        try:
            pairs = [tuple(float(v) for v in ranges[k]) for k in LABELS]
            lo, hi = zip(*pairs, strict=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"label ranges must map theta, J and D to [lo, hi], got {ranges!r}") from exc
        return cls(tuple(lo), tuple(hi))  # type: ignore[arg-type]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LabelScaler:
        """The dataset's own sampling ranges (the manifest's ``label_ranges``)."""
        return cls.from_dict(manifest.get("label_ranges"))

    def _lo_width(self, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.lo)[cols], np.asarray(self.hi)[cols]
        default = np.array([RANGES[LABELS[c]][1] - RANGES[LABELS[c]][0] for c in cols])
        return lo, np.where(hi > lo, hi - lo, default)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [a, b] for k, (a, b) in self.ranges.items()}

    def scale(self, y: np.ndarray) -> np.ndarray:
        """Physical labels (N, 3) -> float32 scaled units, per column."""
        lo, width = self._lo_width([0, 1, 2])
        return ((np.asarray(y, dtype=np.float64) - lo) / width).astype(np.float32)

    def unscale(self, z: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray:
        """Inverse of :meth:`scale`; ``columns`` says which label columns ``z`` holds (default all three)."""
        cols = list(range(3)) if columns is None else list(columns)
        lo, width = self._lo_width(cols)
        return np.asarray(z, dtype=np.float64) * width + lo
