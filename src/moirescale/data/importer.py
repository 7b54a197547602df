"""``moirescale data import``: a store made from images and labels that moirescale did not simulate.

A source is a folder of images (PNG, TIFF, ``.npy``; all of one shape) named by the ``file`` column of a
labels CSV, or one ``.npz``/``.h5``/``.npy`` file holding ``images`` (N, [C,] H, W) with labels from the
CSV (row order) or from 1-D arrays of length N in the same file. Every numeric column other than ``file`` is
a label, whatever its name. The store has the simulated store's guarantees (docs/data.md): the same shard
writer, an atomically rewritten manifest, checksums, ``data verify``, a resumable write (a rerun of the same
command finishes a killed one, byte for byte) and disjoint seeded splits.

Pixels are stored the store's way, as int16 codes of values in [-1, 1], through one affine map recorded in
the manifest (``pixel_map``, :func:`apply_pixel_map`): uint8 and uint16 images by their type's full range
(``fixed``), any other type by the min and max over the whole dataset (``minmax``). ``predict`` maps a new
image with the same record.

Every refusal (a missing or extra file, shapes that differ, a NaN or non-numeric label, a duplicate file
name, an empty source, a constant label column, an ``--out`` that holds something else) is one
:class:`UserError` raised before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moirescale.data.store import (
    FORMAT,
    FORMAT_VERSION,
    IMAGE_DTYPE,
    IMAGE_SCALE,
    MANIFEST,
    SPLITS,
    canonical_json,
    write_manifest,
    write_shard,
)
from moirescale.errors import UserError
from moirescale.fsio import remove_stale_temps

IMPORTER_VERSION = 1
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy")
ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5", ".npy")
DEFAULT_SHARD_SIZE = 1024
MAX_IMPORT_BYTES = 8 << 30  # the decoded dataset is held in memory as float64 while it is checked
# Label names end up in result columns, figure titles and file names: a plain identifier.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
RESERVED = ("all", "file")
FIXED_RANGES = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0)}


@dataclass
class Source:
    """What was read: images (N, C, H, W) in their own dtype, labels (N, k) float64 named ``names``."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    description: dict[str, Any]


# --------------------------------------------------------------------------------------------- the labels CSV
def read_labels_csv(path: Path, need_file: bool) -> tuple[list[str] | None, np.ndarray, list[str]]:
    """The ``file`` column (or None), the label columns (N, k) float64 and their names, all checked."""
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"--labels {path} cannot be read as CSV: {exc}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"--labels {path} is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise UserError(f"--labels {path} has a header but no rows")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise UserError(f"--labels {path}: column {dup!r} appears twice")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise UserError(f"--labels {path} line {i}: {len(r)} fields, the header has {len(header)}")
    files = None
    if "file" in header:
        j = header.index("file")
        files = [r[j].strip() for r in body]
    elif need_file:
        raise UserError(f"--labels {path} has no 'file' column naming the image of each row")
    names = [h for h in header if h != "file"]
    if not names:
        raise UserError(f"--labels {path} has no label column (every column but 'file' is a label)")
    values = np.empty((len(body), len(names)), dtype=np.float64)
    for k, name in enumerate(names):
        j = header.index(name)
        for i, r in enumerate(body):
            cell = r[j].strip()
            try:
                values[i, k] = float(cell)
            except ValueError:
                raise UserError(
                    f"--labels {path} line {i + 2}, column {name!r}: {cell!r} is not a number"
                ) from None
    return files, values, names


def check_labels(values: np.ndarray, names: list[str], where: str) -> None:
    """Label names usable everywhere, values finite, no column constant."""
    for name in names:
        if not NAME.match(name) or name in RESERVED:
            raise UserError(
                f"{where}: label name {name!r} must be a plain identifier (letters, digits, _ . -; "
                f"not {' or '.join(RESERVED)})"
            )
    bad = ~np.isfinite(values)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise UserError(f"{where}: label {names[k]!r} of row {i + 1} is {values[i, k]} (NaN or infinite)")
    for k, name in enumerate(names):
        if values[:, k].min() == values[:, k].max():
            raise UserError(
                f"{where}: label {name!r} is constant ({values[0, k]:g}); nothing to learn: drop the column"
            )


# ----------------------------------------------------------------------------------------------- the images
def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            a = np.array(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UserError(f"image {path} cannot be read: {exc}") from None
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)  # (C, H, W)


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"array {path} cannot be read: {exc}") from None
    if a.ndim not in (2, 3):
        raise UserError(f"array {path} has shape {a.shape}; an image is (H, W) or (C, H, W)")
    return a[None] if a.ndim == 2 else a


