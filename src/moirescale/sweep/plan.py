"""Planning checks of a sweep, shared by ``--dry-run`` and the real run (issue 11).

Everything that can be known before a job starts is checked here, before the run directory is touched: the
command-line options, the dataset (the store, or the dataset config that will make it), and every grid point
(recipe, schedule options, channels, model knobs, model size against memory, N_D against the training pool).
So a grid that can only fail is refused with one message instead of being written as failed rows, and
``--dry-run`` accepts exactly what the run accepts. Nothing here writes a file.

Each unique grid point is resolved here once (:func:`moirescale.train.resolve.resolve`, against the store's
image shape, channels and pool); the :class:`Plan` holds those :class:`~moirescale.train.resolve.ResolvedSpec`
objects, and the size checks, the cost estimates (:mod:`moirescale.sweep.estimate`) and the driver's failed
rows read them instead of resolving again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from moirescale.errors import UserError
from moirescale.labels import LABELS
from moirescale.limits import check_training_size, physical_memory
from moirescale.sweep.config import GenerateSpec, LoadedConfig, SweepConfig
from moirescale.sweep.expand import Point, unique_points
from moirescale.train.spec import TrainSpec, group_id

if TYPE_CHECKING:
    from moirescale.train.resolve import ResolvedSpec

EXECUTORS = ("local", "ray")
MAX_WORKERS = 4096  # jobs in flight on a Ray cluster
MAX_RETRIES = 100


def select_grids(loaded: LoadedConfig, names: Sequence[str]) -> LoadedConfig:
    """The config restricted to the grids ``names`` (``sweep --grid``; empty: all of it), for planning and
    running only: the run directory still records the whole config, so its other grids stay pending and a
    later run without ``--grid`` finishes them. A grid's budget check comes with it.

    ``GRID:TARGET`` selects one target of a grid (e.g. ``fcn512:D``; repeatable): the same runs as the whole
    grid's for that target (a grid's name is not part of a run id), so its curve fills in the grid's own.
    """
    if not names:
        return loaded
    whole: set[str] = set()  # grids selected with all their targets
    some: dict[str, set[str]] = {}  # grid -> the targets selected by GRID:TARGET
    for name in dict.fromkeys(names):
        if problem := grid_choice_problem(loaded.cfg, name, loaded.path.name):
            raise UserError(f"--grid {name}: {problem}")
        grid, sep, target = name.partition(":")
        if sep:
            some.setdefault(grid, set()).add(target)
        else:
            whole.add(grid)
    kept = []
    for g in loaded.cfg.grids:
        if g.name in whole:
            kept.append(g)
        elif g.name in some:
            kept.append(g.model_copy(update={"targets": [t for t in g.targets if t in some[g.name]]}))
    return LoadedConfig(loaded.cfg.model_copy(update={"grids": kept}), loaded.path, loaded.raw, loaded.text)


def grid_choice_problem(cfg: SweepConfig, name: str, where: str = "the config") -> str | None:
    """What is wrong with ``GRID`` or ``GRID:TARGET`` as a choice among the config's grids (None: nothing).
    ``all`` too is a target (one network for every label), not a wildcard."""
    targets = {g.name: g.targets for g in cfg.grids}
    grid, sep, target = name.partition(":")
    if grid not in targets:
        return f"not a grid of {where} (its grids: {', '.join(targets)})"
    if sep and target not in targets[grid]:
        return f"{target!r} is not a target of grid {grid} (its targets: {', '.join(targets[grid])})"
    return None


def max_local_workers() -> int:
    """The most worker processes a local sweep may start: 4 per CPU core (issue 29)."""
    return 4 * (os.cpu_count() or 1)

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DatasetFacts:
    """What the planning needs to know of the dataset: image shape (C, H, W), training pool, channel names,
    label names (an imported store's own; a simulated one's theta, J, D)."""

    image_shape: tuple[int, int, int]
    pool: int
    channels: tuple[str, ...]
    exists: bool  # the store is there (else the sweep will generate it)
    label_names: tuple[str, ...] = LABELS


@dataclass(frozen=True)
class Plan:
    """A checked sweep: the dataset facts and every unique grid point resolved against them, by group id."""

    facts: DatasetFacts
    resolved: dict[str, ResolvedSpec]

    def of(self, spec: TrainSpec) -> ResolvedSpec:
        """The resolved grid point of a spec or of one of its jobs (any subset of its realizations)."""
        return self.resolved[group_id(spec)]


def no_store_error(exc: UserError) -> UserError:
    """The error for a missing store that the config gives no ``dataset.generate`` block to make."""
    return UserError(
        f"dataset: {exc}. Make it with `moirescale generate`, or add a `dataset.generate:` block "
        "to the config so the sweep makes it"
    )


def check_store_size(gen: GenerateSpec | None, have: dict[str, int], store: str | os.PathLike[str]) -> None:
    """UserError when an existing store holds fewer samples in a split than `dataset.generate` asks for."""
    want = {"train": gen.pool, "val": gen.n_val, "test": gen.n_test} if gen is not None else {}
    short = {s: (n, have[s]) for s, n in want.items() if n is not None and n > have[s]}
    if short:
        raise UserError(
            f"dataset {store} is smaller than the config's generate block asks "
            f"({', '.join(f'{s}: {h} < {n}' for s, (n, h) in short.items())}); delete it or point "
            "dataset.store elsewhere"
        )


@dataclass(frozen=True)
class SweepOptions:
    """The command-line options of ``sweep``, checked when made (the same for ``--dry-run`` and a real run).

    Their one owner: ``moirescale sweep`` builds one; ``preflight`` and ``run_sweep`` take it.
    """

    executor: str = "local"  # local (a process pool) or ray
    address: str | None = None  # Ray cluster to join (executor ray only)
    workers: int | None = None  # parallel jobs (None: every core or GPU)
    retries: int = 2  # retries of a failing job before it is recorded as failed
    device: str = "auto"  # auto, cpu or cuda (local executor)
    force: bool = False  # adopt this config in a RUNDIR that ran another
    grids: tuple[str, ...] = ()  # run only these grids of the config (empty: all); checked by select_grids
    longest_first: bool = False  # start jobs by estimated cost, largest first (else in the config's order)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"--executor must be local or ray, got {self.executor!r}")
        if self.address and self.executor != "ray":
            raise UserError("--address is for --executor ray")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers must be >= 1, got {self.workers}")
        if self.workers is not None and self.executor == "local" and self.workers > max_local_workers():
            raise UserError(
                f"--workers {self.workers} is above the limit of {max_local_workers()} for this machine "
                f"(4 per CPU core): each worker is a process holding a network and its data"
            )
        if self.workers is not None and self.workers > MAX_WORKERS:
            raise UserError(f"--workers {self.workers} is above the limit of {MAX_WORKERS}")
        if self.retries > MAX_RETRIES:
            raise UserError(f"--retries must be <= {MAX_RETRIES}, got {self.retries}")
        if self.retries < 0:
            raise UserError(f"--retries must be >= 0, got {self.retries}")
        if self.device not in DEVICES:
            raise UserError(f"--device must be auto, cpu or cuda, got {self.device!r}")


def dataset_facts(loaded: LoadedConfig) -> DatasetFacts:
    """The store's facts, or those of the store the config's ``dataset.generate`` block would make."""
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import store_channels

    gen = loaded.cfg.dataset.generate
    try:
        with open_store(loaded.store_path, checksum=False) as store:
            c, h, w = store.image_shape
            have = {s: store.split_len(s) for s in ("train", "val", "test")}
            facts = DatasetFacts((c, h, w), have["train"], tuple(store_channels(store)), True,
                                 tuple(store.label_names))
    except UserError as exc:
        if gen is None:
            raise no_store_error(exc) from None
    else:
        check_store_size(gen, have, loaded.store_path)
        return facts
    req = loaded.dataset_request()
    assert req is not None
    from moirescale.data.config import load_config as load_dataset_config
    from moirescale.data.config import resolve_physics

    cfg, _ = load_dataset_config(req.dataset_config(), req.overrides())  # its own checks and size budgets
    _, _, image, _ = resolve_physics(cfg)
    shape = (len(image.channels), image.size_px, image.size_px)
    return DatasetFacts(shape, cfg.splits.train, tuple(image.channels), False)


def resolve_point(
    spec: TrainSpec,
    image_shape: Sequence[int],
    channels: Sequence[str] | None = None,
    pool: int | None = None,
    exists: bool = True,
    label_names: Sequence[str] | None = None,
) -> ResolvedSpec:
    """One grid point resolved against the dataset: what ``run_spec`` would refuse, refused now, naming the
    grid (the model is built on the meta device only: bad knobs fail here instead of in every job).
    ``label_names``: the store's labels (None: see :func:`moirescale.train.resolve.label_columns`)."""
    from moirescale.train.resolve import resolve

    try:
        rs = resolve(spec, image_shape, channels or None, label_names=label_names)
    except (UserError, TypeError, ValueError) as exc:  # e.g. a schedule option of the wrong type
        raise UserError(f"grid {spec.grid}: {exc}") from None
    if pool is None:
        return rs
    if spec.n_train > pool:
        raise UserError(
            f"grid {spec.grid}: N_D = {spec.n_train} is larger than the training pool of {pool} "
            f"samples ({'the store' if exists else 'dataset.generate'}); lower N_D or make more data"
        )
    return replace(rs, pool=int(pool))


