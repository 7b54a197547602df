"""Generate a dataset store from a config: resumable, idempotent, deterministic (see docs/data.md).

The plan is fixed by the config alone: split s, sample i has seed ``seed * 10^11 + s * 10^10 + i``
(s = 0, 1, 2 for train, val, test); its labels are drawn i.i.d. uniform from the stream
``default_rng([sample_seed, LABEL_STREAM])``; samples are cut into shards of ``shard_size``. A shard is
simulated, written to a temporary file and renamed into place, then the manifest is rewritten atomically. A
rerun after a kill skips the shards that exist, so the store ends byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from moirescale import __version__
from moirescale.data.config import (
    SEED_STRIDE,
    SPLIT_STRIDE,
    DatasetConfig,
    config_hash,
    resolve_physics,
    resolved_dict,
)
from moirescale.data.store import (
    FORMAT,
    FORMAT_VERSION,
    IMAGE_DTYPE,
    IMAGE_SCALE,
    MANIFEST,
    SPLITS,
    read_manifest,
    sha256_file,
    write_manifest,
    write_shard,
)
from moirescale.errors import UserError
from moirescale.fsio import is_empty, open_nofollow, remove_stale_temps
from moirescale.labels import LABELS, UNITS
from moirescale.limits import max_cell_side, sim_batch_limit

GENERATOR_VERSION = f"moirescale {__version__} (store format {FORMAT_VERSION})"
LABEL_STREAM = 0x6C6162656C  # "label": a stream the simulator never uses (it uses [seed, 0] and [seed, 1])
LOCK = ".generate.lock"


def code_fingerprint() -> str:
    """sha256 over the source of everything that decides a sample's bytes (the physics and this module).

    A store begun with one simulator and finished with another would mix two datasets; the version number
    alone does not change with every edit, so resuming checks this too.
    """
    import moirescale.physics as physics

    h = hashlib.sha256()
    files = sorted(Path(physics.__file__).parent.glob("*.py")) + [Path(__file__)]
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _environment() -> dict[str, str]:
    """Versions of the libraries that shape the numbers and the bytes (recorded, not enforced)."""
    import numba
    import torch

    return {
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__.split("+")[0],
    }


# ------------------------------------------------------------------------------------------------------ plan
def sample_seeds(base_seed: int, split: str, start: int, count: int) -> np.ndarray:
    """Seeds of samples ``start .. start+count-1`` of ``split`` (int64, contiguous)."""
    first = base_seed * SEED_STRIDE + SPLITS.index(split) * SPLIT_STRIDE + start
    return np.arange(first, first + count, dtype=np.int64)


def sample_labels(seeds: np.ndarray, ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """(N, 3) labels (theta deg, J meV, D meV), i.i.d. uniform in ``ranges``, each from its sample's seed."""
    lo = np.array([ranges[k][0] for k in LABELS], dtype=np.float64)
    hi = np.array([ranges[k][1] for k in LABELS], dtype=np.float64)
    u = (
        np.stack([np.random.default_rng([int(s), LABEL_STREAM]).random(3) for s in seeds])
        if len(seeds)
        else (np.empty((0, 3)))
    )
    return lo + (hi - lo) * u


def theta_eff_bounds(lo: float, hi: float, cells_per_side: int) -> tuple[float, float]:
    """Range of the stored theta_eff for theta in [lo, hi] deg: the lattice's own
    (:func:`moirescale.physics.lattice.theta_eff_range`), widened by a relative 1e-9 for round-off."""
    from moirescale.physics.lattice import theta_eff_range

    t_lo, t_hi = theta_eff_range(lo, hi, cells_per_side)
    return t_lo * (1 - 1e-9), t_hi * (1 + 1e-9)


