"""Results from anywhere: a ``.csv`` or ``.parquet`` table of (n_train, test_mse[, n_params, target, arch,
realization]) checked at the boundary and turned into a moirescale results table, so that every fit, figure
and the report run on it unchanged (``moirescale fit TABLE --out DIR``; docs/analysis.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moirescale import results
from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_path

SUFFIXES = (".csv", ".parquet")
REQUIRED = ("n_train", "test_mse")
OPTIONAL = ("n_params", "target", "arch", "realization")
DEFAULT_ARCH = "table"
DEFAULT_TARGET = "y"
MAX_COUNT = 2**53  # stored as int64; beyond 2^53 a float (a CSV number) no longer holds every integer
_POINT = ["arch", "target", "n_params", "n_train"]


def is_table(path: str | os.PathLike[str]) -> bool:
    """True for a path that names a table (a ``.csv`` / ``.parquet`` that is not a directory)."""
    p = Path(path)
    return p.suffix.lower() in SUFFIXES and not p.is_dir()


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a table of results; return it as a results table (:data:`moirescale.results.SCHEMA`).

    Parameters
    ----------
    path : a ``.csv`` or ``.parquet`` file with columns ``n_train`` (N_D, whole numbers > 0) and ``test_mse``
        (> 0, finite), and optionally ``n_params`` (N_M, whole numbers > 0), ``target``, ``arch`` (text) and
        ``realization`` (whole numbers >= 0). Other columns are ignored.

    Returns
    -------
    One row per table row, status "ok": arch "table" and target "y" where the table has no such column; the
    realization, where absent, is the row's order within its point (arch, target, n_params, n_train).

    Raises
    ------
    UserError
        Unreadable file, no rows, a missing column, a value that is not a number, not finite or out of
        range, or a realization given twice at one point (the message names the column and the row, 1-based).
    """
    raw = _read(Path(path))
    if raw.empty:
        raise UserError(f"the table {path} has no rows")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise UserError(
            f"the table {path} lacks column(s) {', '.join(missing)} (needs n_train and test_mse; optional: "
            f"{', '.join(OPTIONAL)})"
        )
    n = len(raw)
    cols: dict[str, Any] = {
        "n_train": _counts(raw, "n_train", lowest=1),
        "test_mse": _positive(raw, "test_mse"),
        "n_params": _counts(raw, "n_params", lowest=1) if "n_params" in raw else [None] * n,
        "arch": _text(raw, "arch") if "arch" in raw else [DEFAULT_ARCH] * n,
        "target": _text(raw, "target") if "target" in raw else [DEFAULT_TARGET] * n,
    }
    df = pd.DataFrame(cols)
    if "realization" in raw:
        df["realization"] = _counts(raw, "realization", lowest=0)
        _check_unique(df, path)
    else:
        df["realization"] = df.fillna({"n_params": -1}).groupby(_POINT, sort=False).cumcount()
    return _as_results(df)


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"the table {path} does not exist (or is not a file)")
    if path.suffix.lower() == ".parquet":
        return results.read_parquet_file(path, None, what="Parquet table")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"the table {path} has no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable CSV table ({msg})") from None


def _numbers(raw: pd.DataFrame, col: str) -> np.ndarray:
    """The column as floats; UserError naming the first entry that is empty or not a number."""
    v = raw[col]
    if pd.api.types.is_bool_dtype(v):
        raise UserError(f"column {col} holds true/false values, not numbers")
    num = pd.to_numeric(v, errors="coerce")
    bad = num.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "is empty" if pd.isna(v.iloc[i]) else f"is not a number: {str(v.iloc[i])[:40]!r}"
        raise UserError(f"column {col}, row {i + 1} {what}")
    return num.to_numpy(dtype=float)


def _first_bad(col: str, x: np.ndarray, bad: np.ndarray, need: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"column {col}, row {i + 1} is {float(x[i])!r}; {col} must be {need}")


def _positive(raw: pd.DataFrame, col: str) -> np.ndarray:
    x = _numbers(raw, col)
    _first_bad(col, x, ~(np.isfinite(x) & (x > 0)), "finite and > 0")
    return x


def _counts(raw: pd.DataFrame, col: str, lowest: int) -> np.ndarray:
    """Whole numbers >= ``lowest`` (N_D and N_M are counts, realization an index)."""
    x = _numbers(raw, col)
    _first_bad(col, x, ~np.isfinite(x), "finite")
    _first_bad(col, x, (x < lowest) | (x >= MAX_COUNT), f"a whole number in [{lowest}, 2^53)")
    _first_bad(col, x, x != np.round(x), "a whole number")
    return x.astype(np.int64)


def _text(raw: pd.DataFrame, col: str) -> list[str]:
    v = raw[col]
    empty = (v.isna() | (v.astype(str).str.strip() == "")).to_numpy()
    if empty.any():
        raise UserError(f"column {col}, row {int(np.flatnonzero(empty)[0]) + 1} is empty")
    return [str(s) for s in v]


def _check_unique(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    dup = df.fillna({"n_params": -1}).duplicated(_POINT + ["realization"]).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise UserError(
            f"the table {path}, row {i + 1}: realization {int(df['realization'].iloc[i])} appears twice at "
            f"one point (arch, target, n_params, n_train); number the realizations of a point 0, 1, ..."
        )


def _as_results(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the results schema: one 'ok' network per table row (the run id is its row)."""
    rows = [
        {
            "run_id": f"table-{i}",
            "grid": "",
            "arch": r.arch,
            "n_params": None if pd.isna(r.n_params) else int(r.n_params),
            "target": r.target,
            "n_train": int(r.n_train),
            "realization": int(r.realization),
            "schedule": "",
            "test_mse": float(r.test_mse),
            "status": "ok",
            "noise_train": 0.0,
        }
        for i, r in enumerate(df.itertuples(index=False))
    ]
    return to_arrow(rows).to_pandas()


def to_arrow(rows: list[dict[str, Any]] | pd.DataFrame) -> pa.Table:
    """Rows (or a results DataFrame) as an Arrow table of the results schema."""
    if isinstance(rows, pd.DataFrame):
        return pa.Table.from_pandas(rows[results.COLUMNS], schema=results.SCHEMA, preserve_index=False)
    return pa.Table.from_pylist([{c: r.get(c) for c in results.COLUMNS} for r in rows], schema=results.SCHEMA)


def check_out_dir(out: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an ``--out`` that cannot take a table's results: a file, or a run directory
    whose results table is a sweep's (a folder of parts), which the table would silently mix with."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    table = results.table_path(out)
    if table.is_dir():
        raise UserError(
            f"--out {out} already holds a sweep's results table ({table}/); choose a new directory"
        )
    if rd.fits_path(out).is_dir():
        raise UserError(f"{rd.fits_path(out)} is a directory; move it away so the {rd.FITS} can be written")


def write_table(out: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` as ``OUT/results.parquet``, one file replaced atomically, so that ``report OUT`` and every
    reader of run directories see it (:func:`moirescale.results.read_results` reads a single-file table)."""
    path = results.table_path(out)
    with atomic_path(path) as tmp:
        pq.write_table(to_arrow(df), tmp)
    return path
