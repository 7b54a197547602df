"""Experiment configs: one YAML file names the dataset, the seed and a list of named grids.

Validated on load with pydantic (unknown key, wrong type, impossible value), before any work starts. Every
problem becomes a :class:`~moirescale.errors.UserError` that names the file and the key's path, e.g.
``configs/x.yaml: grids[1].model.width[0]: Input should be greater than 0``. The schema is documented, with an
example, in ``docs/sweeps.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from moirescale.errors import UserError
from moirescale.limits import MAX_REALIZATIONS
from moirescale.readback import load_yaml_mapping
from moirescale.results import BUDGET_CHECK_SUFFIX

ARCHS = ("fcn", "resnet18", "vit", "features")
SCHEDULES = ("constant", "cosine", "plateau", "adjustable")
TARGETS = ("theta", "J", "D", "all")  # a simulated store's; an imported store's targets are its label names
TargetName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
LADDER_BASE = 224  # N_D = 224 * 2**k (PAPER.md)
MAX_K = 20  # 224 * 2**20 is ~2e8 images: anything above is a typo

# Size knobs each family accepts; lists are swept as a cartesian product. FCN: the paper's n_l x n_n.
# ResNet-18: `width` = channels of the first stage (64 = the standard net).
# ViT: embedding width, n_layers (depth), heads, patch size. (The names of moirescale.models' options.)
MODEL_KNOBS: dict[str, dict[str, bool]] = {  # knob -> required
    "fcn": {"n_layers": True, "width": True},
    "resnet18": {"width": False},
    "vit": {"n_layers": False, "width": False, "heads": False, "patch": False},
    "features": {},  # physics features + ridge: no size knobs (one model per channel set)
}

PosInt = Annotated[int, Field(gt=0)]
# A knob is one value or a list; a scalar is read as a one-element list (one error path, no union noise).
IntOrList = Annotated[list[PosInt], BeforeValidator(lambda v: v if isinstance(v, list) else [v])]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class GenerateSpec(_Strict):
    """How to create the dataset store when it is missing (``moirescale generate``)."""

    config: str  # a dataset config (configs/dataset*.yaml), relative to the sweep config or absolute
    # Split sizes (None: the dataset config's own `splits`). `pool` is the train split, the pool every N_D
    # subset is drawn from; not an N_D, so not the grids' name `n_train` (its old name, still accepted).
    pool: PosInt | None = None
    n_val: Annotated[int, Field(ge=0)] | None = None
    n_test: PosInt | None = None
    seed: int | None = None  # None: the sweep's seed (passed as --seed)
    workers: PosInt | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_pool_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "n_train" in data:
            if "pool" in data:
                raise ValueError("give pool (the train split size) or its old name n_train, not both")
            data = {("pool" if k == "n_train" else k): v for k, v in data.items()}
        return data


class DatasetSpec(_Strict):
    store: str  # store directory, relative to the sweep config or absolute
    generate: GenerateSpec | None = None


class Recipe(_Strict):
    """Training recipe fields (a subset of :class:`~moirescale.train.spec.TrainSpec`); unset ones inherit."""

    schedule: Literal[SCHEDULES] | None = None  # type: ignore[valid-type]
    schedule_kw: dict[str, Any] | None = None
    optimizer: Literal["adam", "adamw"] | None = None
    lr: Annotated[float, Field(gt=0, lt=10)] | None = None
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    batch_size: PosInt | None = None
    max_epochs: PosInt | None = None
    channels: str | None = None  # comma-separated channel names of the store: "top", "net", "top,bottom"...
    shared_data: bool | None = None
    noise_train: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    precision: Literal["fp32", "bf16", "tf32"] | None = None  # moirescale.train.precision

    def overrides(self) -> dict[str, Any]:
        """Only the fields the YAML set (an explicit ``max_epochs: null`` counts as set)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class ScheduleChoice(_Strict):
    schedule: Literal[SCHEDULES]  # type: ignore[valid-type]
    schedule_kw: dict[str, Any] = Field(default_factory=dict)