def read_folder(src: Path, labels_csv: Path) -> Source:
    """Images of a folder named by the CSV's ``file`` column, in CSV row order."""
    files, values, names = read_labels_csv(labels_csv, need_file=True)
    assert files is not None
    seen: set[str] = set()
    for f in files:
        if f in seen:
            raise UserError(f"--labels {labels_csv}: file {f!r} is named twice")
        if not f or "/" in f or "\\" in f or f in (".", ".."):
            raise UserError(f"--labels {labels_csv}: file {f!r} must be a plain file name inside {src}")
        seen.add(f)
    csv_self = labels_csv.resolve()
    on_disk = sorted(
        p.name for p in src.iterdir()
        if not p.name.startswith(".") and p.is_file() and p.resolve() != csv_self
    )
    if not on_disk:
        raise UserError(f"{src} is empty: no image files")
    missing = sorted(seen - set(on_disk))
    if missing:
        raise UserError(
            f"{src}: {len(missing)} file(s) named in {labels_csv.name} are missing, e.g. {missing[0]!r}"
        )
    extra = sorted(set(on_disk) - seen)
    if extra:
        raise UserError(f"{src}: {len(extra)} file(s) not named in {labels_csv.name}, e.g. {extra[0]!r}")
    for f in files:
        if Path(f).suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{src / f}: not an image this command reads ({', '.join(IMAGE_SUFFIXES)})")
    images, shape, dtype = [], None, None
    for f in files:
        p = src / f
        a = _read_npy(p) if p.suffix.lower() == ".npy" else _read_picture(p)
        if shape is None:
            shape, first = a.shape, f
        elif a.shape != shape:
            raise UserError(
                f"images differ in shape: {first} is {_shape_text(shape)}, {f} is {_shape_text(a.shape)}"
            )
        dtype = a.dtype if dtype is None or dtype == a.dtype else np.dtype(np.float64)
        images.append(a)
    stacked = np.stack(images).astype(dtype, copy=False)
    return Source(stacked, values, names, {"kind": "folder", "files": len(files)})


def _shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(v) for v in shape) + " (C x H x W)"


