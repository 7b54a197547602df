"""What one training job is: a grid point (model, target, N_D, recipe) and the realizations to train there.

This is the contract between the sweep (which builds specs from a YAML grid) and the training loop (which runs
them). A spec with several realizations of a small FCN is trained as one ensemble; each realization still gets
its own row in the results table, identified by :func:`run_id`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
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
    shared_data: bool = True  # realizations share the subset and batch order (ensemble-friendly)
    noise_train: float = 0.0  # sigma of Gaussian input noise while training
    grid: str = ""  # sweep grid name, for reporting

    def key(self) -> dict[str, Any]:
        """Everything that defines the result of a realization except the realization index itself."""
        d = asdict(self)
        d.pop("realizations")
        d.pop("grid")
        return d


def group_id(spec: TrainSpec) -> str:
    """Deterministic id of the grid point (shared by all its realizations)."""
    blob = json.dumps(spec.key(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_id(spec: TrainSpec, realization: int) -> str:
    """Deterministic id of one trained network: same spec + realization -> same id, on any machine."""
    return f"{group_id(spec)}-r{realization:04d}"


def realization_seed(spec: TrainSpec, realization: int) -> int:
    """Initialisation seed of one realization (independent streams per realization)."""
    h = hashlib.sha256(f"{spec.seed}:{realization}".encode()).digest()
    return int.from_bytes(h[:4], "little")
