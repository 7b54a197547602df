"""Grid expansion: a validated config -> grid points (TrainSpecs) -> the jobs still to run.

A *point* is one (model size, schedule, target, N_D) of a grid with all its realizations; its
:func:`~moirescale.train.spec.group_id` depends only on what defines the result (not on the grid's name), so
the same network declared by two grids (Fig. 1's n_n=4 curve is also part of Fig. 4) has one run id and is
trained once. A *job* is one TrainSpec handed to ``run_spec``: an FCN point's realizations grouped into one
ensemble (``group_size`` of them at a time), ResNet/ViT one realization per job.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from moirescale.errors import UserError
from moirescale.results import BUDGET_CHECK_SUFFIX
from moirescale.sweep.config import Grid, SweepConfig
from moirescale.train.spec import TrainSpec, group_id, run_id

ENSEMBLE_ARCHS = ("fcn", "features")  # families whose realizations are trained together in one job


def recipe_for(cfg: SweepConfig, grid: Grid) -> dict[str, Any]:
    """TrainSpec recipe fields: the TrainSpec defaults <- ``recipes[arch]`` <- the grid's ``train``."""
    out: dict[str, Any] = {}
    family = cfg.recipes.get(grid.model.arch)
    if family is not None:
        out.update(family.overrides())
    out.update(grid.train.overrides())
    if out.get("schedule_kw") is None:
        out.pop("schedule_kw", None)
    return out


def grid_points(cfg: SweepConfig, grid: Grid) -> list[TrainSpec]:
    """Every point of one grid, in a fixed order: model size, schedule, target, N_D (slowest to fastest); a
    curve's budget check (``convergence_check``) right after its largest N_D, so a sweep gives each curve's
    verdict as soon as the curve is done, not after every other curve of the grid."""
    knobs = grid.model.knob_lists()
    names = list(knobs)
    recipe = recipe_for(cfg, grid)
    schedules: list[dict[str, Any]] = (
        [{"schedule": s.schedule, "schedule_kw": dict(s.schedule_kw)} for s in grid.schedules]
        if grid.schedules
        else [{}]
    )
    points = []
    for values in itertools.product(*(knobs[n] for n in names)):
        model_kw = dict(zip(names, values, strict=True))
        for sched in schedules:
            for target in grid.targets:
                for n_train in grid.n_train.sizes():
                    kw = {**recipe, **sched}
                    points.append(
                        TrainSpec(
                            arch=grid.model.arch,
                            target=target,
                            n_train=n_train,
                            realizations=tuple(range(grid.realizations_at.get(n_train, grid.realizations))),
                            model_kw=model_kw,
                            seed=cfg.seed,
                            grid=grid.name,
                            **kw,
                        )
                    )
    if grid.convergence_check is None:
        return points
    out = []
    checks = budget_checks(points, grid)  # keyed by the curve's largest point
    for p in points:
        out.append(p)
        if id(p) in checks:
            out.append(checks[id(p)])
    return out


def budget_checks(points: list[TrainSpec], grid: Grid) -> dict[int, TrainSpec]:
    """The convergence check of a grid: each curve's largest-N_D point with ``convergence_check`` times
    the step budget (the adjustable schedule's ``min_steps`` and ``min_epochs``), in grid
    ``<name>.budget_check``, for the first ``convergence_check_realizations`` realizations (all if unset).
    Returned by ``id`` of the point each checks (:func:`grid_points` puts it right after that point)."""
    from moirescale.train.schedules import budget_check_options

    factor = float(grid.convergence_check or 1)
    largest: dict[tuple, TrainSpec] = {}
    for p in points:  # a curve: model size, schedule and its options, target; N_D varies along it
        key = (tuple(sorted(p.model_kw.items())), p.schedule, tuple(sorted(p.schedule_kw.items())), p.target)
        if key not in largest or p.n_train > largest[key].n_train:
            largest[key] = p
    out = {}
    for p in largest.values():
        if p.schedule != "adjustable":
            raise UserError(
                f"grid {grid.name}: convergence_check needs the adjustable schedule (it scales its step "
                f"budget), got {p.schedule!r}"
            )
        kw = budget_check_options(p.schedule_kw, p.max_epochs, factor)
        reals = p.realizations[: grid.convergence_check_realizations]
        out[id(p)] = replace(p, schedule_kw=kw, realizations=reals, grid=grid.name + BUDGET_CHECK_SUFFIX)
    return out