def resolve_points(
    points: Iterable[Point], image_shape: Sequence[int], channels: Sequence[str] | None = None,
    pool: int | None = None, exists: bool = True, label_names: Sequence[str] | None = None,
) -> dict[str, ResolvedSpec]:
    """Every unique grid point resolved once (:func:`resolve_point`), by group id."""
    return {p.gid: resolve_point(p.spec, image_shape, channels, pool, exists, label_names) for p in points}


def check_size(rs: ResolvedSpec, group_size: int, memory: int | None) -> None:
    """Refuse a model too large to train in groups of ``group_size``
    (:func:`moirescale.limits.check_training_size`)."""
    spec = rs.spec
    try:
        check_training_size(rs.n_params, group_size, f"{spec.arch} {spec.model_kw}", memory)
    except UserError as exc:
        raise UserError(f"grid {spec.grid}: {exc}") from None


def check_plan(loaded: LoadedConfig, facts: DatasetFacts, executor: str = "local") -> Plan:
    """Every grid point of the config against the dataset and this machine (see the module docstring)."""
    try:
        points = unique_points(loaded.cfg)
    except (TypeError, ValueError) as exc:  # e.g. a schedule option that is not a number
        raise UserError(f"{loaded.path}: {exc}") from None
    resolved = resolve_points(
        points, facts.image_shape, facts.channels, facts.pool, facts.exists, facts.label_names
    )
    memory = physical_memory() if executor == "local" else None
    sized: set[Any] = set()
    for p in points:
        rs = resolved[p.gid]
        group = min(p.group_size, len(p.spec.realizations))
        if (rs.n_params, group) not in sized:
            sized.add((rs.n_params, group))
            check_size(rs, group, memory)
    return Plan(facts, resolved)


def plan(loaded: LoadedConfig, executor: str = "local") -> Plan:
    """Check the whole sweep before anything is written; return the plan (dataset facts, resolved points)."""
    return check_plan(loaded, dataset_facts(loaded), executor)