class ModelGrid(_Strict):
    arch: Literal[ARCHS]  # type: ignore[valid-type]
    n_layers: IntOrList | None = None
    width: IntOrList | None = None
    heads: IntOrList | None = None
    patch: IntOrList | None = None

    @model_validator(mode="after")
    def _knobs_fit_arch(self) -> ModelGrid:
        allowed = MODEL_KNOBS[self.arch]
        for knob in ("n_layers", "width", "heads", "patch"):
            value = getattr(self, knob)
            if value is not None and knob not in allowed:
                raise ValueError(f"{knob!r} is not a knob of {self.arch} (allowed: {', '.join(allowed)})")
            if value is None and allowed.get(knob):
                raise ValueError(f"{self.arch} needs {knob!r}")
            if value is not None and (not value or len(set(value)) != len(value)):
                raise ValueError(f"{knob!r} must be a non-empty list without repeats")
        return self

    def knob_lists(self) -> dict[str, list[int]]:
        """Knob -> list of values, in the order the config gives them (set knobs only)."""
        out = {}
        for knob in MODEL_KNOBS[self.arch]:
            v = getattr(self, knob)
            if v is not None:
                out[knob] = list(v)
        return out


class NTrain(_Strict):
    """The N_D ladder: exponents ``k`` (N_D = 224*2^k), an inclusive ``k_range``, or explicit ``values``."""

    k: list[Annotated[int, Field(ge=0, le=MAX_K)]] | None = None
    k_range: tuple[Annotated[int, Field(ge=0, le=MAX_K)], Annotated[int, Field(ge=0, le=MAX_K)]] | None = None
    values: list[PosInt] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> NTrain:
        given = [f for f in ("k", "k_range", "values") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of k (list), k_range ([lo, hi]) or values (list of N_D)")
        if self.k_range is not None and self.k_range[0] > self.k_range[1]:
            raise ValueError(f"k_range {list(self.k_range)} is empty: the first bound must be <= the second")
        sizes = self.sizes()
        if not sizes or len(set(sizes)) != len(sizes):
            raise ValueError("the N_D list must be non-empty without repeats")
        return self

    def sizes(self) -> list[int]:
        if self.k is not None:
            return [LADDER_BASE * 2**k for k in self.k]
        if self.k_range is not None:
            return [LADDER_BASE * 2**k for k in range(self.k_range[0], self.k_range[1] + 1)]
        return list(self.values or [])

    def off_ladder(self) -> list[int]:
        return [n for n in self.sizes() if not _on_ladder(n)]


def _on_ladder(n: int) -> bool:
    q, r = divmod(n, LADDER_BASE)
    return r == 0 and q > 0 and (q & (q - 1)) == 0


class Resources(_Strict):
    """Per-task resources for the Ray executor (None: the executor's default for the family)."""

    num_cpus: Annotated[float, Field(gt=0)] | None = None
    num_gpus: Annotated[float, Field(ge=0)] | None = None


NRealizations = Annotated[int, Field(gt=0, le=MAX_REALIZATIONS)]


class Grid(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    model: ModelGrid
    n_train: NTrain
    targets: list[TargetName]  # label names of the store or all: checked against it (check_targets)
    realizations: NRealizations  # N_r: realization indices 0..N_r-1
    # N_r at chosen N_D instead (e.g. {57344: 3, 114688: 3}): a cost cut where one point costs more than the
    # rest of its curve; realizations 0..N_r-1 again, so raising it later trains only the missing ones.
    realizations_at: dict[PosInt, NRealizations] = Field(default_factory=dict)
    group_size: PosInt | None = None  # realizations per job (None: all for FCN = one ensemble, 1 otherwise)
    train: Recipe = Field(default_factory=Recipe)
    schedules: list[ScheduleChoice] | None = None  # a schedule comparison: the grid is run once per schedule
    resources: Resources = Field(default_factory=Resources)
    # Retrain the largest N_D of each curve with this many times the step budget (adjustable schedule's
    # min_steps and min_epochs); the report flags a curve whose MSE there falls by more than 10 %.
    convergence_check: Annotated[float, Field(gt=1, le=100)] | None = None
    # Realizations 0..R-1 only in that check (None: all); a large model's check can cost more than its curve.
    convergence_check_realizations: PosInt | None = None

    @field_validator("n_train", mode="before")
    @classmethod
    def _list_is_values(cls, v: Any) -> Any:
        return {"values": v} if isinstance(v, list) else v

    @field_validator("schedules", mode="before")
    @classmethod
    def _names_are_choices(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"schedule": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("targets")
    @classmethod
    def _targets_unique(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("targets must be a non-empty list without repeats")
        return v

    @model_validator(mode="after")
    def _schedules_consistent(self) -> Grid:
        if self.schedules is not None:
            if not self.schedules:
                raise ValueError("schedules must be a non-empty list (or left out)")
            if "schedule" in self.train.model_fields_set:
                raise ValueError("give either train.schedule or schedules, not both")
        if self.convergence_check is not None and self.name.endswith(BUDGET_CHECK_SUFFIX):
            raise ValueError(f"a grid name may not end in {BUDGET_CHECK_SUFFIX!r} (reserved for checks)")
        stray = sorted(set(self.realizations_at) - set(self.n_train.sizes()))
        if stray:
            raise ValueError(f"realizations_at names N_D {stray} that are not among this grid's n_train")
        n_check = self.convergence_check_realizations
        if n_check is not None and (self.convergence_check is None or n_check > self.realizations):
            raise ValueError(
                "convergence_check_realizations needs convergence_check and may not exceed realizations "
                f"({self.realizations}), got {n_check}"
            )
        return self


# What one config may declare, counted before anything is expanded (issue 29). Planning a grid point (its
# model resolved and counted) takes ~5 ms on 2 CPU cores: 5000 points answer a dry run in ~30 s. The largest
# shipped config has ~500 points and ~11 000 networks.
MAX_POINTS = 5_000
MAX_NETWORKS = 200_000


def _grid_size(data: Any) -> tuple[int, int]:
    """(points, networks) a raw grid mapping declares, from its list lengths before anything is expanded
    ((0, 0) when the grid is malformed: its own validation says why)."""
    if not isinstance(data, dict):
        return 0, 0

    def n(v: Any) -> int:
        return len(v) if isinstance(v, list) else 1

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    knobs = math.prod(n(model.get(k)) for k in ("n_layers", "width", "heads", "patch"))
    nt = data.get("n_train")
    if isinstance(nt, dict):
        kr = nt.get("k_range")
        if isinstance(kr, list | tuple) and len(kr) == 2 and all(isinstance(v, int) for v in kr):
            sizes = max(0, min(kr[1], MAX_K) - max(kr[0], 0) + 1)
        else:
            sizes = n(nt.get("k", nt.get("values")))
    else:
        sizes = n(nt)
    reals = data.get("realizations")
    reals = reals if isinstance(reals, int) and 0 < reals <= MAX_REALIZATIONS else 1
    points = knobs * n(data.get("schedules")) * n(data.get("targets")) * sizes
    points *= 2 if data.get("convergence_check") is not None else 1
    return points, points * reals


class SweepConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0  # stored as int64 in the results table
    dataset: DatasetSpec
    recipes: dict[Literal[ARCHS], Recipe] = Field(default_factory=dict)  # type: ignore[valid-type]
    grids: list[Grid] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        grids = data.get("grids") if isinstance(data, dict) else None
        if isinstance(grids, list):
            if len(grids) > 10_000:
                raise ValueError(f"{len(grids)} grids, above the limit of 10000")
            sizes = [_grid_size(g) for g in grids]
            points, nets = sum(p for p, _ in sizes), sum(n for _, n in sizes)
            for what, count, limit in (("grid points", points, MAX_POINTS), ("networks", nets, MAX_NETWORKS)):
                if count > limit:
                    raise ValueError(
                        f"the grids declare {count} {what}, above the limit of {limit} for one config "
                        "(split the study into several configs)"
                    )
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> SweepConfig:
        names = [g.name for g in self.grids]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"grid names must be unique; repeated: {', '.join(dup)}")
        return self

    def grid(self, name: str) -> Grid:
        for g in self.grids:
            if g.name == name:
                return g
        raise UserError(f"no grid named {name!r} in config {self.name!r}")


class LoadedConfig:
    """A validated config plus where it came from (relative paths resolve against its folder)."""

    def __init__(self, cfg: SweepConfig, path: Path, raw: dict[str, Any], text: str):
        self.cfg = cfg
        self.path = path
        self.raw = raw  # the parsed YAML, for comparing two configs regardless of comments and layout
        self.text = text

    def resolve(self, p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else (self.path.parent / q).resolve()

    @property
    def store_path(self) -> Path:
        return self.resolve(self.cfg.dataset.store)

    def dataset_request(self) -> DatasetRequest | None:
        """How to make the config's store (its ``dataset.generate`` block, paths resolved, the seed
        defaulted to the sweep's), or None when the config gives no way to make it."""
        gen = self.cfg.dataset.generate
        if gen is None:
            return None
        return DatasetRequest(
            store=self.store_path, config=self.resolve(gen.config), pool=gen.pool, n_val=gen.n_val,
            n_test=gen.n_test, seed=gen.seed if gen.seed is not None else self.cfg.seed, workers=gen.workers,
        )


@dataclass(frozen=True)
class DatasetRequest:
    """The dataset a sweep config asks to be made: the one reading of ``dataset.generate`` (plan, runner,
    status and the demo ask it)."""

    store: Path
    config: Path  # the dataset config (configs/dataset*.yaml)
    pool: int | None  # split sizes; None: the dataset config's own
    n_val: int | None
    n_test: int | None
    seed: int
    workers: int | None

    def dataset_config(self) -> Path:
        """The dataset config's path; UserError when it is missing."""
        if not self.config.is_file():
            raise UserError(f"dataset.generate.config: {self.config} not found")
        return self.config

    def overrides(self) -> dict[str, Any]:
        """The request as overrides of the dataset config (:func:`moirescale.data.config.load_config`)."""
        return {"splits.train": self.pool, "splits.val": self.n_val, "splits.test": self.n_test,
                "seed": self.seed}

    def make(self) -> Path:
        """Generate (or finish) the store: :func:`moirescale.data.generate.ensure_store`."""
        from moirescale.data.generate import ensure_store

        return ensure_store(self.dataset_config(), self.store, pool=self.pool, n_val=self.n_val,
                            n_test=self.n_test, seed=self.seed, workers=self.workers)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[")) or part == "[key]":
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _first_error(exc: ValidationError) -> str:
    # Union members (int | list[int]) each report a failure; show the most specific one, once.
    errs = exc.errors()
    shown: list[str] = []
    for e in errs:
        loc = tuple(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/sweeps.md for the schema)"
        line = f"{_loc(loc)}: {msg}"
        if line not in shown:
            shown.append(line)
    return "; ".join(shown[:3]) + (f" (and {len(shown) - 3} more)" if len(shown) > 3 else "")


def parse_config(
    data: Any, where: str = "config", label_names: Sequence[str] | None = TARGETS[:3]
) -> SweepConfig:
    """Validate a parsed YAML mapping; raise UserError naming the key path of the first problems.

    ``label_names``: the store's labels the grids' targets must name (default a simulated store's theta, J,
    D; None: not checked here)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: the top level must be a mapping (name:, dataset:, grids:, ...)")
    try:
        cfg = SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{where}: {_first_error(exc)}") from None
    if label_names is not None:
        check_targets(cfg, label_names, where)
    return cfg


def check_targets(cfg: SweepConfig, label_names: Sequence[str], where: str = "config") -> None:
    """Every grid's targets name a label of the store (or all)."""
    allowed = (*label_names, "all")
    for i, g in enumerate(cfg.grids):
        for j, t in enumerate(g.targets):
            if t not in allowed:
                raise UserError(
                    f"{where}: grids[{i}].targets[{j}]: unknown target {t!r}; "
                    f"choose one of {', '.join(allowed)}"
                )


def store_labels(store: Path) -> tuple[str, ...]:
    """The label names of the config's store: its manifest's, or a simulated store's when it is not made
    yet (``dataset.generate`` makes simulated stores)."""
    from moirescale.data.store import MANIFEST, read_manifest
    from moirescale.labels import store_label_names

    if not (store / MANIFEST).is_file():
        return TARGETS[:3]
    try:
        return store_label_names(read_manifest(store))
    except UserError:  # a broken store is reported where it is opened, with its own message
        return TARGETS[:3]


def config_warnings(cfg: SweepConfig) -> list[str]:
    """Allowed but unusual settings, printed by ``sweep`` (N_D off the paper's 224*2^k ladder)."""
    return [
        f"grid {g.name}: N_D {g.n_train.off_ladder()} off the paper's 224*2^k ladder (allowed)"
        for g in cfg.grids
        if g.n_train.off_ladder()
    ]


def load_config(path: str | os.PathLike[str]) -> LoadedConfig:
    """Read and validate a sweep config file."""
    p = Path(path)
    # Bounded (size, nesting, aliases), duplicate keys refused (a second `grids:` would replace the first).
    data, text = load_yaml_mapping(p, "sweep config")
    cfg = parse_config(data, where=str(p), label_names=None)
    loaded = LoadedConfig(cfg, p.resolve(), data, text)
    check_targets(cfg, store_labels(loaded.store_path), str(p))
    return loaded

