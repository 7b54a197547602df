"""The one builder of a results-table row (:mod:`moirescale.results`).

A trained network's row (status ok or diverged, from :mod:`moirescale.train.run`) and the rows of a job that
failed (from the sweep driver, :func:`moirescale.sweep.worker.failed_rows`) come from the same function, so
they fill the same columns the same way (model knobs with their defaults, seed columns, error text). Both
read the grid point's :class:`~moirescale.train.resolve.ResolvedSpec` (the worker's, or the sweep plan's for a
failed job): nothing is derived from the spec again here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from moirescale.labels import LABELS
from moirescale.train.spec import group_id, run_id

if TYPE_CHECKING:
    from moirescale.train.resolve import ResolvedSpec
    from moirescale.train.run import Trained

MAX_ERROR_CHARS = 4000  # error text kept in the table; the full traceback goes to the log


def results_row(
    rs: ResolvedSpec,
    realization: int,
    device: str,
    *,
    trained: Trained | None = None,
    checkpoint: str | None = None,
    error: str = "",
) -> dict[str, Any]:
    """The results row of one realization of ``spec``.

    Parameters
    ----------
    rs, realization : the grid point, resolved (:func:`moirescale.train.resolve.resolve`: its label columns,
        model options and seeds are read from there), and which of its networks.
    device : where it ran (``cpu``, ``cuda``; a failed job's executor when no device is known).
    trained : the network, when it trained to the end (status ``ok`` or ``diverged``): its MSEs, steps,
        size and wall time fill the row. ``None``: the job failed; status ``failed`` and ``error`` says why,
        the measured columns stay null.
    checkpoint : its checkpoint path relative to RUNDIR (``""``: none kept; ``None`` for a failed job).
    error : why the job failed (``trained`` is None); a trained network's own error text is used otherwise.

    Returns
    -------
    dict with columns of :data:`moirescale.results.SCHEMA` (the missing ones are null when appended).
    """
    spec, opts = rs.spec, rs.model_options
    res = trained.result if trained is not None else None
    ok = res is not None and res.status == "ok"
    row: dict[str, Any] = {
        "run_id": run_id(spec, realization),
        "group_id": group_id(spec),
        "grid": spec.grid,
        "arch": spec.arch,
        "n_layers": int(opts["n_layers"]) if opts.get("n_layers") is not None else None,
        "width": int(opts["width"]) if opts.get("width") is not None else None,
        "n_params": int(trained.n_params) if trained is not None else None,
        "target": spec.target,
        "n_train": int(spec.n_train),
        "realization": int(realization),
        **rs.seed_columns(realization),
        "schedule": spec.schedule,
        "test_mse": float(np.mean(res.test_mse)) if ok else None,
        "val_mse": float(np.mean(res.val_mse)) if ok else None,
        "epochs": int(res.epochs) if res is not None else None,
        "steps": int(res.steps) if res is not None else None,
        "final_lr": float(res.final_lr) if res is not None else None,
        "wall_time_s": float(trained.wall_time_s) if trained is not None else None,
        "device": device,
        "status": res.status if res is not None else "failed",
        "error": (res.error if res is not None else error)[:MAX_ERROR_CHARS],
        "checkpoint": checkpoint,
        "noise_train": float(spec.noise_train),
        "precision": spec.precision,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for lab in LABELS:
        row[f"test_mse_{lab}"] = None
    row["test_mse_labels"] = None
    if ok:
        per = {name: float(res.test_mse[j]) for j, name in enumerate(rs.target_labels)}
        row["test_mse_labels"] = json.dumps(per, sort_keys=True)  # any store's labels, by name
        if tuple(rs.label_names) == LABELS:  # a simulated store: its fixed columns too
            for name, v in per.items():
                row[f"test_mse_{name}"] = v
    return row