def default_group_size(grid: Grid) -> int:
    if grid.group_size is not None:
        return grid.group_size
    return grid.realizations if grid.model.arch in ENSEMBLE_ARCHS else 1


@dataclass
class Point:
    """One unique grid point across the whole config, with the union of the realizations grids ask for."""

    spec: TrainSpec  # realizations = sorted union; grid = the first grid declaring it
    grids: list[str] = field(default_factory=list)
    group_size: int = 1

    @property
    def gid(self) -> str:
        return group_id(self.spec)

    def run_ids(self) -> list[str]:
        return spec_run_ids(self.spec)


def unique_points(cfg: SweepConfig) -> list[Point]:
    """All points of all grids, merged by group id (the first declaration names the grid; the
    largest group size wins)."""
    by_gid: dict[str, Point] = {}
    for grid in cfg.grids:
        gsize = default_group_size(grid)
        for spec in grid_points(cfg, grid):
            gid = group_id(spec)
            if gid not in by_gid:
                by_gid[gid] = Point(spec, [grid.name], gsize)
                continue
            p = by_gid[gid]
            p.group_size = max(p.group_size, gsize)  # the larger ensemble pays more
            if grid.name not in p.grids:
                p.grids.append(grid.name)
            reals = tuple(sorted(set(p.spec.realizations) | set(spec.realizations)))
            p.spec = replace(p.spec, realizations=reals)
    return list(by_gid.values())


def _declared(cfg: SweepConfig) -> Iterator[tuple[Grid, TrainSpec, list[str]]]:
    """Every (grid, point, run ids) the config declares, in config order (a curve's budget check is a point
    of its grid labelled ``<grid>.budget_check``)."""
    for g in cfg.grids:
        for spec in grid_points(cfg, g):
            yield g, spec, spec_run_ids(spec)


def grid_run_ids(cfg: SweepConfig) -> dict[str, list[str]]:
    """Grid name -> the run ids it needs, its budget check's included (a run shared by two grids is listed
    under both)."""
    out: dict[str, list[str]] = {g.name: [] for g in cfg.grids}
    for g, _, ids in _declared(cfg):
        out[g.name] += ids
    return out


def run_grids(cfg: SweepConfig) -> dict[str, list[str]]:
    """Run id -> every grid label that declares it, in config order; a curve's budget check under its own
    label (``<grid>.budget_check``). A results row records only the first label (the grid that trained it);
    the analysis uses this map to count a shared run in each grid (:func:`moirescale.stats.rows_by_grid`)."""
    out: dict[str, list[str]] = {}
    for _, spec, ids in _declared(cfg):
        for rid in ids:
            labels = out.setdefault(rid, [])
            if spec.grid not in labels:
                labels.append(spec.grid)
    return out


def jobs(cfg: SweepConfig, done: Iterable[str] = ()) -> list[TrainSpec]:
    """The TrainSpecs still to run: every needed realization not in ``done``, chunked by the group size."""
    done = set(done)
    out = []
    for p in unique_points(cfg):
        ids = spec_run_ids(p.spec)
        todo = [r for r, rid in zip(p.spec.realizations, ids, strict=True) if rid not in done]
        for i in range(0, len(todo), p.group_size):
            out.append(replace(p.spec, realizations=tuple(todo[i : i + p.group_size])))
    return out


def spec_run_ids(spec: TrainSpec) -> list[str]:
    """Run ids of a spec's realizations, hashing the spec once (not once per realization, which was most of
    the time of a paper-scale expansion); the first id is checked against :func:`run_id` itself."""
    if not spec.realizations:
        return []
    gid = group_id(spec)
    ids = [f"{gid}-r{r:04d}" for r in spec.realizations]
    assert ids[0] == run_id(spec, spec.realizations[0]), "run_id's format changed; update spec_run_ids"
    return ids


def describe_spec(spec: TrainSpec) -> str:
    """One line for logs and status: ``fcn[n_layers=3,width=512] theta N_D=114688 adjustable r0-2(3)``."""
    kw = ",".join(f"{k}={v}" for k, v in spec.model_kw.items())
    r = spec.realizations
    reals = f"r{r[0]}" if len(r) == 1 else f"r{r[0]}-{r[-1]}({len(r)})"
    return f"{spec.arch}[{kw}] {spec.target} N_D={spec.n_train} {spec.schedule} {reals}"
