"""A sweep resolves each unique grid point once (issue 28): the plan resolves every point against the store,
and the estimates, size checks and failed rows read that; a worker resolves its job once and passes the result
down to training, the rows and the checkpoint metadata.

The calls are counted, not mocked: every binding of :func:`moirescale.train.resolve.resolve` in a loaded
moirescale module is wrapped by a function that records its spec and calls the real one.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

import moirescale.sweep.executors  # noqa: F401 - loaded, so that its bindings are wrapped too
import moirescale.sweep.runner  # noqa: F401
import moirescale.sweep.status  # noqa: F401
import moirescale.train.run  # noqa: F401
from moirescale import results
from moirescale.sweep.config import load_config
from moirescale.sweep.expand import jobs, unique_points
from moirescale.sweep.plan import SweepOptions
from moirescale.sweep.worker import DEFAULT_TRAIN_FN, train_job
from moirescale.train import resolve as resolve_mod
from moirescale.train.spec import group_id

FAST = {"min_steps": 20, "min_epochs": 1}


def sweep_doc(store: Path) -> dict[str, Any]:
    """Four unique points (2 widths x 2 N_D); the grid "again" repeats one of them (trained once); chunks of
    two realizations make two jobs per point."""
    return {
        "name": "once",
        "seed": 5,
        "dataset": {"store": str(store)},
        "recipes": {"fcn": {"lr": 3e-3, "batch_size": 32, "schedule_kw": FAST}},
        "grids": [
            {"name": "fcn", "model": {"arch": "fcn", "n_layers": 1, "width": [4, 8]},
             "n_train": [32, 64], "targets": ["J"], "realizations": 3, "group_size": 2},
            {"name": "again", "model": {"arch": "fcn", "n_layers": 1, "width": 4},
             "n_train": [32], "targets": ["J"], "realizations": 2, "group_size": 2},
        ],
    }


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, Any]]:
    """Every call of ``resolve`` as (phase, spec); ``phase`` is "worker" inside a job, else "driver"."""
    real = resolve_mod.resolve
    seen: list[tuple[str, Any]] = []

    def counting(spec, *args, **kw):
        seen.append((Phase.now, spec))
        return real(spec, *args, **kw)

    for name, mod in list(sys.modules.items()):
        if name.startswith("moirescale") and getattr(mod, "resolve", None) is real:
            monkeypatch.setattr(mod, "resolve", counting)
    return seen


class Phase:
    now = "driver"


class _Handle:
    def __init__(self, rows: list[dict[str, Any]] | None, error: BaseException | None, device: str):
        self.rows, self.error, self.device = rows, error, device


class InProcessExecutor:
    """The local executor's four calls, each job run at once in this process (so its calls are counted)."""

    name = "local"

    def __init__(self, store_path: str, rundir: str, workers: int | None = None, device: str = "auto",
                 train_fn: str = DEFAULT_TRAIN_FN):
        self.store_path, self.rundir, self.train_fn = store_path, rundir, train_fn
        self.workers = 1

    def describe(self) -> str:
        return "in-process (test)"

    def submit(self, spec: Any) -> _Handle:
        Phase.now = "worker"
        try:
            return _Handle(train_job(spec, self.store_path, self.rundir, "cpu", self.train_fn), None, "cpu")
        except Exception as exc:  # noqa: BLE001 - handed to the driver, as a pool's future would
            return _Handle(None, exc, "cpu")
        finally:
            Phase.now = "driver"

    def wait(self, handles: list[_Handle], timeout: float) -> list[_Handle]:
        return list(handles)

    def result(self, handle: _Handle) -> list[dict[str, Any]]:
        if handle.error is not None:
            raise handle.error
        return handle.rows or []

    def close(self, kill: bool = False) -> None:
        pass


def _config(tiny_store: Path, tmp_path: Path) -> Path:
    cfg = tmp_path / "once.yaml"
    cfg.write_text(yaml.safe_dump(sweep_doc(Path(tiny_store))))
    return cfg


def test_dry_run_resolves_each_unique_point_once(tiny_store, tmp_path, calls):
    from moirescale.sweep.runner import preflight
    from moirescale.sweep.status import dry_run_table

    cfg = _config(tiny_store, tmp_path)
    points = unique_points(load_config(cfg).cfg)
    assert len(points) == 4
    loaded, _, plan = preflight(cfg, tmp_path / "run", SweepOptions(workers=1))  # what --dry-run runs
    Console(record=True, width=200).print(dry_run_table(loaded, None, plan))
    per_point = Counter(group_id(spec) for _, spec in calls)
    assert per_point == Counter({p.gid: 1 for p in points}), per_point
    assert {phase for phase, _ in calls} == {"driver"}


def test_sweep_resolves_each_point_once_and_each_job_once(tiny_store, tmp_path, calls, monkeypatch):
    from moirescale.sweep.runner import run_sweep

    monkeypatch.setattr(moirescale.sweep.executors, "LocalExecutor", InProcessExecutor)
    cfg = _config(tiny_store, tmp_path)
    loaded = load_config(cfg)
    points, todo = unique_points(loaded.cfg), jobs(loaded.cfg)
    assert (len(points), len(todo)) == (4, 8)
    out = tmp_path / "run"
    run_sweep(cfg, out, SweepOptions(workers=1), progress=False)
    df = results.read_results(out)
    assert len(df) == 12 and (df["status"] == "ok").all()
    driver = Counter(group_id(spec) for phase, spec in calls if phase == "driver")
    assert driver == Counter({p.gid: 1 for p in points}), driver  # the plan: one per unique point
    worker = Counter((group_id(spec), spec.realizations) for phase, spec in calls if phase == "worker")
    assert worker == Counter({(group_id(s), s.realizations): 1 for s in todo}), worker  # one per job
