"""The results table: one row per trained network, as Parquet part files in ``RUNDIR/results.parquet/``.

Appending is the only write. Each call writes one new part file via write-to-temp + atomic rename, so a killed
process never leaves a half-written row behind, and readers see the parts as one table (pyarrow dataset).
Downstream tools rely on the columns in :data:`REQUIRED_COLUMNS` (see DESIGN.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_path, real_dir

TABLE_NAME = rd.RESULTS
# Grid-name suffix of a convergence check: the largest N_D of a curve retrained with a larger step budget
# (sweep grids' ``convergence_check``). Such rows are compared with their curve, never fitted as one.
BUDGET_CHECK_SUFFIX = ".budget_check"

# Column -> arrow type. Order is the on-disk order. Missing values are null.
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),  # deterministic id of (config, arch, size, target, N_D, realization, seed)
        ("group_id", pa.string()),  # id of the grid point (all realizations share it)
        ("grid", pa.string()),  # name of the sweep grid this run belongs to ("" outside a sweep)
        ("arch", pa.string()),  # fcn / resnet18 / vit
        ("n_layers", pa.int64()),  # FCN hidden layers (or depth knob); null where not meaningful
        ("width", pa.int64()),  # FCN neurons per layer (or width knob)
        ("n_params", pa.int64()),  # trainable parameters = the paper's N_M
        ("target", pa.string()),  # a label name of the store (theta / J / D when simulated) or all
        ("n_train", pa.int64()),  # N_D
        ("realization", pa.int64()),
        ("seed", pa.int64()),  # the config's seed
        ("data_seed", pa.int64()),  # seed of the training subset (and order) this network trained on
        ("schedule", pa.string()),
        ("test_mse", pa.float64()),  # mean over the target's outputs, scaled label units
        ("val_mse", pa.float64()),
        ("test_mse_theta", pa.float64()),
        ("test_mse_J", pa.float64()),
        ("test_mse_D", pa.float64()),
        ("test_mse_labels", pa.string()),  # JSON {label: test MSE} of the regressed labels, any store's names
        ("epochs", pa.int64()),
        ("steps", pa.int64()),
        ("final_lr", pa.float64()),
        ("wall_time_s", pa.float64()),
        ("device", pa.string()),
        ("status", pa.string()),  # ok / failed / diverged
        ("error", pa.string()),
        ("checkpoint", pa.string()),  # path relative to RUNDIR, "" if none
        ("noise_train", pa.float64()),  # sigma of Gaussian noise used while training (0 = clean)
        ("precision", pa.string()),  # fp32 / bf16 / tf32 (null in tables written before it existed: fp32)
        ("finished_at", pa.string()),  # ISO time
    ]
)
COLUMNS: list[str] = SCHEMA.names
REQUIRED_COLUMNS: list[str] = [
    "run_id", "arch", "n_layers", "width", "n_params", "target", "n_train",
    "realization", "seed", "test_mse", "val_mse", "status",
]
STATUSES = ("ok", "failed", "diverged")


def table_path(rundir: str | os.PathLike[str]) -> Path:
    return rd.results_path(rundir)


def check_appendable(rundir: str | os.PathLike[str]) -> None:
    """Refuse, before any work, a run directory whose table cannot take new parts (or whose checkpoints/ or
    logs/ is taken by a file)."""
    for name in rd.SWEEP_FOLDERS:
        p = Path(rundir) / name
        if p.is_symlink():
            raise UserError(f"{p} is a link; moirescale writes only into real directories (move it away)")
        if os.path.lexists(p) and not p.is_dir():
            raise UserError(
                f"{p} exists and is not a directory, so new results cannot be added; move it away"
            )


def append_rows(rundir: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path | None:
    """Append rows atomically as one new part file. Unknown keys are an error; missing keys become null.

    Returns the part file written, or None when ``rows`` is empty.
    """
    rows = [dict(r) for r in rows]
    if not rows:
        return None
    for r in rows:
        unknown = set(r) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown result columns: {sorted(unknown)}")
        if r.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {r.get('status')!r}")
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)
    Path(rundir).mkdir(parents=True, exist_ok=True)
    folder = real_dir(rundir, TABLE_NAME)  # a link planted at RUNDIR/results.parquet is refused
    final = folder / f"part-{uuid.uuid4().hex}.parquet"
    with atomic_path(final) as tmp:  # fsync'ed before the rename publishes it
        pq.write_table(table, tmp)
    return final


def read_results(rundir: str | os.PathLike[str]) -> pd.DataFrame:
    """All rows of a run directory as a DataFrame (empty, with every column, if there are none yet).

    A run id written twice (e.g. a part from a retry that raced a kill) is kept once: the last written wins.
    """
    folder = table_path(rundir)
    parts = []
    if folder.is_dir():  # oldest first, so that the last-written copy of a run id wins below
        parts = sorted(folder.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime_ns)
    if folder.is_file():  # a single-file table is accepted too
        parts = [folder]
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    frames = [_read_part(p) for p in parts]
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def _read_part(path: Path) -> pd.DataFrame:
    """One part of the table, checked as a whole; a file that is not one (corrupt, foreign, or rows without
    their run id or a known status) is a UserError naming it."""
    df = read_parquet_file(path, SCHEMA, what="part of a results table")
    bad = df["run_id"].isna() | ~df["status"].isin(STATUSES)
    if bad.any():
        raise UserError(
            f"{path} is not a readable part of a results table ({int(bad.sum())} row(s) without a run id "
            f"or a status of {', '.join(STATUSES)}); move it out of the way"
        )
    return df


def read_parquet_file(path: str | os.PathLike[str], schema: pa.Schema | None = None,
                      what: str = "Parquet table") -> pd.DataFrame:
    """A Parquet file written by moirescale (results part, ``noise.parquet``) as a DataFrame.

    A corrupt or foreign file is a :class:`UserError` that names it, never a traceback (issue 11).
    """
    try:
        return pq.read_table(path, schema=schema).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable {what} ({msg}); move it out of the way") from None


def _inside(rundir: Path, rel: str) -> bool:
    """Whether a checkpoint path of a results row stays inside its run directory: relative, no ``..``, and
    not through a link that leads out."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or "\x00" in rel:
        return False
    try:
        return (rundir / p).resolve().is_relative_to(rundir.resolve())
    except (OSError, RuntimeError):
        return False