def plan_shards(cfg: DatasetConfig) -> list[dict[str, Any]]:
    """Every shard of the store, in generation order (train, val, test), without checksums."""
    out = []
    for split in SPLITS:
        n = getattr(cfg.splits, split)
        for index, start in enumerate(range(0, n, cfg.shard_size)):
            count = min(cfg.shard_size, n - start)
            seeds = sample_seeds(cfg.seed, split, start, count)
            out.append(
                {
                    "file": f"{split}-{index:05d}.h5",
                    "split": split,
                    "index": index,
                    "start": start,
                    "count": count,
                    "seed_lo": int(seeds[0]),
                    "seed_hi": int(seeds[-1]),
                }
            )
    return out


def new_manifest(cfg: DatasetConfig) -> dict[str, Any]:
    """The manifest of a store before any shard is written."""
    resolved = resolved_dict(cfg)
    t_lo, t_hi = theta_eff_bounds(*cfg.labels.theta, cfg.cells_per_side)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "code_fingerprint": code_fingerprint(),
        "environment": _environment(),
        "config_hash": config_hash(resolved),
        "config": resolved,
        "label_names": list(LABELS),
        "label_units": [UNITS[k] for k in LABELS],
        "label_ranges": {k: list(getattr(cfg.labels, k)) for k in LABELS},
        # What verify accepts: theta_eff differs from the sampled theta by the rounding of the cell size.
        "label_bounds": {"theta": [t_lo, t_hi], "J": list(cfg.labels.J), "D": list(cfg.labels.D)},
        "image_shape": None,  # (C, H, W), filled in from the first shard
        "image_channels": list(resolved["image"].get("channels", [])),
        "image_dtype": IMAGE_DTYPE,
        "image_scale": IMAGE_SCALE,
        "shard_size": cfg.shard_size,
        "n_shards": len(plan_shards(cfg)),
        "splits": {
            s: {
                "n": getattr(cfg.splits, s),
                "seed_lo": int(sample_seeds(cfg.seed, s, 0, 1)[0]),
                "seed_hi": int(sample_seeds(cfg.seed, s, 0, 1)[0]) + getattr(cfg.splits, s) - 1,
            }
            for s in SPLITS
        },
        "shards": [],
        "complete": False,
    }


# ------------------------------------------------------------------------------------------ output directory
@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (released by the OS even on SIGKILL)."""
    try:
        fh = open_nofollow(out / LOCK)  # held open for the whole run, closed below; never through a link
    except OSError as exc:
        raise UserError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `moirescale generate` is writing to {out}; wait for it") from None
        yield


def _prepare_dir(out: Path) -> None:
    try:
        kind = os.stat(out).st_mode
    except FileNotFoundError:
        kind = None
    except OSError as exc:  # a link loop, a component that is a file
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if kind is not None and not stat.S_ISDIR(kind):
        raise UserError(f"output {out} exists and is not a directory")
    if kind is not None and not (out / MANIFEST).exists() and not is_empty(out, allowed=(LOCK,)):
        # Refused before the lock file is made: a user's folder is left exactly as it was.
        raise UserError(f"{out} is not empty and holds no {MANIFEST}; choose a new or empty --out directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"output directory {out} is not writable")


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _open_or_create(out: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from: the existing one when the config matches, else a new one."""
    if (out / MANIFEST).exists():
        m = read_manifest(out)
        if m["config_hash"] != fresh["config_hash"]:
            keys = _diff_keys(m.get("config"), fresh["config"])
            raise UserError(
                f"{out} holds a store made with a different config (differs in: "
                f"{', '.join(keys) or 'hash'}); use the original config or a new --out"
            )
        return m
    if not is_empty(out, allowed=(LOCK,)):  # a dotfile counts: `.bashrc` makes a folder someone's
        raise UserError(f"{out} is not empty and holds no {MANIFEST}; choose a new or empty --out directory")
    write_manifest(out, fresh)
    return fresh


