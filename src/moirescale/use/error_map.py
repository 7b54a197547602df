"""Where in label space a grid point's test error sits: its squared error binned by each label of the store.

``moirescale errors RUNDIR --target D --n-train 57344 [--grid G] [--width W] [--bins 5] [--bins theta=6]``

Every finished realization of one grid point (a model, a target, an N_D) predicts the store's test split; the
table gives, for each label of the store (theta, J, D for a simulated store; an imported store's own names),
per bin of that label's test range — equal-width bins, or one row per value when the label takes no more
distinct values than bins (a simulated store's theta_eff over a narrow range) — the images in the bin, the
distinct label values, the MSE of the target in scaled units (geometric mean over the realizations, as every
MSE of the tool) and the bin's share of the total squared error. So a floor can be traced to the labels that
cause it: docs/results.md found D unreadable below 0.2 meV on the default images this way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from moirescale.errors import UserError, split_option
from moirescale.stats import geomean

MAX_BINS = 1000
CHUNK = 2048  # test images read and predicted at once: bounded memory whatever the store's size
COLUMNS = ("label", "lo", "hi", "values", "images", "mse", "share")


def parse_bins(items: Sequence[str] | None, default: int = 5) -> tuple[int, dict[str, int]]:
    """``--bins`` values: ``N`` (every label) and ``LABEL=N`` (one label); returns (default, per label)."""
    per: dict[str, int] = {}
    form = f"N or LABEL=N with 1 <= N <= {MAX_BINS}"
    for item in items or []:
        name, value = split_option(item, "--bins", form, "5, theta=6") if "=" in item else (None, item)
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_BINS:
            raise UserError(f"--bins {item!r}: need {form}, e.g. 5, theta=6")
        if name is not None:
            per[name] = n
        else:
            default = n
    return default, per


def _bins(values: np.ndarray, n_bins: int) -> list[tuple[float, float, np.ndarray]]:
    """(lo, hi, mask) per bin: one per distinct value when there are at most ``n_bins``, else equal widths
    over the range (the last bin closed)."""
    distinct = np.unique(values)
    if distinct.size <= n_bins:
        return [(float(v), float(v), values == v) for v in distinct]
    edges = np.linspace(distinct[0], distinct[-1], n_bins + 1)
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    return [(float(edges[i]), float(edges[i + 1]), which == i) for i in range(n_bins)]


def bin_errors(err: np.ndarray, labels: np.ndarray, names: Sequence[str], n_bins: int = 5,
               per_label: Mapping[str, int] | None = None) -> pd.DataFrame:
    """The table of :func:`error_by_label` from squared errors ``err`` (R realizations, N images) and the
    images' physical ``labels`` (N, k) named ``names``: one row per (label, bin), :data:`COLUMNS`."""
    if err.ndim != 2 or err.shape[1] != labels.shape[0] or labels.shape[1] != len(names):
        raise ValueError(f"err {err.shape}, labels {labels.shape} and {len(names)} names do not match")
    per_image = err.mean(0)
    total = float(per_image.sum())
    rows = []
    for j, name in enumerate(names):
        for lo, hi, m in _bins(labels[:, j], int((per_label or {}).get(name, n_bins))):
            n = int(m.sum())
            rows.append({"label": name, "lo": lo, "hi": hi, "values": int(np.unique(labels[m, j]).size),
                         "images": n, "mse": geomean(err[:, m].mean(1)) if n else math.nan,
                         "share": float(per_image[m].sum() / total) if total > 0 else math.nan})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _point_name(row: pd.Series) -> str:
    """``fcn512 (FCN 3x512)``: a grid point's grid (a sweep's) and model."""
    from moirescale.models import model_label

    model = model_label(row["arch"], row.get("n_layers"), row.get("width"))
    grid = row.get("grid")
    return f"{grid} ({model})" if isinstance(grid, str) and grid else model


def _one_point(rundir: str | os.PathLike[str], **match: Any) -> pd.DataFrame:
    """The checkpointed ok rows of exactly one grid point; UserError naming the choices when several match.
    With a ``grid``, a run is found under every grid of the sweep's config that declares it (a run two grids
    share records only the first)."""
    from moirescale.results import checkpointed_rows, point_key, read_results
    from moirescale.stats import config_run_grids, rows_by_grid

    df = read_results(rundir)
    if match.get("grid") is not None:
        df = rows_by_grid(df, config_run_grids(rundir))
    d = checkpointed_rows(df, rundir, **match)
    groups = [g for _, g in d.groupby(point_key(d), dropna=False, sort=True)]
    if len(groups) > 1:
        names = sorted({_point_name(g.iloc[0]) for g in groups})
        raise UserError(f"{rundir}: {len(groups)} grid points match ({'; '.join(names)}); choose one with "
                        "--grid, --arch, --width or --n-layers")
    return d.sort_values("realization").reset_index(drop=True)