def done_ids(rundir: str | os.PathLike[str], include_failed: bool = False) -> set[str]:
    """Run ids that need no more work: finished ok or diverged (and failed ones, if asked)."""
    df = read_results(rundir)
    keep = {"ok", "diverged"} | ({"failed"} if include_failed else set())
    return set(df.loc[df["status"].isin(keep), "run_id"])


GRID_KEY = ("arch", "width", "n_layers", "target", "n_train")  # a grid point, where rows lack group_id


def point_key(rows: pd.DataFrame) -> list[str]:
    """The columns that group ``rows`` of a results table into grid points: ``group_id`` where every row has
    one, else :data:`GRID_KEY`."""
    if "group_id" in rows and rows["group_id"].notna().all():
        return ["group_id"]
    return list(GRID_KEY)


def checkpointed_rows(
    df: pd.DataFrame, rundir: str | os.PathLike[str], **match: Any
) -> pd.DataFrame:
    """The ok rows of a results table whose checkpoint file exists: the one checkpoint query (``predict``,
    ``noise``).

    Parameters
    ----------
    df : the results table (:func:`read_results`).
    rundir : the run directory its ``checkpoint`` paths are relative to.
    **match : column = value filters (``arch="fcn"``, ``n_train=3584``); a None value does not filter.

    Returns
    -------
    The matching rows, with ``abs_ckpt``: each checkpoint's path joined to ``rundir``.

    Raises
    ------
    UserError
        No finished network with a checkpoint (matching the filters), or none of their files exists.
    """
    d = df[(df["status"] == "ok") & df["checkpoint"].fillna("").astype(bool)].copy()
    wanted = {k: v for k, v in match.items() if v is not None}
    for col, val in wanted.items():
        d = d[d[col] == val]
    if d.empty:
        which = ", ".join(f"{k}={v}" for k, v in wanted.items())
        raise UserError(
            f"{rundir}: no finished network with a checkpoint"
            + (f" matches {which}" if which else "; run a sweep first")
        )
    outside = [c for c in d["checkpoint"] if not _inside(Path(rundir), str(c))]
    if outside:
        raise UserError(
            f"{table_path(rundir)}: checkpoint path {outside[0]!r} leads outside the run directory; a "
            f"results table names {rd.checkpoint_rel('<run_id>')}"
        )
    d["abs_ckpt"] = [str(Path(rundir) / c) for c in d["checkpoint"]]
    d = d[[Path(p).is_file() for p in d["abs_ckpt"]]]
    if d.empty:
        raise UserError(f"{rundir}: the checkpoints named in {TABLE_NAME} are missing")
    return d
