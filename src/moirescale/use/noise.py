"""Noise robustness (as in Lee et al. 2024): corrupt test images, evaluate trained networks, tabulate the MSE.

Two corruptions of images in [-1, 1]:

- ``gaussian``: add N(0, sigma^2) per pixel, then clip to [-1, 1] (the images stay valid inputs);
- ``flip``: flip the sign of a random fraction p of the pixels (a domain read with the wrong polarity).

Both are deterministic given a seed. The noise of one (kind, level) is the same for every network, so the
MSE differences between networks are paired, not a fresh draw each. ``evaluate_noise`` writes
``RUNDIR/noise.parquet`` (one row per network and noise setting); the report shows it.

Each row's per-label MSE is ``mse_labels``, JSON by the store's own label names (any store, simulated or
imported); a simulated store's rows fill the fixed ``mse_theta``/``mse_J``/``mse_D`` columns too. Each row
records the noise seed and the store (its ``config_hash``): a table is only extended with the same noise on
the same test set. Tables written before these columns existed stay readable (the new columns null).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.fsio import atomic_path
from moirescale.results import read_parquet_file
from moirescale.stats import geomean

GAUSSIAN_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # sigma, as in Lee et al. 2024
FLIP_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)  # fraction of pixels with flipped sign
KINDS = ("clean", "gaussian", "flip")  # the table stores "clean" as level 0 of each kind
MAX_LEVELS = 64  # per noise kind: each level is a corrupted copy of the test set, seen by every network
MAX_NOISY_BYTES = 4 << 30  # the corrupted test sets held together in memory
NOISE_COLUMNS = [
    "run_id", "arch", "width", "n_layers", "target", "n_train", "realization",
    "noise_kind", "noise_level", "mse", "mse_theta", "mse_J", "mse_D", "n_test",
    "mse_labels", "noise_seed", "store_hash",
]
# Columns a table written before labels of any name (issue 26) lacks: read as null.
LATER_COLUMNS = ("mse_labels", "noise_seed", "store_hash")

# Nullable integer sizes: a ResNet has no n_layers, and floats would print FCN sizes as "3.0x8".
NOISE_DTYPES = {
    "run_id": str, "arch": str, "width": "Int64", "n_layers": "Int64", "target": str, "n_train": "int64",
    "realization": "int64", "noise_kind": str, "noise_level": float, "mse": float, "mse_theta": float,
    "mse_J": float, "mse_D": float, "n_test": "int64", "mse_labels": "string", "noise_seed": "Int64",
    "store_hash": "string",
}


def noise_seed(seed: int, kind: str, level: float) -> int:
    """Seed of one noise setting: independent streams per (kind, level), the same for every network."""
    h = hashlib.sha256(f"{seed}:{kind}:{level:.6g}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"images must be floating point in [-1, 1], got dtype {x.dtype}")
    return x


def add_gaussian(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Images plus N(0, sigma^2) per pixel, clipped to [-1, 1]. Returns a new float32 array.

    Parameters
    ----------
    images : array in [-1, 1], any shape (typically (N, C, H, W))
    sigma : standard deviation of the noise, >= 0
    seed : the same seed gives the same noise
    """
    x = _check_images(images)
    if not (np.isfinite(sigma) and sigma >= 0):
        raise UserError(f"gaussian noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    out = x.astype(np.float32, copy=True)
    if sigma > 0:
        out += rng.normal(0.0, sigma, size=x.shape).astype(np.float32)
        np.clip(out, -1.0, 1.0, out=out)
    return out


def flip_pixels(images: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Images with the sign of each pixel flipped independently with probability ``fraction``.

    Every value (each channel of each pixel) is an independent Bernoulli draw, so the flipped fraction of a
    large image is ``fraction`` up to binomial fluctuations. Returns a new float32 array.
    """
    x = _check_images(images)
    if not (0.0 <= fraction <= 1.0):
        raise UserError(f"flip fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    out = x.astype(np.float32, copy=True)
    if fraction > 0:
        mask = rng.random(size=x.shape) < fraction
        out[mask] = -out[mask]
    return out


def apply_noise(images: np.ndarray, kind: str, level: float, seed: int = 0) -> np.ndarray:
    """Dispatch on ``kind``: 'clean' (a copy), 'gaussian' (sigma = level) or 'flip' (fraction = level)."""
    if kind == "clean":
        return _check_images(images).astype(np.float32, copy=True)
    if kind == "gaussian":
        return add_gaussian(images, level, seed)
    if kind == "flip":
        return flip_pixels(images, level, seed)
    raise UserError(f"unknown noise kind {kind!r}; choose one of {', '.join(KINDS)}")


def noise_settings(
    levels: Sequence[float] = GAUSSIAN_LEVELS, flips: Sequence[float] = FLIP_LEVELS
) -> list[tuple[str, float]]:
    """The (kind, level) pairs to evaluate: each kind's curve starts at level 0 (the clean baseline).

    Storing the clean baseline as level 0 of each kind keeps every curve of the table self-contained (MSE vs
    level from 0); a kind without levels is left out.
    """
    for name, vals in (("--levels", levels), ("--flip", flips)):
        if len(vals) > MAX_LEVELS:
            raise UserError(f"{name}: {len(vals)} values, above the limit of {MAX_LEVELS}")
    for s in levels:
        if not (np.isfinite(s) and s >= 0):
            raise UserError(f"--levels: sigma must be >= 0, got {s}")
    for p in flips:
        if not (0 <= p <= 1):
            raise UserError(f"--flip: fraction must be in [0, 1], got {p}")
    out: list[tuple[str, float]] = []
    for kind, vals in (("gaussian", levels), ("flip", flips)):
        if len(vals):
            out += [(kind, v) for v in sorted({0.0, *(float(x) for x in vals)})]
    return out


def noise_table_path(rundir: str | os.PathLike[str]) -> Path:
    return rd.noise_path(rundir)


def read_noise(rundir: str | os.PathLike[str]) -> pd.DataFrame:
    """The noise table of a run directory (empty, with every column, if none yet)."""
    path = noise_table_path(rundir)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=NOISE_DTYPES[c]) for c in NOISE_COLUMNS})
    df = read_parquet_file(path, what="noise table")
    for c in LATER_COLUMNS:
        if c not in df.columns:
            df[c] = None
    missing = [c for c in NOISE_COLUMNS if c not in df.columns]
    try:
        if missing:
            raise ValueError(f"no column {missing[0]!r}")
        if df["run_id"].isna().any() or not df["noise_kind"].isin(KINDS).all():
            raise ValueError("rows without a run id or a known noise kind")
        df = df[NOISE_COLUMNS].astype(NOISE_DTYPES)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a readable noise table ({exc}); move it out of the way") from None
    return df


def _write_noise(rundir: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    # Write-to-temp + atomic rename: a killed evaluation never leaves a half-written table behind.
    path = noise_table_path(rundir)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


# ---------------------------------------------------------------------------------------------------------
# Evaluating trained networks under noise


def _checkpoints_to_evaluate(rundir: Path, select: str, n_train: str | int | None = None) -> pd.DataFrame:
    """Rows of the results table whose checkpoints to evaluate: every ok one, or the best per grid point;
    at every N_D (``n_train`` None), at the largest N_D of each model and target ("max"), or at one N_D."""
    from moirescale.results import GRID_KEY, checkpointed_rows, point_key, read_results

    if select not in ("all", "best"):
        raise UserError(f"--select must be 'all' or 'best', got {select!r}")
    if n_train is not None and n_train != "max":
        try:
            n_train = int(n_train)
        except (TypeError, ValueError):
            raise UserError(f"--n-train must be 'max' or a number, got {n_train!r}") from None
    d = checkpointed_rows(read_results(rundir), rundir)
    if n_train == "max":
        fam = ["arch", "width", "n_layers", "target"]
        top = d.groupby(fam, dropna=False)["n_train"].transform("max")
        d = d[d["n_train"] == top]
    elif n_train is not None:
        d = d[d["n_train"] == n_train]
        if d.empty:
            raise UserError(f"{rundir}: no finished network with N_D = {n_train}")
    if select == "best":  # the realization with the lowest validation MSE of each grid point
        key = point_key(d)
        d = d.sort_values("val_mse", kind="stable").groupby(key, dropna=False, sort=False).head(1)
    return d.sort_values([*GRID_KEY, "realization"]).reset_index(drop=True)


def predict_images(model: Any, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """A network's outputs (N, n_outputs) on images (N, C, H, W), in batches, without gradients."""
    import torch

    dev = next(iter(model.parameters())).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            xb = torch.from_numpy(images[i : i + batch_size]).to(dev)
            out.append(model(xb).float().cpu().numpy())
    return np.concatenate(out).reshape(len(images), -1)


def model_channels(meta: dict[str, Any], store: Any) -> list[int]:
    """Positions in the store's images of the channels the network (checkpoint ``meta``) was trained on."""
    from moirescale.data.torch_data import channel_slice

    return channel_slice(store, str(meta.get("channels", "top")))


def evaluate_noise(
    rundir: str | os.PathLike[str],
    store: Any,
    levels: Sequence[float] = GAUSSIAN_LEVELS,
    flips: Sequence[float] = FLIP_LEVELS,
    select: str = "all",
    seed: int = 0,
    n_test: int | None = None,
    n_train: str | int | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> pd.DataFrame:
    """Evaluate trained networks on the test split under each noise setting; write ``RUNDIR/noise.parquet``.

    Resumable: (run_id, noise_kind, noise_level) rows already in the table are kept and not recomputed; the
    table is rewritten atomically after each network.

    Parameters
    ----------
    rundir : run directory with results.parquet and checkpoints/
    store : a :class:`moirescale.data.store.Store` or its path (the dataset the networks were trained on)
    levels : Gaussian sigmas; flips : flipped-pixel fractions (level 0 = clean is added to each kind)
    select : 'all' ok checkpoints, or the 'best' realization (lowest val MSE) per grid point
    seed : noise seed (the same noise for every network)
    n_test : evaluate on the first n_test test images only (None: all)
    n_train : which N_D: None (all), "max" (the largest of each model and target: the cheap, informative
        choice for big sweeps), or one value

    Returns
    -------
    The whole noise table (one row per network and noise setting; MSE in scaled label units).
    """
    from moirescale.data.store import Store, open_store
    from moirescale.train import load_checkpoint
    from moirescale.use.predict import check_checkpoint

    rundir = Path(rundir)
    if not rundir.is_dir():
        raise UserError(f"{rundir}: no such run directory")
    settings = noise_settings(levels, flips)
    st = store if isinstance(store, Store) else open_store(store)
    runs = _checkpoints_to_evaluate(rundir, select, n_train)
    images, y = _clean_test_set(st, n_test, len(settings))
    n = len(images)
    table = read_noise(rundir)
    other = sorted(set(table["n_test"].astype(int)) - {n})
    if other:  # a row made on another test set is not comparable with these
        raise UserError(
            f"{noise_table_path(rundir)} holds rows evaluated on {other[0]} test images, now {n}; use "
            f"--n-test {other[0]}, or move the table away to start again"
        )
    store_hash = str(st.manifest.get("config_hash", ""))
    _check_same_noise(rundir, table, seed, store_hash, st.root)
    done = set(zip(table["run_id"], table["noise_kind"], table["noise_level"].astype(float), strict=True))
    # The corrupted test sets, drawn once on all channels and shared by every network (paired comparisons).
    noisy: dict[tuple[str, float], np.ndarray] = {}

    def corrupted(kind: str, level: float, ch: list[int]) -> np.ndarray:
        if (kind, level) not in noisy:
            noisy[kind, level] = apply_noise(images, kind, level, noise_seed(seed, kind, level))
        return np.ascontiguousarray(noisy[kind, level][:, ch])

    it = runs.iterrows()
    if progress:
        from rich.progress import track

        it = track(list(it), description="noise evaluation")
    for _, r in it:
        todo = [(k, v) for k, v in settings if (r["run_id"], k, v) not in done]
        if not todo:
            continue
        model, meta = load_checkpoint(rundir / r["checkpoint"])
        model.eval()
        check_checkpoint(str(rundir / r["checkpoint"]), model, meta)
        ch = model_channels(meta, st)
        cols = label_columns(rundir / r["checkpoint"], meta, r["target"], st)
        same = {"run_id": r["run_id"], "arch": r["arch"], "width": r["width"], "n_layers": r["n_layers"],
                "target": r["target"], "n_train": int(r["n_train"]), "realization": int(r["realization"]),
                "n_test": n, "noise_seed": int(seed), "store_hash": store_hash}
        new = []
        clean_pred = None  # level 0 of every kind is the same clean test set: predict it once
        for kind, level in todo:
            if level == 0:
                if clean_pred is None:
                    clean_pred = predict_images(model, np.ascontiguousarray(images[:, ch]), batch_size)
                pred = clean_pred
            else:
                pred = predict_images(model, corrupted(kind, level, ch), batch_size)
            err = (pred - y[:, cols]) ** 2
            new.append({**same, "noise_kind": kind, "noise_level": float(level), "mse": float(err.mean()),
                        **_per_label(err, cols, st.label_names)})
        table = pd.concat([table, pd.DataFrame(new, columns=NOISE_COLUMNS)], ignore_index=True)
        table = table.astype(NOISE_DTYPES)
        _write_noise(rundir, table)
        done.update((r["run_id"], k, v) for k, v in todo)
    return table


def _clean_test_set(st: Any, n_test: int | None, n_settings: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_test`` test images of store ``st`` (all: None) and their scaled labels; refused when the
    ``n_settings`` noisy copies would not fit in memory."""
    from moirescale.data.torch_data import label_scaler

    n_all = st.split_len("test")
    n = n_all if n_test is None else min(int(n_test), n_all)
    if n < 1:
        raise UserError(f"{st.root}: the test split is empty")
    need = n * int(np.prod(st.image_shape)) * 4 * (n_settings + 1)
    if need > MAX_NOISY_BYTES:
        raise UserError(
            f"{n_settings} noise settings on {n} test images would hold {need / 2**30:.1f} GiB in memory, "
            f"above the limit of {MAX_NOISY_BYTES / 2**30:.0f} GiB; give fewer --levels/--flip or a smaller "
            "--n-test"
        )
    images, labels = st.read("test", np.arange(n))
    return images, label_scaler(st).scale(labels)  # the store's own label ranges, the units of every MSE


def _check_same_noise(rundir: Path, table: pd.DataFrame, seed: int, store_hash: str, store: Path) -> None:
    """Refuse to extend a table made with another noise seed or on another store: its rows would not be
    paired with the new ones (rows of a table older than these columns record neither, and are kept)."""
    seeds = sorted(set(table["noise_seed"].dropna().astype(int)) - {int(seed)})
    if seeds:
        raise UserError(
            f"{noise_table_path(rundir)} holds rows made with noise seed {seeds[0]}, now {seed}; use "
            f"--seed {seeds[0]}, or move the table away to start again"
        )
    stores = sorted(set(table["store_hash"].dropna().astype(str)) - {store_hash})
    if stores:
        raise UserError(
            f"{noise_table_path(rundir)} holds rows evaluated on another store (config hash "
            f"{stores[0][:12]}) than {store} ({store_hash[:12]}); give that store with --store, or move the "
            "table away to start again"
        )


def label_columns(checkpoint: Path, meta: dict[str, Any], target: str, store: Any) -> list[int]:
    """The store's label columns a network regresses, checked against its checkpoint (its label names and
    number of outputs)."""
    from moirescale.labels import LABELS, target_index

    names = tuple(store.label_names)
    trained = tuple(meta.get("label_names") or LABELS)
    if trained != names:
        raise UserError(
            f"checkpoint {checkpoint} was trained on labels {', '.join(trained)}, but {store.root} has "
            f"{', '.join(names)}; give the store it was trained on with --store"
        )
    cols = target_index(target, names)
    if int(meta["n_outputs"]) != len(cols):
        raise UserError(
            f"checkpoint {checkpoint}: the network gives {meta['n_outputs']} outputs, but its target "
            f"{target} needs {len(cols)}; it does not belong to its results row"
        )
    return cols


def _per_label(err: np.ndarray, cols: list[int], names: Sequence[str]) -> dict[str, Any]:
    """The per-label MSE columns of a row: ``mse_labels`` (JSON by the store's label names) and, for a
    simulated store, the fixed ``mse_theta``/``mse_J``/``mse_D`` (NaN for labels the target leaves out)."""
    from moirescale.labels import LABELS

    per = {names[c]: float(err[:, j].mean()) for j, c in enumerate(cols)}
    fixed = {f"mse_{lab}": per.get(lab, np.nan) if tuple(names) == LABELS else np.nan for lab in LABELS}
    return {**fixed, "mse_labels": json.dumps(per, sort_keys=True)}


def summarize_noise(table: pd.DataFrame, print_table: bool = True) -> pd.DataFrame:
    """How much noise hurts, per target: the geometric mean over networks of MSE(noisy) / MSE(clean).

    Each network is compared with itself on the clean test set, so the factor does not mix model sizes or N_D.
    Returns one row per (target, noise_kind, noise_level) with ``gmean_mse`` and ``factor``; prints it as a
    compact rich table (one row per setting, one column per target) when ``print_table``.
    """
    if table.empty:
        return pd.DataFrame(columns=["target", "noise_kind", "noise_level", "gmean_mse", "factor"])
    t = table[np.isfinite(table["mse"]) & (table["mse"] > 0)].copy()
    clean = t[t["noise_level"] == 0].drop_duplicates("run_id").set_index("run_id")["mse"]
    t["gmean_mse"] = t["mse"]
    t["factor"] = t["mse"] / t["run_id"].map(clean)
    s = t.groupby(["target", "noise_kind", "noise_level"])[["gmean_mse", "factor"]].agg(geomean).reset_index()
    if print_table:
        from rich.console import Console
        from rich.table import Table

        order = {"gaussian": 1, "flip": 2}
        from moirescale.labels import order_targets

        targets = order_targets(s["target"])
        rt = Table(title="noise: geometric-mean test MSE (scaled labels) and × clean, over all networks")
        rt.add_column("noise")
        for x in targets:
            rt.add_column(x, justify="right")
        settings = sorted({(k, v) for k, v in zip(s["noise_kind"], s["noise_level"], strict=True)},
                          key=lambda kv: (kv[1] > 0, order.get(kv[0], 9), kv[1]))
        shown_clean = False
        idx = s.set_index(["noise_kind", "noise_level", "target"])
        for k, v in settings:
            if v == 0 and shown_clean:  # level 0 of each kind is the same clean evaluation
                continue
            shown_clean = shown_clean or v == 0
            cells = []
            for x in targets:
                if (k, v, x) in idx.index:
                    r = idx.loc[(k, v, x)]
                    cells.append(f"{r['gmean_mse']:.3g} (×{r['factor']:.2f})")
                else:
                    cells.append("")
            rt.add_row("clean" if v == 0 else f"{k} {v:g}", *cells)
        Console().print(rt)
    return s