def error_by_label(
    rundir: str | os.PathLike[str], target: str, n_train: int, *, grid: str | None = None,
    arch: str | None = None, width: int | None = None, n_layers: int | None = None, n_bins: int = 5,
    per_label: Mapping[str, int] | None = None, store: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Bin one grid point's squared test error by each label of its store.

    Parameters
    ----------
    rundir : a run directory (sweep or ``moirescale train``) with the point's checkpoints.
    target, n_train, grid, arch, width, n_layers : which grid point (None: any); exactly one must match.
    n_bins, per_label : bins per label (``per_label`` overrides by label name).
    store : the dataset store (default: the one the run directory records).

    Returns
    -------
    The table (one row per label and bin, :data:`COLUMNS`) and a header: the point, its realizations, the
    test images and their MSE (geometric mean over realizations).
    """
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import label_scaler
    from moirescale.models import model_label
    from moirescale.train import load_checkpoint
    from moirescale.use.noise import label_columns, model_channels, predict_images
    from moirescale.use.predict import find_store

    if not os.path.isdir(rundir):
        raise UserError(f"{rundir}: no such run directory")
    if not isinstance(n_train, int) or n_train < 1:
        raise UserError(f"--n-train must be a whole number >= 1, got {n_train!r}")
    if not 1 <= n_bins <= MAX_BINS:
        raise UserError(f"--bins must be between 1 and {MAX_BINS}, got {n_bins}")
    rows = _one_point(rundir, target=target, n_train=n_train, grid=grid, arch=arch, width=width,
                      n_layers=n_layers)
    loaded = [(path, *load_checkpoint(path)) for path in rows["abs_ckpt"]]
    with open_store(find_store(rundir, store, meta=loaded[0][2])) as st:  # its checkpoint is loaded
        unknown = sorted(set(per_label or {}) - set(st.label_names))
        if unknown:
            raise UserError(f"--bins for {', '.join(unknown)}: the store's labels are "
                            f"{', '.join(st.label_names)}")
        nets = [(model, label_columns(path, meta, target, st), model_channels(meta, st))
                for path, model, meta in loaded]
        scaler = label_scaler(st)
        n = st.split_len("test")
        if n < 1:
            raise UserError(f"{st.root}: the test split is empty")
        err = np.empty((len(nets), n))
        labels = np.empty((n, len(st.label_names)))
        for i in range(0, n, CHUNK):
            images, lab = st.read("test", np.arange(i, min(i + CHUNK, n)))
            labels[i : i + len(lab)] = lab
            y = scaler.scale(lab)
            for r, (model, cols, ch) in enumerate(nets):
                pred = predict_images(model, np.ascontiguousarray(images[:, ch]))
                err[r, i : i + len(lab)] = ((pred - y[:, cols]) ** 2).mean(1)
        names = tuple(st.label_names)
    first = rows.iloc[0]
    grid_name = first.get("grid")
    head = {"rundir": str(rundir), "grid": grid_name if isinstance(grid_name, str) else None,
            "model": model_label(first["arch"], first.get("n_layers"), first.get("width")), "target": target,
            "n_train": n_train, "realizations": len(nets), "images": n,
            "mse": geomean(err.mean(1))}
    return bin_errors(err, labels, names, n_bins, per_label), head


def print_errors(table: pd.DataFrame, head: Mapping[str, Any]) -> None:
    """The table of :func:`error_by_label`, one section per label."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{head['grid'] or head['model']} {head['target']} N_D={head['n_train']}: "
                    f"{head['realizations']} realizations, {head['images']} test images, "
                    f"MSE {head['mse']:.3g}")
    for col in ("label", "bin", "values", "images", "MSE", "share"):
        t.add_column(col, justify="left" if col in ("label", "bin") else "right")
    for r in table.itertuples():
        span = f"{r.lo:.4g}" if r.lo == r.hi else f"{r.lo:.4g} – {r.hi:.4g}"
        t.add_row(r.label, span, str(r.values), str(r.images), f"{r.mse:.3g}", f"{r.share:.0%}")
    Console().print(t)


def write_csv(path: str | os.PathLike[str], table: pd.DataFrame, head: Mapping[str, Any]) -> None:
    """The table with the point's columns in front, through the atomic-write helper."""
    from moirescale.fsio import atomic_write

    point = {k: head[k] for k in ("grid", "model", "target", "n_train", "realizations")}
    out = pd.DataFrame([point] * len(table)).join(table.reset_index(drop=True))
    atomic_write(path, out.to_csv(index=False, lineterminator="\n"))
