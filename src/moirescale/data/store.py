"""The dataset store: a directory with ``manifest.json`` and fixed-size HDF5 shards (see docs/data.md).

Writing is shard by shard: each shard goes to a temporary file that is renamed into place, then the manifest
is rewritten atomically. Everything written is deterministic (no timestamps, canonical JSON), so a resumed run
is byte-identical to an uninterrupted one. Reading validates the manifest, checks each shard's size and sha256
the first time it is opened, and turns any HDF5 error into a :class:`UserError` that names the shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import h5py
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moirescale.errors import UserError
from moirescale.fsio import TMP_PREFIX as TMP_PREFIX  # re-exported: the store's temporary names
from moirescale.fsio import atomic_write
from moirescale.labels import LABELS, store_label_names
from moirescale.readback import read_json

FORMAT = "moirescale-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Images are stored as int16 = round(x * 32767): 2 bytes/pixel, uniform absolute precision 1.5e-5 on [-1, 1]
# (float16 would give only 4.9e-4 near +-1, where domain images spend most of their pixels).
IMAGE_DTYPE = "int16"
IMAGE_SCALE = 32767.0
# Shards whose sha256 this process has already checked, keyed by (path, size, mtime_ns, sha256): a sweep that
# opens the store once per job hashes each shard once, not once per job.
_VERIFIED: set[tuple[str, int, int, str]] = set()


# ----------------------------------------------------------------------------------------------- file helpers
def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """The one JSON spelling used for manifests and hashes: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically replace ``root/manifest.json``."""
    atomic_write(Path(root) / MANIFEST, canonical_json(manifest))


# ---------------------------------------------------------------------------------------------------- writing
def encode_images(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] -> int16 codes (values outside are clipped)."""
    x = np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0)
    return np.rint(x * IMAGE_SCALE).astype(np.int16)


def decode_images(codes: np.ndarray) -> np.ndarray:
    """int16 codes -> float32 images in [-1, 1]."""
    return codes.astype(np.float32) * np.float32(1.0 / IMAGE_SCALE)


