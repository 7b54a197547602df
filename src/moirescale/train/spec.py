"""What one training job is: a grid point (model, target, N_D, recipe) and the realizations to train there.

This is the contract between the sweep (which builds specs from a YAML grid) and the training loop (which runs
them). A spec with several realizations of a small FCN is trained as one ensemble; each realization still gets
its own row in the results table, identified by :func:`run_id`.

Seeds of realization ``r`` (all derived here, nowhere else): its initialisation (:func:`realization_seed`),
its training subset (:func:`data_seed`) and its batch order (:func:`order_seed`). By default
(``shared_data=False``) every realization draws its own subset from the pool: a realization is one draw of
(data, initialisation), so the spread over realizations includes the data-sampling spread. The subset depends
only on ``(seed, r)``, so realization ``r``'s subsets are nested across N_D and the same for every model size
and target.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class TrainSpec:
    arch: str  # registry name: "fcn", "resnet18", "vit"
    target: str  # "theta", "J", "D" or "all"
    n_train: int  # N_D: the first n_train samples of the seeded permutation of the training pool
    realizations: tuple[int, ...] = (0,)  # realization indices; seeds derive from (seed, realization)
    model_kw: dict[str, Any] = field(default_factory=dict)  # e.g. {"n_layers": 3, "width": 16}
    seed: int = 0
    schedule: str = "adjustable"  # constant / cosine / plateau / adjustable
    schedule_kw: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"  # adam / adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int | None = None  # None: the schedule's step budget decides
    channels: str = "top"  # "top" (the paper's Fig. 2 images) or "both" layers
    shared_data: bool = False  # True: all realizations share one subset and batch order (benchmarks only)
    noise_train: float = 0.0  # sigma of Gaussian input noise while training
    precision: str = "fp32"  # fp32 / bf16 / tf32 (moirescale.train.precision)
    grid: str = ""  # sweep grid name, for reporting

    def key(self) -> dict[str, Any]:
        """Everything that defines the result of a realization except the realization index itself.

        ``precision`` enters only when it is not fp32, so the ids of every run trained before the field
        existed (all fp32) are unchanged and a bf16 network never shares an id with an fp32 one.
        """
        d = asdict(self)
        d.pop("realizations")
        d.pop("grid")
        if d["precision"] == "fp32":
            d.pop("precision")
        return d


def group_id(spec: TrainSpec) -> str:
    """Deterministic id of the grid point (shared by all its realizations)."""
    blob = json.dumps(spec.key(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def precision_twins(spec: TrainSpec) -> dict[str, str]:
    """Group ids of the same grid point trained at each other precision (``{precision: group_id}``): what a
    run directory must not already hold when ``spec`` is added to it (one curve, one precision)."""
    from moirescale.train.precision import PRECISIONS

    return {p: group_id(replace(spec, precision=p)) for p in PRECISIONS if p != spec.precision}


def run_id(spec: TrainSpec, realization: int) -> str:
    """Deterministic id of one trained network: same spec + realization -> same id, on any machine."""
    return f"{group_id(spec)}-r{realization:04d}"


def _hash_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def realization_seed(spec: TrainSpec, realization: int) -> int:
    """Initialisation seed of one realization (independent streams per realization)."""
    return _hash_seed(f"{spec.seed}:{realization}")


def data_seed(spec: TrainSpec, realization: int) -> int:
    """Seed of the training subset a realization trains on (the ``data_seed`` column of the results table).

    Own data (the default): a stream of its own per realization, independent of its initialisation seed.
    ``shared_data``: ``spec.seed`` for every realization (one subset for all).
    """
    return spec.seed if spec.shared_data else _hash_seed(f"{spec.seed}:{realization}:data")


def order_seed(spec: TrainSpec, realization: int) -> int:
    """Seed of a realization's batch order: its data seed, or one order for all with ``shared_data``."""
    return _hash_seed(f"{spec.seed}:batches") if spec.shared_data else data_seed(spec, realization)
