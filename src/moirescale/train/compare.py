"""Schedule study: train the same small grid under several learning-rate schedules, summarise per point.

The output is figure-ready: one row per (schedule, N_D) with the geometric-mean test MSE over realizations
and its multiplicative standard error, which is what the report's schedule figure plots (log-log vs N_D).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from moirescale.stats import geomean_band
from moirescale.train.data import TrainData
from moirescale.train.spec import TrainSpec

SUMMARY_COLUMNS = [
    "schedule",
    "n_train",
    "n_ok",
    "n_total",
    "gmean_test_mse",
    "gmean_lo",
    "gmean_hi",
    "mean_steps",
    "mean_epochs",
]


def summarize_schedules(rows: pd.DataFrame | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (schedule, n_train): geometric mean of the ok networks' test MSE and a ±1 standard-error band.

    Diverged/failed networks count in ``n_total`` only, never in the mean.
    """
    df = pd.DataFrame(rows)
    out = []
    for (sched, n), g in df.groupby(["schedule", "n_train"], sort=True):
        ok = g[g["status"] == "ok"]
        gm, lo, hi = geomean_band(ok["test_mse"].to_numpy(dtype=float))
        out.append(
            {
                "schedule": sched,
                "n_train": int(n),
                "n_ok": int(len(ok)),
                "n_total": int(len(g)),
                "gmean_test_mse": gm,
                "gmean_lo": lo,
                "gmean_hi": hi,
                "mean_steps": float(ok["steps"].mean()) if len(ok) else np.nan,
                "mean_epochs": float(ok["epochs"].mean()) if len(ok) else np.nan,
            }
        )
    return out


def compare_schedules(
    base: TrainSpec,
    n_trains: list[int],
    schedules: tuple[str, ...] = ("plateau", "adjustable"),
    *,
    data: TrainData | None = None,
    store_path: str | os.PathLike[str] | None = None,
    rundir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train ``base`` at every N_D of ``n_trains`` under every schedule (same seeds, subsets and batches).

    Give either in-memory ``data`` or a ``store_path`` plus ``rundir`` (rows are then appended to the run's
    results table and runs already there are skipped, so the study resumes). Returns ``(summary, rows)``:
    the figure-ready summary of :func:`summarize_schedules` and the per-network rows.
    """
    from moirescale.errors import UserError
    from moirescale.rundir import CHECKPOINTS
    from moirescale.train.resolve import resolve
    from moirescale.train.rows import results_row
    from moirescale.train.run import discard_resume, resolve_device, run_spec, train_arrays
    from moirescale.train.spec import run_id

    if len(schedules) < 2:
        raise UserError("a schedule comparison needs at least two schedules")
    if (data is None) == (store_path is None) or (store_path is not None and rundir is None):
        raise UserError("give either data, or store_path and rundir")
    rows: list[dict[str, Any]] = []
    for sched in schedules:
        for n in n_trains:
            spec = replace(base, schedule=sched, n_train=int(n))
            if data is not None:
                rs = resolve(spec, data.in_shape, sliced=True)
                trained = train_arrays(spec, data, device=resolve_device(device), resolved=rs)
                dev = str(device)
                rows += [results_row(rs, t.realization, dev, trained=t, checkpoint="") for t in trained]
                continue
            from moirescale.results import append_rows, read_results

            have = read_results(rundir)
            ids = [run_id(spec, r) for r in spec.realizations]
            done = have[have["run_id"].isin(ids) & have["status"].isin(["ok", "diverged"])]
            if len(done) == len(ids):
                rows += done.to_dict("records")
                continue
            new = run_spec(spec, store_path, rundir, device=device, progress=progress, checkpoints="none",
                           keep_states=True)
            append_rows(rundir, new)
            discard_resume(spec, os.path.join(rundir, CHECKPOINTS))  # after the rows, not before
            rows += new
    return summarize_schedules(rows), rows