def write_shard(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    seeds: np.ndarray,
    energies: np.ndarray,
    attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard atomically and return its record ``{file, count, bytes, sha256}``.

    Parameters
    ----------
    path : the final shard path (``root/<split>-<index>.h5``); a temporary sibling is written first.
    images : (N, C, H, W) float in [-1, 1]; stored as int16 codes.
    labels : (N, k) labels in the manifest's ``label_names`` order (a simulated store: theta_eff deg, J meV,
        D meV); stored as float64.
    seeds : (N,) per-sample seeds (int64).
    energies : (N,) final energies (meV); stored as float64.
    attrs : small scalar attributes to store on the file (must be deterministic).
    """
    path = Path(path)
    images = np.asarray(images)
    n = images.shape[0]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    labels = np.asarray(labels, dtype=np.float64).reshape(n, -1)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(n)
    energies = np.asarray(energies, dtype=np.float64).reshape(n)
    # libver pinned and track_times off: identical inputs give identical bytes (resume == uninterrupted run).
    # Built in memory (the core driver's image is byte for byte what a file would hold), then written with
    # one atomic write: a full disk is a plain OSError there, not an HDF5 library failing mid-close.
    with h5py.File(f"{path.name}.in-memory", "w", driver="core", backing_store=False,
                   libver=("earliest", "v110"), track_order=False) as f:
        f.create_dataset(
            "images",
            data=encode_images(images),
            chunks=(1, *images.shape[1:]),  # one sample per chunk: cheap random access for lazy datasets
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            fletcher32=True,  # per-chunk checksum: a flipped bit fails the read instead of returning noise
            track_times=False,
        )
        for name, arr in (("labels", labels), ("seeds", seeds), ("energies", energies)):
            f.create_dataset(name, data=arr, fletcher32=True, chunks=arr.shape, track_times=False)
        for k, v in sorted((attrs or {}).items()):
            f.attrs[k] = v
        f.flush()
        image = f.id.get_file_image()
    atomic_write(path, image)
    digest = hashlib.sha256(image).hexdigest()
    return {"file": path.name, "count": int(n), "bytes": len(image), "sha256": digest}


# ---------------------------------------------------------------------------------------------------- reading
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


Count = Annotated[int, Field(strict=True, ge=0)]
Positive = Annotated[int, Field(strict=True, ge=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class SplitRecord(_Loose):
    n: Count


class ShardRecord(_Loose):
    """One shard of the manifest: a plain file name inside the store, and where its samples sit."""

    file: Annotated[str, Field(pattern=r"^(train|val|test)-\d{5,}\.h5$")]
    split: Literal["train", "val", "test"]
    index: Count
    start: Count
    count: Positive
    bytes: Count
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    seed_lo: Annotated[int, Field(strict=True)]
    seed_hi: Annotated[int, Field(strict=True)]


class Manifest(_Loose):
    """The parts of ``manifest.json`` that readers rely on, checked as a whole before any is used."""

    format: Literal["moirescale-store"]
    format_version: Count
    splits: dict[Literal["train", "val", "test"], SplitRecord]
    shards: list[ShardRecord]
    image_shape: Annotated[list[Positive], Field(min_length=3, max_length=3)] | None
    shard_size: Positive
    config_hash: str
    complete: bool = False
    label_bounds: dict[str, tuple[Finite, Finite]]
    label_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"splits must name {', '.join(SPLITS)}")
        files = [r.file for r in self.shards]
        if len(set(files)) != len(files):
            raise ValueError("a shard file is listed twice")
        for r in self.shards:
            if not r.file.startswith(f"{r.split}-") or r.count > self.shard_size:
                raise ValueError(f"shard {r.file}: split or count disagree with the store layout")
            if r.start + r.count > self.splits[r.split].n:
                raise ValueError(f"shard {r.file}: samples beyond its split's {self.splits[r.split].n}")
        names = self.label_names or list(LABELS)
        if len(set(names)) != len(names) or set(self.label_bounds) != set(names):
            raise ValueError(f"label_bounds must give {', '.join(names)}")
        if self.complete and self.image_shape is None:
            raise ValueError("a complete store needs image_shape")
        return self


def read_manifest(root: str | os.PathLike) -> dict:
    """Load ``root/manifest.json`` and validate it as a whole (:class:`Manifest`); UserError if missing,
    foreign or malformed (a missing key, a wrong type, a shard file outside the store, impossible counts)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset store {root} does not exist or is not a directory")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{root} is not a dataset store: no {MANIFEST} (make one with `moirescale generate`)")
    m = read_json(mpath, "dataset manifest")
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise UserError(f"{mpath} is not a moirescale dataset manifest (format != {FORMAT!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{mpath} has store format version {m.get('format_version')}; this code reads {FORMAT_VERSION}"
        )
    try:
        Manifest.model_validate(m)
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        raise UserError(f"{mpath} is corrupt: {where}: {msg}") from None
    return m


def nested_subset(pool: int, n: int, seed: int) -> np.ndarray:
    """The training subset of size ``n`` of seed ``seed``: the first ``n`` of a seeded permutation of a pool
    of ``pool`` samples. Subsets of one seed are nested (a smaller N_D is a prefix of a larger one).

    The one rule for drawing training subsets; :meth:`Store.subset_indices` and training both use it.
    """
    if not 0 <= int(n) <= int(pool):
        raise UserError(f"subset size {n} must be between 0 and the training pool size {pool}")
    return np.random.default_rng(int(seed)).permutation(int(pool))[: int(n)]