def _shard_on_disk(out: Path, rec: dict[str, Any], listed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The finished record of a shard already on disk, or None if it must be (re)made."""
    path = out / rec["file"]
    if not path.is_file():
        return None
    if listed is not None:
        if path.stat().st_size == listed["bytes"] and sha256_file(path) == listed["sha256"]:
            return listed
        return None
    # Renamed into place but killed before the manifest update: adopt it if it is the shard we planned.
    try:
        with h5py.File(path, "r") as f:
            seeds = f["seeds"][:]
            shape = f["images"].shape
    except (OSError, KeyError):
        return None
    if not np.array_equal(seeds, np.arange(rec["seed_lo"], rec["seed_hi"] + 1)):
        return None
    return {**rec, "bytes": path.stat().st_size, "sha256": sha256_file(path), "_shape": list(shape[1:])}


def _record(m: dict[str, Any], rec: dict[str, Any], out: Path) -> None:
    shape = rec.pop("_shape")
    if m["image_shape"] is None:
        m["image_shape"] = shape
    elif m["image_shape"] != shape:
        raise RuntimeError(f"shard {rec['file']} has image shape {shape}, the store has {m['image_shape']}")
    m["shards"] = sorted(
        [r for r in m["shards"] if r["file"] != rec["file"]] + [rec],
        key=lambda r: (SPLITS.index(r["split"]), r["index"]),
    )
    write_manifest(out, m)


# ------------------------------------------------------------------------------------------------- generate
def simulate_shard(
    cfg: DatasetConfig,
    rec: dict[str, Any],
    physics: tuple,
    batch_size: int,
    workers: int | None,
    advance=None,
) -> dict[str, np.ndarray]:
    """Simulate the samples of one planned shard; returns the arrays :func:`write_shard` takes."""
    from moirescale.physics import simulate_batch

    params, protocol, image, jperp = physics
    seeds = sample_seeds(cfg.seed, rec["split"], rec["start"], rec["count"])
    labels = sample_labels(seeds, {k: getattr(cfg.labels, k) for k in LABELS})
    images, stored, energies = [], [], []
    for a in range(0, len(seeds), batch_size):
        sl = slice(a, a + batch_size)
        samples = simulate_batch(
            labels[sl, 0],
            labels[sl, 1],
            labels[sl, 2],
            seeds[sl],
            backend=cfg.backend,
            image=image,
            protocol=protocol,
            params=params,
            cells_per_side=cfg.cells_per_side,
            jperp=jperp,
            workers=workers,
        )
        for s, seed in zip(samples, seeds[sl], strict=True):
            if int(s["seed"]) != int(seed):
                raise RuntimeError(f"simulate_batch returned seed {s['seed']} where {seed} was asked")
            images.append(np.asarray(s["image"], dtype=np.float32))
            stored.append((s["theta_eff"], s["J"], s["D"]))
            energies.append(s["energy"])
        if advance is not None:
            advance(len(samples))
    return {
        "images": np.stack(images),
        "labels": np.array(stored, dtype=np.float64),
        "seeds": seeds,
        "energies": np.array(energies, dtype=np.float64),
    }


def generate(
    cfg: DatasetConfig,
    out: str | os.PathLike,
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Make (or finish) the store ``out`` described by ``cfg``; return its path.

    Parameters
    ----------
    cfg : the validated dataset config (see :func:`moirescale.data.config.load_config`).
    out : the store directory: new, empty, or a store made earlier with the same config (resumed).
    batch_size : samples per ``simulate_batch`` call (speed only; default: a shard on torch, else 64).
    workers : simulator worker processes/threads (speed only; None = every core).
    progress : show a rich progress bar with images/s and ETA on stderr.

    Raises
    ------
    UserError : unwritable or foreign output directory, a store with a different config, bad options.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UserError(f"workers must be a positive integer, got {workers!r}")
    physics = resolve_physics(cfg)
    # A GPU wants whole shards per call; on the CPU smaller calls give a livelier progress bar. numba runs one
    # sample per worker thread when a call has at least as many samples as workers (it shares the rows of a
    # sample between threads only when it has fewer): a few samples per worker keep every core busy.
    cpu_batch = max(64, 4 * (workers or os.cpu_count() or 1))
    default_batch = cfg.shard_size if resolved_dict(cfg)["backend"] == "torch" else cpu_batch
    batch = min(batch_size or default_batch, cfg.shard_size)
    # Speed only: fewer samples per call when their cells would not fit in memory together.
    batch = min(batch, sim_batch_limit(max_cell_side(cfg.labels.theta[0], cfg.cells_per_side)))
    out = Path(out)
    fresh = new_manifest(cfg)  # every check of the config before the output directory is touched
    _prepare_dir(out)
    with _locked(out):
        m = _open_or_create(out, fresh)
        # Leftovers of a killed run, by their exact names only (we hold the lock: nobody else is writing).
        ours = {MANIFEST, *(rec["file"] for rec in plan_shards(cfg))}
        remove_stale_temps(out, ours.__contains__, older_than_s=0.0)
        listed = {r["file"]: r for r in m["shards"]}
        todo = []
        for rec in plan_shards(cfg):
            done = _shard_on_disk(out, rec, listed.get(rec["file"]))
            if done is None:
                todo.append(rec)
            elif rec["file"] not in listed:
                _record(m, done, out)
        for key in ("generator_version", "code_fingerprint"):
            # Only simulating needs the same code: a finished store is accepted whatever code made it.
            if todo and m.get(key) != fresh[key]:
                raise UserError(
                    f"{out} was begun by other simulator code ({key} {str(m.get(key))[:16]} vs "
                    f"{str(fresh[key])[:16]}); finishing it would mix two datasets: use a new --out"
                )
        with _progress(progress, sum(r["count"] for r in todo), out) as advance:
            for rec in todo:
                arrays = simulate_shard(cfg, rec, physics, batch, workers, advance)
                attrs = {"split": rec["split"], "index": rec["index"], "start": rec["start"]}
                try:
                    written = write_shard(out / rec["file"], **arrays, attrs=attrs)
                    _record(m, {**rec, **written, "_shape": list(arrays["images"].shape[1:])}, out)
                except OSError as exc:  # disk full, quota, a vanished mount: what is written stays valid
                    raise UserError(f"cannot write {out / rec['file']}: {exc.strerror or exc}") from None
        if not m["complete"]:
            m["complete"] = True
            write_manifest(out, m)
    return out


@contextmanager
def _progress(enabled: bool, total: int, out: Path) -> Iterator[Any]:
    if not enabled or total == 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} images/s" if speed else "- images/s")

    cols = (
        TextColumn(f"generating {out.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*cols, console=Console(stderr=True)) as bar:
        task = bar.add_task("generate", total=total)
        yield lambda k: bar.advance(task, k)


def ensure_store(
    config_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    pool: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Make, finish or leave as it is the store ``out`` that a dataset config describes; return its path.

    The library face of ``moirescale generate`` (same config, same overrides, same bytes): the sweep and the
    demo call it instead of running the command. A complete store of the same config is left untouched; an
    unfinished one is resumed.

    Parameters
    ----------
    config_path : a dataset YAML (``configs/dataset*.yaml``).
    out : the store directory.
    pool : size of the training pool (overrides ``splits.train``); N_D of every run draws from it.
    n_val, n_test : sizes of the validation and test splits (override ``splits.val``/``splits.test``).
    seed : the dataset seed (overrides ``seed``).
    workers, batch_size : speed only (default: the config's, else every core / the generator's choice).
    progress : show a progress bar on stderr.

    Raises
    ------
    UserError : a bad config or override, or what :func:`generate` refuses.
    """
    from moirescale.data.config import load_config

    for name, value in (("pool", pool), ("n_val", n_val), ("n_test", n_test), ("seed", seed)):
        if value is not None and value < 0:
            raise UserError(f"{name} must be >= 0, got {value}")
    overrides = {"splits.train": pool, "splits.val": n_val, "splits.test": n_test, "seed": seed}
    cfg, runtime = load_config(config_path, overrides)
    return generate(
        cfg,
        out,
        batch_size=batch_size or runtime["batch_size"],
        workers=workers or runtime["workers"],
        progress=progress,
    )
