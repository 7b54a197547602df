"""Label names, default physical ranges (MODEL.md §5) and the per-dataset min-max label scaling.

θ, J and D are the simulated store's labels; an imported store (``moirescale data import``) has labels of
its own names, recorded in its manifest (``label_names``), and every function here takes those names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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


def target_index(target: str, names: Sequence[str] = LABELS) -> list[int]:
    """Columns of the (N, k) label array that a target names: one of ``names`` (a store's ``label_names``;
    the simulated store's theta, J, D by default) or 'all'."""
    names = tuple(names)
    if target == "all":
        return list(range(len(names)))
    if target not in names:
        raise UserError(f"unknown target {target!r}; choose one of {', '.join(names)}, all")
    return [names.index(target)]


def check_target_name(target: object) -> None:
    """A target is a label name or 'all': a non-empty string (checked against a store's labels later)."""
    if not isinstance(target, str) or not target.strip() or target != target.strip():
        raise UserError(f"target must be a label name of the store or 'all', got {target!r}")


def store_label_names(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """A store's label names, in column order (a store without ``label_names`` is a simulated one)."""
    names = manifest.get("label_names")
    return tuple(str(n) for n in names) if isinstance(names, list) and names else LABELS


@dataclass(frozen=True)
class LabelScaler:
    """The min-max map between physical labels (k columns, named ``names``) and the [0, 1] units networks
    regress.

    One scaler per dataset: its ranges are the dataset's own sampling ranges, read from the store's manifest
    (:meth:`from_manifest`), saved in every checkpoint (:meth:`to_dict`, with the names) and read back by
    ``predict`` and ``noise`` (:meth:`from_dict`). Every reported MSE is in these units: (label range)^2 of
    the dataset. For a simulated store the names are theta, J, D; theta_eff can stray slightly outside its
    range (rounding of n), so scaled theta can leave [0, 1] a little. A label held fixed (lo == hi) is scaled
    by the width of its default range (:data:`RANGES`; 1 for a label of another name) instead.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    names: tuple[str, ...] = LABELS

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        k = len(self.names)
        finite = np.isfinite(lo).all() and np.isfinite(hi).all()
        if k == 0 or lo.shape != (k,) or hi.shape != (k,) or not finite:
            raise UserError(f"label ranges must be {k} finite (lo, hi) pairs, got {self.lo}, {self.hi}")
        if (hi < lo).any():
            bad = self.names[int(np.argmax(hi < lo))]
            raise UserError(f"label range of {bad} must have lo <= hi, got {self.ranges[bad]}")

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (float(a), float(b)) for k, a, b in zip(self.names, self.lo, self.hi, strict=True)}

    @classmethod
    def from_dict(
        cls, ranges: Mapping[str, Sequence[float]] | None, names: Sequence[str] | None = None
    ) -> LabelScaler:
        """From ``{name: [lo, hi], ...}`` in the column order ``names`` (default theta, J, D; a mapping that
        names none of those is read in its own order); None (a checkpoint older than per-dataset scaling)
        gives the global table :data:`RANGES` it was trained with."""
        ranges = RANGES if ranges is None else ranges
        if names is None:
            keys = list(ranges) if isinstance(ranges, Mapping) else []
            names = keys if keys and not set(keys) & set(LABELS) else LABELS
        names = tuple(str(n) for n in names)
        try:
            pairs = [tuple(float(v) for v in ranges[k]) for k in names]
            lo, hi = zip(*pairs, strict=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"label ranges must map {', '.join(names)} to [lo, hi], got {ranges!r}"
            ) from exc
        return cls(tuple(lo), tuple(hi), names)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> LabelScaler:
        """The dataset's own sampling ranges (the manifest's ``label_ranges``, in ``label_names`` order)."""
        ranges = manifest.get("label_ranges")
        return cls.from_dict(ranges, store_label_names(manifest) if ranges is not None else None)

    def _lo_width(self, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.lo)[cols], np.asarray(self.hi)[cols]
        default = np.array([_default_width(self.names[c]) for c in cols])
        return lo, np.where(hi > lo, hi - lo, default)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [a, b] for k, (a, b) in self.ranges.items()}

    def scale(self, y: np.ndarray) -> np.ndarray:
        """Physical labels (N, k) -> float32 scaled units, per column."""
        lo, width = self._lo_width(list(range(len(self.names))))
        return ((np.asarray(y, dtype=np.float64) - lo) / width).astype(np.float32)

    def unscale(self, z: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray:
        """Inverse of :meth:`scale`; ``columns`` says which label columns ``z`` holds (default all)."""
        cols = list(range(len(self.names))) if columns is None else list(columns)
        lo, width = self._lo_width(cols)
        return np.asarray(z, dtype=np.float64) * width + lo


def _default_width(name: str) -> float:
    lo, hi = RANGES.get(name, (0.0, 1.0))
    return hi - lo


def order_targets(targets: Iterable[str]) -> list[str]:
    """Distinct targets in display order: theta, J, D (a simulated store's), then other label names sorted,
    then 'all'."""
    have = {str(t) for t in targets}
    rest = sorted(have - {*LABELS, "all"})
    return [t for t in LABELS if t in have] + rest + (["all"] if "all" in have else [])


def mean_guess_mse(store: Any) -> dict[str, float]:
    """Each label's test MSE when its mean is guessed: its variance over the store's test split, in the scaled
    units of every reported MSE (1/12 for a label sampled uniformly over its range). A curve that ends near it
    has learnt next to nothing, whatever its slope says.

    ``store``: a :class:`moirescale.data.store.Store` (only its labels are read, no image channel).
    """
    _, labels = store.read("test", channels=slice(0, 0))
    var = LabelScaler.from_manifest(store.manifest).scale(labels).var(0)
    return {name: float(v) for name, v in zip(store.label_names, var, strict=True)}