class Store:
    """Read access to a complete dataset store. Make one with :func:`open_store`.

    Attributes
    ----------
    root : the store directory.
    manifest : the parsed ``manifest.json``.
    image_shape : (C, H, W) of the stored images.
    """

    def __init__(self, root: str | os.PathLike, manifest: dict, checksum: bool = True):
        self.root = Path(root)
        self.manifest = manifest
        self.checksum = checksum
        self.image_shape: tuple[int, int, int] = tuple(int(v) for v in manifest["image_shape"])  # type: ignore
        self.shard_size = int(manifest["shard_size"])
        self.label_names: tuple[str, ...] = store_label_names(manifest)
        self._shards: dict[str, list[dict]] = {s: [] for s in SPLITS}
        for rec in manifest["shards"]:
            self._shards[rec["split"]].append(rec)
        for s in SPLITS:
            self._shards[s].sort(key=lambda r: r["index"])
        self._checked: set[str] = set()
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    # -- size and layout
    def split_len(self, split: str) -> int:
        """Number of samples in ``split`` ('train', 'val' or 'test')."""
        return sum(r["count"] for r in self._shards[self._check_split(split)])

    def _check_split(self, split: str) -> str:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return split

    def _check_indices(self, split: str, indices: Iterable[int] | None) -> np.ndarray:
        n = self.split_len(split)
        if indices is None:
            return np.arange(n, dtype=np.int64)
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise UserError(
                f"indices must be a 1-D sequence of integers, got dtype {idx.dtype}, shape {idx.shape}"
            )
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UserError(
                f"index out of range for split {split!r} of {n} samples: {idx.min()}..{idx.max()}"
            )
        return idx

    # -- shard access
    def _open(self, rec: dict) -> h5py.File:
        if os.getpid() != self._pid:  # forked (DataLoader worker): HDF5 handles must not cross a fork
            self._files = {}
            self._pid = os.getpid()
        name = rec["file"]
        f = self._files.get(name)
        if f is not None:
            return f
        path = self.root / name
        if not path.is_file():
            raise UserError(f"shard {path} is missing (run `moirescale data verify {self.root}`)")
        if name not in self._checked:
            st = path.stat()
            if st.st_size != rec["bytes"]:
                raise UserError(
                    f"shard {path} is truncated or altered: {st.st_size} bytes, manifest says {rec['bytes']}"
                )
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns, rec["sha256"])
            if self.checksum and key not in _VERIFIED:
                if sha256_file(path) != rec["sha256"]:
                    raise UserError(f"shard {path} is corrupt: sha256 does not match the manifest")
                _VERIFIED.add(key)
            self._checked.add(name)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise UserError(f"shard {path} cannot be read: {str(exc).splitlines()[0]}") from None
        problem = _layout_problem(f, rec["count"], self.image_shape, len(self.label_names))
        if problem:
            f.close()
            raise UserError(f"shard {path} is not the one its manifest lists: {problem}")
        self._files[name] = f
        return f

    def _read_shard(self, rec: dict, local: np.ndarray, ch: slice) -> tuple[np.ndarray, np.ndarray]:
        """Image codes (channels ``ch``) and labels of the sorted unique ``local`` indices of a shard."""
        f = self._open(rec)
        try:
            lo, hi = int(local[0]), int(local[-1]) + 1
            # Dense requests: one contiguous read then a numpy take; sparse: h5py point selection.
            if local.size >= 0.25 * (hi - lo):
                img = f["images"][lo:hi, ch][local - lo]
            else:
                img = f["images"][local, ch]
            lab = f["labels"][:][local]
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"shard {self.root / rec['file']} is corrupt: {exc}") from None
        return img, lab

    def read(
        self,
        split: str,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        channels: slice | Sequence[int] | None = None,
        codes: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images float32 (N, C, H, W) in [-1, 1] and labels float64 (N, k) in physical units (k labels,
        :attr:`label_names`; a simulated store's theta_eff, J, D).

        ``indices`` (any order, repeats allowed) select samples of the split; ``None`` reads all of it. Reads
        are grouped by shard and sorted within each, so any subset is loaded in one pass. ``channels`` (a
        slice of C, or channel positions in the order wanted) reads only those image channels. ``codes``:
        the images as the stored int16 codes (half the memory; value = code / 32767) instead of float32.
        """
        if channels is not None and not isinstance(channels, slice):
            pos = [int(c) for c in channels]
            lo, hi = min(pos), max(pos) + 1
            if pos == list(range(lo, hi)):
                return self.read(split, indices, channels=slice(lo, hi), codes=codes)
            images, labels = self.read(split, indices, channels=slice(lo, hi), codes=codes)
            return np.ascontiguousarray(images[:, [p - lo for p in pos]]), labels
        split = self._check_split(split)
        idx = self._check_indices(split, indices)
        ch = slice(None) if channels is None else channels
        n_ch = len(range(*ch.indices(self.image_shape[0])))
        images = np.empty((idx.size, n_ch, *self.image_shape[1:]), dtype=np.int16 if codes else np.float32)
        labels = np.empty((idx.size, len(self.label_names)), dtype=np.float64)
        if idx.size == 0:
            return images, labels
        # Sorted unique order: each shard is read once; `order` maps it back to the order asked.
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        uniq, counts = np.unique(sidx, return_counts=True)
        shard_of = uniq // self.shard_size
        recs = self._shards[split]
        pos = 0
        for s in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == s)
            rec = recs[int(s)]
            stored, labs = self._read_shard(rec, uniq[sel] - rec["start"], ch)
            rep = counts[sel]
            dest = order[pos : pos + int(rep.sum())]
            pos += int(rep.sum())
            block = np.repeat(stored, rep, axis=0)
            images[dest] = block if codes else decode_images(block)
            labels[dest] = np.repeat(labs, rep, axis=0)
        return images, labels

    def read_meta(
        self, split: str, indices: Sequence[int] | np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Seeds (int64) and energies (float64) of the selected samples, in the order asked."""
        split = self._check_split(split)
        idx = self._check_indices(split, indices)
        out = {"seeds": np.empty(idx.size, np.int64), "energies": np.empty(idx.size, np.float64)}
        for s in np.unique(idx // self.shard_size):
            sel = np.flatnonzero(idx // self.shard_size == s)
            rec = self._shards[split][int(s)]
            f = self._open(rec)
            try:
                for key in out:
                    out[key][sel] = f[key][:][idx[sel] - rec["start"]]
            except (OSError, KeyError, ValueError) as exc:
                raise UserError(f"shard {self.root / rec['file']} is corrupt: {exc}") from None
        return out

    def subset_indices(self, n: int, seed: int) -> np.ndarray:
        """The first ``n`` of a seeded permutation of the training pool (:func:`nested_subset`)."""
        return nested_subset(self.split_len("train"), n, seed)

    def close(self) -> None:
        """Close open shard files (reopened on demand)."""
        for f in self._files.values():
            with contextlib.suppress(Exception):  # closing is best effort
                f.close()
        self._files = {}

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers / Ray: drop open handles
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split_len(s)}" for s in SPLITS)
        return f"Store({str(self.root)!r}, image_shape={self.image_shape}, {sizes})"


def open_store(path: str | os.PathLike, checksum: bool = True) -> Store:
    """Open a complete dataset store for reading.

    Parameters
    ----------
    path : the store directory (holding ``manifest.json``).
    checksum : check each shard's sha256 the first time it is opened (its size is always checked).

    Raises
    ------
    UserError : the directory or manifest is missing, foreign or corrupt, or the store is incomplete.
    """
    m = read_manifest(path)
    if not m.get("complete"):
        done = len(m["shards"])
        raise UserError(
            f"dataset store {path} is incomplete ({done} of {m.get('n_shards', '?')} shards); "
            "rerun the same `moirescale generate` command to finish it"
        )
    shape = m["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise UserError(f"{Path(path) / MANIFEST} is corrupt: image_shape {shape!r} is not (C, H, W)")
    size = int(m["shard_size"])
    for split in SPLITS:  # reads index shards by position: the layout must be exactly the planned one
        recs = sorted((r for r in m["shards"] if r["split"] == split), key=lambda r: r["index"])
        n = int(m["splits"][split]["n"])
        layout = [(r["index"], r["start"], r["count"]) for r in recs]
        planned = [(i, a, min(size, n - a)) for i, a in enumerate(range(0, n, size))]
        if layout != planned:
            raise UserError(
                f"{Path(path) / MANIFEST} is corrupt: the {split} shards do not cover its {n} samples "
                f"in shards of {size}"
            )
    return Store(path, m, checksum=checksum)


def _layout_problem(f: h5py.File, n: int, shape: tuple[int, ...], k: int = 3) -> str | None:
    """What is wrong with an open shard's datasets (names, shapes, dtypes) for ``n`` samples, or None."""
    spec = {
        "images": ((n, *shape), np.int16),
        "labels": ((n, k), np.float64),
        "seeds": ((n,), np.int64),
        "energies": ((n,), np.float64),
    }
    for key, (shp, dt) in spec.items():
        ds = f.get(key)
        if not isinstance(ds, h5py.Dataset):
            return f"dataset {key!r} missing"
        if ds.shape != shp or ds.dtype != dt:
            return f"{key} is {ds.dtype}{ds.shape}, expected {np.dtype(dt)}{shp}"
    return None


# ---------------------------------------------------------------------------------------------------- verify
def verify_store(path: str | os.PathLike) -> list[str]:
    """Check every shard against the manifest; return the problems found (empty: the store is sound).

    Checks: manifest valid and complete; every planned shard present; sha256 and size; dataset names, shapes
    and dtypes; counts per shard and per split; labels finite and inside the manifest's ``label_bounds``;
    seeds equal to the recorded seed range; images inside [-1, 1].
    """
    m = read_manifest(path)
    root = Path(path)
    problems: list[str] = []
    if not m.get("complete"):
        problems.append(f"store is incomplete: {len(m['shards'])} of {m.get('n_shards', '?')} shards written")
    shape = tuple(m["image_shape"] or ())
    bounds = np.array([m["label_bounds"][k] for k in store_label_names(m)], dtype=np.float64)
    size = int(m["shard_size"])
    for split in SPLITS:
        recs = sorted((r for r in m["shards"] if r["split"] == split), key=lambda r: r["index"])
        n_expected = int(m["splits"][split]["n"])
        n_planned = -(-n_expected // size)
        have = {r["index"] for r in recs}
        if m.get("complete"):
            missing = sorted(set(range(n_planned)) - have)
            if missing:
                problems.append(f"{split}: shards {missing} missing from the manifest")
        total = sum(r["count"] for r in recs)
        if m.get("complete") and total != n_expected:
            problems.append(f"{split}: {total} samples in shards, manifest says {n_expected}")
        for rec in recs:
            problems.extend(_verify_shard(root, rec, shape, bounds, size, n_expected))
    known = {r["file"] for r in m["shards"]}
    for p in sorted(root.iterdir()):
        if p.suffix == ".h5" and p.name not in known:
            problems.append(f"{p.name}: shard file not listed in the manifest")
    return problems


def _verify_shard(
    root: Path, rec: dict, shape: tuple, bounds: np.ndarray, size: int, n_split: int
) -> list[str]:
    name = rec["file"]
    path = root / name
    if not path.is_file():
        return [f"{name}: missing"]
    out: list[str] = []
    nbytes = path.stat().st_size
    if nbytes != rec["bytes"]:
        out.append(f"{name}: {nbytes} bytes, manifest says {rec['bytes']} (truncated or altered)")
    if sha256_file(path) != rec["sha256"]:
        out.append(f"{name}: sha256 does not match the manifest")
    want_count = min(size, n_split - rec["start"])
    if rec["start"] != rec["index"] * size or rec["count"] != want_count:
        out.append(f"{name}: start {rec['start']} / count {rec['count']} disagree with the shard layout")
    n = rec["count"]
    try:
        with h5py.File(path, "r") as f:
            spec = {
                "images": ((n, *shape), np.int16),
                "labels": ((n, len(bounds)), np.float64),
                "seeds": ((n,), np.int64),
                "energies": ((n,), np.float64),
            }
            for key, (shp, dt) in spec.items():
                if key not in f:
                    out.append(f"{name}: dataset {key!r} missing")
                    continue
                ds = f[key]
                if ds.shape != shp or ds.dtype != dt:
                    out.append(f"{name}: {key} is {ds.dtype}{ds.shape}, expected {np.dtype(dt)}{shp}")
            if out:
                return out
            labels = f["labels"][:]
            bad = (
                ~np.isfinite(labels).all(1) | (labels < bounds[:, 0]).any(1) | (labels > bounds[:, 1]).any(1)
            )
            if bad.any():
                out.append(
                    f"{name}: {int(bad.sum())} labels outside the manifest's label_bounds or not finite"
                )
            seeds = f["seeds"][:]
            if not np.array_equal(seeds, np.arange(rec["seed_lo"], rec["seed_lo"] + n, dtype=np.int64)):
                out.append(f"{name}: seeds differ from the recorded range {rec['seed_lo']}..{rec['seed_hi']}")
            if not np.isfinite(f["energies"][:]).all():
                out.append(f"{name}: non-finite energies")
            f["images"][:]  # decompress every chunk: fletcher32 catches flipped bits
    except (OSError, KeyError, ValueError) as exc:
        out.append(f"{name}: unreadable HDF5 ({str(exc).splitlines()[0]})")
    return out