def read_array_file(src: Path, labels_csv: Path | None) -> Source:
    """``images`` (N, [C,] H, W) of one .npz/.h5/.npy file; labels from the CSV or the file's other arrays."""
    suffix = src.suffix.lower()
    arrays: dict[str, np.ndarray] = {}
    try:
        if suffix == ".npy":
            arrays["images"] = np.load(src, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(src, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        else:
            import h5py

            with h5py.File(src, "r") as f:
                arrays = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
    except (OSError, ValueError) as exc:
        raise UserError(f"{src} cannot be read: {str(exc).splitlines()[0]}") from None
    if "images" not in arrays:
        raise UserError(f"{src} holds no 'images' array (it holds {', '.join(sorted(arrays)) or 'nothing'})")
    images = np.asarray(arrays.pop("images"))
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise UserError(
            f"{src}: images have shape {images.shape}; expected (N, H, W) or (N, C, H, W), N >= 1"
        )
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise UserError(f"{src}: images are {images.dtype}, not numbers")
    images = images[:, None] if images.ndim == 3 else images
    n = len(images)
    if labels_csv is not None:
        _files, values, names = read_labels_csv(labels_csv, need_file=False)
        if len(values) != n:
            raise UserError(f"--labels {labels_csv} has {len(values)} rows, {src} holds {n} images")
    else:
        names = sorted(k for k, v in arrays.items() if v.shape == (n,) and np.issubdtype(v.dtype, np.number))
        if not names:
            raise UserError(f"{src} holds no label arrays of shape ({n},); give --labels LABELS.csv")
        values = np.column_stack([arrays[k].astype(np.float64) for k in names])
    return Source(images, values, names, {"kind": "file", "format": suffix.lstrip(".")})


def read_source(src: str | Path, labels_csv: str | Path | None) -> Source:
    """Read and check a whole source (:class:`Source`); UserError for anything a store cannot hold."""
    src = Path(src)
    labels_path = None if labels_csv is None else Path(labels_csv)
    if src.is_dir():
        if labels_path is None:
            raise UserError(f"{src} is a folder: --labels LABELS.csv must name its images (a 'file' column)")
        source = read_folder(src, labels_path)
    elif src.is_file():
        if src.suffix.lower() not in ARRAY_SUFFIXES:
            raise UserError(f"{src}: a source is a folder of images or one {', '.join(ARRAY_SUFFIXES)} file")
        source = read_array_file(src, labels_path)
    else:
        raise UserError(f"{src}: no such folder or file")
    where = str(labels_path or src)
    check_labels(source.labels, source.names, where)
    if len(set(source.names)) != len(source.names):
        raise UserError(f"{where}: label names repeat")
    if source.images.size * 8 > MAX_IMPORT_BYTES:
        raise UserError(
            f"{src}: {source.images.nbytes / 2**30:.1f} GiB of images is above this command's limit"
        )
    if not np.isfinite(source.images).all():
        raise UserError(f"{src}: some pixel values are NaN or infinite")
    return source


# ------------------------------------------------------------------------------------------- the pixel map
def pixel_map_of(images: np.ndarray) -> dict[str, Any]:
    """How pixels go into [-1, 1]: a uint8/uint16 type's full range, else the dataset's min and max."""
    dtype = str(images.dtype)
    if dtype in FIXED_RANGES:
        lo, hi = FIXED_RANGES[dtype]
        return {"kind": "fixed", "source_dtype": dtype, "lo": lo, "hi": hi}
    lo, hi = float(images.min()), float(images.max())
    if not hi > lo:
        raise UserError(f"every pixel of every image is {lo:g}: nothing to learn from")
    return {"kind": "minmax", "source_dtype": dtype, "lo": lo, "hi": hi}


def apply_pixel_map(x: np.ndarray, pixel_map: dict[str, Any]) -> np.ndarray:
    """``x`` in the user's pixel values -> float32 in [-1, 1] (clipped), as the store's images were made."""
    lo, hi = float(pixel_map["lo"]), float(pixel_map["hi"])
    y = 2.0 * (np.asarray(x, dtype=np.float64) - lo) / (hi - lo) - 1.0
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------- splits
def parse_count(text: str | None, option: str, default: float) -> float:
    """``--val``/``--test``: a count (an integer >= 0) or a fraction in (0, 1)."""
    if text is None:
        return default
    bad = f"{option} must be a count (an integer) or a fraction in (0, 1), got {text!r}"
    try:
        v = float(text)
    except ValueError:
        raise UserError(bad) from None
    if not math.isfinite(v) or v < 0 or (v >= 1 and v != int(v)) or (v == 1 and "." in str(text)):
        raise UserError(bad)
    return v


def split_sizes(n: int, val: float, test: float) -> dict[str, int]:
    """Samples per split for ``n`` samples; ``val``/``test`` are counts (>= 1) or fractions (< 1)."""
    def count(v: float) -> int:
        return int(v) if v >= 1 or v == 0 else max(1, int(round(v * n)))

    n_val, n_test = count(val), count(test)
    if n - n_val - n_test < 1:
        raise UserError(
            f"{n} samples leave none to train on after {n_val} validation and {n_test} test samples"
        )
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def split_rows(n: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint source rows of each split: a seeded permutation cut in test, val, train (each sorted)."""
    perm = np.random.default_rng(int(seed)).permutation(n)
    test, val = perm[: sizes["test"]], perm[sizes["test"] : sizes["test"] + sizes["val"]]
    train = perm[sizes["test"] + sizes["val"] :]
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


# ---------------------------------------------------------------------------------------------------- store
def _data_hash(source: Source) -> str:
    h = hashlib.sha256()
    h.update(str(source.images.dtype).encode() + repr(source.images.shape).encode())
    h.update(np.ascontiguousarray(source.images).tobytes())
    h.update(np.ascontiguousarray(source.labels).tobytes())
    h.update("\0".join(source.names).encode())
    return h.hexdigest()


def _channels(c: int) -> list[str]:
    return ["gray"] if c == 1 else [f"c{i}" for i in range(c)]


def import_manifest(source: Source, sizes: dict[str, int], seed: int, shard_size: int,
                    src: Path, labels_csv: Path | None) -> dict[str, Any]:
    """The manifest of an imported store before any shard is written."""
    pm = pixel_map_of(source.images)
    config = {
        "importer_version": IMPORTER_VERSION,
        "data_sha256": _data_hash(source),
        "splits": dict(sizes),
        "seed": int(seed),
        "shard_size": int(shard_size),
        "pixel_map": pm,
        "label_names": list(source.names),
    }
    lo, hi = source.labels.min(0), source.labels.max(0)
    offsets = {"train": 0, "val": sizes["train"], "test": sizes["train"] + sizes["val"]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generator_version": f"import-{IMPORTER_VERSION}",
        "source": {**source.description, "path": str(src.resolve()),
                   "labels": None if labels_csv is None else str(labels_csv.resolve())},
        "config": config,
        "config_hash": hashlib.sha256(canonical_json(config).encode()).hexdigest(),
        "label_names": list(source.names),
        "label_units": ["" for _ in source.names],
        "label_ranges": {k: [float(a), float(b)] for k, a, b in zip(source.names, lo, hi, strict=True)},
        "label_bounds": {k: [float(a), float(b)] for k, a, b in zip(source.names, lo, hi, strict=True)},
        "pixel_map": pm,
        "image_shape": [int(v) for v in source.images.shape[1:]],
        "image_channels": _channels(int(source.images.shape[1])),
        "image_dtype": IMAGE_DTYPE,
        "image_scale": IMAGE_SCALE,
        "shard_size": int(shard_size),
        "n_shards": sum(-(-sizes[s] // shard_size) for s in SPLITS),
        "splits": {s: {"n": sizes[s], "seed_lo": offsets[s], "seed_hi": offsets[s] + sizes[s] - 1}
                   for s in SPLITS},
        "shards": [],
        "complete": False,
    }


def plan(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every shard of an imported store: its split's rows ``start .. start+count``; seeds number the
    samples of the store (train, then val, then test)."""
    size = int(manifest["shard_size"])
    out = []
    for s in SPLITS:
        n, lo = manifest["splits"][s]["n"], manifest["splits"][s]["seed_lo"]
        for index, start in enumerate(range(0, n, size)):
            count = min(size, n - start)
            out.append({"file": f"{s}-{index:05d}.h5", "split": s, "index": index, "start": start,
                        "count": count, "seed_lo": lo + start, "seed_hi": lo + start + count - 1})
    return out


def import_store(
    src: str | Path,
    labels_csv: str | Path | None,
    out: str | Path,
    *,
    val: str | None = None,
    test: str | None = None,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Path:
    """Make (or finish) the store ``out`` from a source; return its path. Everything is read and checked
    before ``out`` is touched; a rerun of the same import resumes a killed one."""
    from moirescale.data.generate import _locked, _open_or_create, _prepare_dir, _record, _shard_on_disk

    if not 1 <= int(shard_size) <= 1 << 20:
        raise UserError(f"--shard-size must be between 1 and {1 << 20}, got {shard_size}")
    if not 0 <= int(seed) < 2**63:
        raise UserError(f"--seed must be in [0, 2^63), got {seed}")
    v, t = parse_count(val, "--val", 0.1), parse_count(test, "--test", 0.1)
    src, out = Path(src), Path(out)
    source = read_source(src, labels_csv)
    sizes = split_sizes(len(source.images), v, t)
    labels_path = None if labels_csv is None else Path(labels_csv)
    fresh = import_manifest(source, sizes, seed, int(shard_size), src, labels_path)
    rows = split_rows(len(source.images), sizes, seed)
    _prepare_dir(out)
    with _locked(out):
        m = _open_or_create(out, fresh)
        records = plan(m)
        remove_stale_temps(out, {MANIFEST, *(r["file"] for r in records)}.__contains__, older_than_s=0.0)
        listed = {r["file"]: r for r in m["shards"]}
        pm = m["pixel_map"]
        for rec in records:
            done = _shard_on_disk(out, rec, listed.get(rec["file"]))
            if done is not None:
                if rec["file"] not in listed:
                    _record(m, done, out)
                continue
            sel = rows[rec["split"]][rec["start"] : rec["start"] + rec["count"]]
            arrays = {
                "images": apply_pixel_map(source.images[sel], pm),
                "labels": source.labels[sel],
                "seeds": np.arange(rec["seed_lo"], rec["seed_hi"] + 1, dtype=np.int64),
                "energies": np.zeros(len(sel)),  # no simulator, no energy
            }
            attrs = {"split": rec["split"], "index": rec["index"], "start": rec["start"]}
            try:
                written = write_shard(out / rec["file"], **arrays, attrs=attrs)
            except OSError as exc:
                raise UserError(f"cannot write {out / rec['file']}: {exc.strerror or exc}") from None
            _record(m, {**rec, **written, "_shape": list(arrays["images"].shape[1:])}, out)
        if not m["complete"]:
            m["complete"] = True
            write_manifest(out, m)
    return out
