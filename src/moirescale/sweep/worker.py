"""What runs inside a worker (a pool process or a Ray task): train one job, return its result rows.

Kept free of driver state so it pickles to any process. The driver, not the worker, appends the rows, so the
results table has one writer and a killed worker leaves nothing half-done behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from moirescale.train.rows import results_row
from moirescale.train.spec import TrainSpec, group_id, run_id

if TYPE_CHECKING:
    from moirescale.train.resolve import ResolvedSpec

DEFAULT_TRAIN_FN = "moirescale.train:run_spec"


def resolve_train_fn(dotted: str) -> Callable[..., list[dict[str, Any]]]:
    """``"package.module:function"`` -> the function (a path, so it pickles cheaply to any worker)."""
    mod, _, name = dotted.partition(":")
    return getattr(importlib.import_module(mod), name)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies: a killed sweep leaves no orphan trainers behind
    (an orphan could otherwise finish a run that the resumed sweep is already redoing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def init_pool_worker(threads: int) -> None:
    """Pool initializer: die with the driver, use ``threads`` torch threads (workers x threads <= cores)."""
    die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def train_job(
    spec: TrainSpec, store_path: str, rundir: str, device: str, train_fn: str = DEFAULT_TRAIN_FN
) -> list[dict[str, Any]]:
    """Train every realization of ``spec``; return one checked row per realization (raises on any failure).

    The job's training states stay until the driver has appended its rows (``keep_states``): a sweep killed
    in between resumes the job at its last step, not from the start."""
    fn = resolve_train_fn(train_fn)
    rows = fn(spec, store_path, rundir, device=device, progress=False, keep_states=True)
    return check_rows(spec, rows)


def check_rows(spec: TrainSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows must be exactly the spec's run ids; fill the sweep's bookkeeping columns."""
    expected = {run_id(spec, r) for r in spec.realizations}
    got = [r.get("run_id") for r in rows]
    if sorted(got) != sorted(expected):
        raise RuntimeError(f"training returned run ids {sorted(map(str, got))}, expected {sorted(expected)}")
    out = []
    for r in rows:
        r = dict(r)
        r["grid"] = r.get("grid") or spec.grid
        r["group_id"] = r.get("group_id") or group_id(spec)
        r.setdefault("finished_at", now_iso())
        out.append(r)
    return out


def failed_rows(
    spec: TrainSpec, resolved: ResolvedSpec, error: str, device: str = ""
) -> list[dict[str, Any]]:
    """Rows recording that every realization of the job ``spec`` failed (after its retries); ``resolved`` is
    its grid point as the sweep's plan resolved it (:class:`moirescale.sweep.plan.Plan`)."""
    return [results_row(resolved, r, device, error=error) for r in spec.realizations]


def format_error(exc: BaseException) -> str:
    """One line for the table (type: message); the full traceback goes to the log."""
    msg = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {msg}"


def format_traceback(exc: BaseException) -> str:
    cause = exc.__cause__  # concurrent.futures puts the worker's traceback text here
    text = "".join(traceback.format_exception(exc))
    return f"{cause}\n{text}" if cause is not None else text


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
