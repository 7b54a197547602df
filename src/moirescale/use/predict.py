"""Predict the labels of one image with the trained networks of a run directory (theta, J, D when the
networks were trained on a simulated store; an imported store's own labels otherwise).

Pipeline: read the image (``.npy``, ``.png``/other picture, or a store sample ``STORE_DIR::split:index``)
-> check it is a valid magnetisation map in [-1, 1] -> resample it to the training grid (the training pixel
size from the store manifest; the input's from ``--nm-per-px``) -> crop/pad to the training field of view
-> run the best grid point of each target as an ensemble of its realizations -> unscale to physical units.

Reading pictures (the paper's Fig. 2 colouring: red = +1, blue = -1):

- grey scale (PIL modes 1, L, I, I;16, F, or RGB with R = G = B): linear, black -> -1, white -> +1;
- colour (RGB/RGBA/P): v = (R - B) / 255 (alpha ignored). This is the exact inverse of matplotlib's "bwr"
  map (blue -> white -> red) and monotone for other red-blue diverging maps (RdBu_r, seismic, coolwarm).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moirescale import rundir as rd
from moirescale.errors import UserError
from moirescale.labels import LABELS, UNITS, LabelScaler, target_index
from moirescale.limits import MAX_INPUT_PIXELS, check_input_pixels, check_resampled_pixels
from moirescale.models import model_label
from moirescale.readback import dumps_strict

RANGE_TOL = 1e-3  # values may exceed [-1, 1] by this much (float round-off) and are clipped
STORE_SEP = "::"  # STORE_DIR::split:index
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"}


# ----------------------------------------------------------------------------------------------------
# Reading an image


@dataclass
class InputImage:
    """An image to predict on: (C, H, W) float32 in [-1, 1], its pixel size (None = unknown) and, for a store
    sample, its true physical labels."""

    image: np.ndarray
    nm_per_px: float | None = None
    truth: np.ndarray | None = None  # (k,) physical labels of a store sample (theta_eff, J, D when simulated)
    source: str = ""
    notes: list[str] = field(default_factory=list)
    channels: list[str] | None = None  # channel names, known for a store sample (else: the network's order)


def parse_store_ref(ref: str) -> tuple[str, str, int] | None:
    """``STORE_DIR::split:index`` -> (store_dir, split, index); None if ``ref`` is not in that syntax."""
    if STORE_SEP not in ref:
        return None
    store_dir, _, rest = ref.rpartition(STORE_SEP)
    split, colon, index = rest.partition(":")
    if not colon or not store_dir:
        raise UserError(f"store sample {ref!r}: write STORE_DIR::split:index, e.g. data/demo::test:0")
    if split not in ("train", "val", "test"):
        raise UserError(f"store sample {ref!r}: split must be train, val or test, got {split!r}")
    try:
        i = int(index)
    except ValueError:
        raise UserError(f"store sample {ref!r}: index must be an integer, got {index!r}") from None
    if i < 0:
        raise UserError(f"store sample {ref!r}: index must be >= 0")
    return store_dir, split, i


def store_nm_per_px(manifest: dict[str, Any]) -> float:
    """Pixel size (nm) of a store's images: fov_nm / size_px of the image spec recorded in its manifest."""
    # The spec sits under "image" (or inside the generating config): take the first dict holding both keys.
    todo: list[Any] = [manifest]
    while todo:
        d = todo.pop(0)
        if isinstance(d, dict):
            if "fov_nm" in d and "size_px" in d:
                size = d["size_px"]
                size = size[-1] if isinstance(size, list | tuple) else size
                return float(d["fov_nm"]) / float(size)
            todo.extend(v for v in d.values() if isinstance(v, dict))
    raise UserError("the store manifest records no image spec (fov_nm, size_px); pass --nm-per-px explicitly")


def read_store_sample(ref: str) -> InputImage:
    """A sample of a dataset store, with its true labels and the store's pixel size."""
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import store_channels

    parsed = parse_store_ref(ref)
    assert parsed is not None
    store_dir, split, index = parsed
    store = open_store(store_dir)
    n = store.split_len(split)
    if index >= n:
        raise UserError(f"store sample {ref!r}: index {index} is out of range ({split} has {n} samples)")
    images, labels = store.read(split, [index])
    return InputImage(
        image=np.asarray(images[0], dtype=np.float32),
        nm_per_px=None if "pixel_map" in store.manifest else store_nm_per_px(store.manifest),
        truth=np.asarray(labels[0], dtype=np.float64),
        source=ref,
        channels=store_channels(store),
    )


def _picture_to_array(path: Path) -> np.ndarray:
    """A picture file -> (1, H, W) float32 in [-1, 1] (see the module docstring for the colour rules)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{path}: the picture is larger than the limit of {MAX_INPUT_PIXELS // 2**20} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the picture ({exc})") from None
    try:
        check_input_pixels(im.height, im.width, str(path))  # before decoding: the header's size is enough
    except UserError:
        im.close()
        raise
    try:
        with im:
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA")
                mode = "RGBA"
            if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
                if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
                    return (rgb[None, ..., 0] / 127.5 - 1.0).astype(np.float32)
                return ((rgb[..., 0] - rgb[..., 2]) / 255.0)[None].astype(np.float32)
            if mode in ("LA", "La"):
                im = im.getchannel(0)
                mode = "L"
            if mode == "1":
                return (np.asarray(im, dtype=np.float32) * 2.0 - 1.0)[None]
            if mode == "L":
                return (np.asarray(im, dtype=np.float32) / 127.5 - 1.0)[None]
            if mode.startswith("I;16") or mode == "I":
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
                return (a / top * 2.0 - 1.0).astype(np.float32)[None]
            if mode == "F":  # a float picture (e.g. TIFF): values taken as they are
                return np.asarray(im, dtype=np.float32)[None]
            raise UserError(f"{path}: unsupported picture mode {mode!r}; save it as grey scale or RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the picture ({exc})") from None


def _npy_to_array(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False, mmap_mode="r")  # the header first: nothing read yet
        if isinstance(a, np.ndarray):
            check_input_pixels(int(np.prod(a.shape[:-1], dtype=np.int64)), a.shape[-1] if a.ndim else 1,
                               str(path))
            a = np.array(a)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the .npy file ({str(exc).splitlines()[0]})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise UserError(f"{path}: expected a numeric array, got dtype {getattr(a, 'dtype', type(a))}")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[0] in (1, 2):
        pass
    else:
        raise UserError(
            f"{path}: expected shape (H, W) for the top layer or (C, H, W) with C = 1 or 2, got {a.shape}"
        )
    return a.astype(np.float32)


def validate_image(a: np.ndarray, source: str) -> np.ndarray:
    """Check a (C, H, W) array is a magnetisation map: finite, in [-1, 1] (up to RANGE_TOL), >= 8 x 8."""
    if a.ndim != 3 or a.shape[0] not in (1, 2):
        raise UserError(f"{source}: expected shape (H, W) or (C, H, W) with C = 1 or 2, got {a.shape}")
    if min(a.shape[1:]) < 8:
        raise UserError(f"{source}: image of {a.shape[1]} x {a.shape[2]} px is too small (need >= 8 x 8)")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{source}: the image has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1 - RANGE_TOL or hi > 1 + RANGE_TOL:
        raise UserError(
            f"{source}: values must lie in [-1, 1] (out-of-plane magnetisation), found [{lo:.4g}, {hi:.4g}]; "
            "rescale the image first"
        )
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def read_image(ref: str | os.PathLike[str], nm_per_px: float | None = None) -> InputImage:
    """Read an image given as a ``.npy`` path, a picture path or a store sample ``STORE_DIR::split:index``.

    Parameters
    ----------
    ref : what to read
    nm_per_px : the input's pixel size in nm; overrides the store's for a store sample
    """
    ref = str(ref)
    if nm_per_px is not None and not (math.isfinite(nm_per_px) and nm_per_px > 0):
        raise UserError(f"--nm-per-px must be a positive number, got {nm_per_px}")
    if parse_store_ref(ref) is not None:
        inp = read_store_sample(ref)
        if nm_per_px is not None:
            inp.nm_per_px = nm_per_px
        inp.image = validate_image(inp.image, ref)
        return inp
    path = Path(ref)
    if not path.is_file():
        raise UserError(f"{ref}: no such file (give a .npy, a picture such as .png or STORE::split:index)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        a = _npy_to_array(path)
    elif suffix in PICTURE_SUFFIXES:
        a = _picture_to_array(path)
    else:
        raise UserError(f"{ref}: unknown image type {suffix!r}; give a .npy or a picture (.png, .jpg, .tif)")
    return InputImage(image=validate_image(a, ref), nm_per_px=nm_per_px, source=ref)


# ----------------------------------------------------------------------------------------------------
# Resampling to the training grid


def _resize_channel(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    # BOX (area average) when shrinking mirrors the simulator's supersampled pixels and avoids aliasing the
    # moire pattern; bilinear when enlarging.
    shrink = shape[0] < a.shape[0] or shape[1] < a.shape[1]
    flt = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    out = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize((shape[1], shape[0]), flt)
    return np.asarray(out, dtype=np.float32)


def _crop_or_pad(a: np.ndarray, size: int, axis: int) -> tuple[np.ndarray, bool]:
    n = a.shape[axis]
    if n >= size:
        start = (n - size) // 2  # the centre of a larger picture
        return np.take(a, np.arange(start, start + size), axis=axis), False
    before = (size - n) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (before, size - n - before)
    # Mirror padding keeps the local domain pattern (its period) continuous at the border; zeros would be a
    # "no magnetisation" band that the networks never saw.
    return np.pad(a, pad, mode="symmetric"), True


def to_training_grid(
    inp: InputImage, shape: tuple[int, int], train_nm_per_px: float
) -> tuple[np.ndarray, list[str]]:
    """Resample ``inp.image`` to the training pixel size and crop/pad it to the training field of view.

    Without a known input pixel size the image is assumed to span the training field of view (it is resized
    to ``shape``): say so in the notes, because a wrong scale shifts the predicted twist angle.

    Returns the (C, H, W) image and notes for the user.
    """
    img = inp.image
    h, w = shape
    notes: list[str] = []
    if inp.nm_per_px is None:
        factor_h, factor_w = h / img.shape[1], w / img.shape[2]
        notes.append(
            f"no --nm-per-px: assumed the image spans the training field of view "
            f"({h * train_nm_per_px:.4g} x {w * train_nm_per_px:.4g} nm)"
        )
    else:
        factor_h = factor_w = inp.nm_per_px / train_nm_per_px
    new = (max(1, round(img.shape[1] * factor_h)), max(1, round(img.shape[2] * factor_w)))
    check_resampled_pixels(*new, inp.source or "the image")
    if min(new) < 8:
        raise UserError(
            f"{inp.source or 'the image'}: at {inp.nm_per_px} nm/px it covers only {new[0]} x {new[1]} "
            "training pixels (need >= 8 x 8); check --nm-per-px"
        )
    if new != img.shape[1:]:
        img = np.stack([_resize_channel(c, new) for c in img])
    img, padded_h = _crop_or_pad(img, h, 1)
    img, padded_w = _crop_or_pad(img, w, 2)
    if padded_h or padded_w:
        notes.append("the image covers less than the training field of view; mirror-padded to fill it")
    return np.clip(img, -1.0, 1.0).astype(np.float32), notes


# ----------------------------------------------------------------------------------------------------
# Choosing the models


def rank_groups(
    df: pd.DataFrame,
    rundir: str | os.PathLike[str],
    arch: str | None = None,
    width: int | None = None,
    n_layers: int | None = None,
    n_train: int | None = None,
) -> pd.DataFrame:
    """Grid points (one row each) with usable checkpoints, ranked per target by geometric-mean val MSE.

    Columns: group key, target, val_gmean, n_members, run_ids, checkpoints (absolute paths).
    """
    from moirescale.results import checkpointed_rows, point_key
    from moirescale.stats import geomean

    if df.empty:
        raise UserError(f"{rundir}: no trained networks (no results.parquet rows); run a sweep first")
    d = checkpointed_rows(df, rundir, arch=arch, width=width, n_layers=n_layers, n_train=n_train)
    rows = []
    for _, g in d.groupby(point_key(d), dropna=False, sort=False):
        first = g.iloc[0]
        rows.append({
            "arch": first["arch"], "width": first["width"], "n_layers": first["n_layers"],
            "target": first["target"], "n_train": int(first["n_train"]),
            "val_gmean": geomean(g["val_mse"], empty=math.inf), "n_members": len(g),
            "run_ids": list(g["run_id"]), "checkpoints": list(g["abs_ckpt"]),
        })
    ranked = pd.DataFrame(rows).sort_values(["target", "val_gmean"], kind="stable").reset_index(drop=True)
    return ranked


def choose_models(
    ranked: pd.DataFrame, top: int = 1, names: tuple[str, ...] = LABELS
) -> dict[str, pd.DataFrame]:
    """Per label of ``names``: the ``top`` best grid points trained on that label alone, or else on 'all'."""
    out: dict[str, pd.DataFrame] = {}
    for label in names:
        cand = ranked[ranked["target"] == label]
        if cand.empty:
            cand = ranked[ranked["target"] == "all"]
        if not cand.empty:
            out[label] = cand.head(top)
    if not out:
        raise UserError(f"no trained network predicts {', '.join(names)}")
    return out


# ----------------------------------------------------------------------------------------------------
# Running the ensembles


def _channels_for(
    image: np.ndarray, meta: dict[str, Any], source: str, names: list[str] | None = None
) -> np.ndarray:
    """The input channels a network was trained on. A store sample (``names`` known) is selected by the
    channel names the network was trained on; a user's image is taken to hold them first, in that order."""
    if names is not None:
        from moirescale.data.torch_data import channel_positions

        return image[channel_positions(names, str(meta.get("channels", "top")))]
    in_shape = tuple(meta.get("in_shape") or ())
    want = in_shape[0] if len(in_shape) == 3 else (1 if meta.get("channels", "top") == "top" else 2)
    if want == 1:
        return image[:1]
    if image.shape[0] < want:
        raise UserError(
            f"{source}: the networks were trained on both layers (2 channels); give a (2, H, W) .npy"
        )
    return image[:want]


def _load(path: str, cache: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if path not in cache:
        from moirescale.train import load_checkpoint

        model, meta = load_checkpoint(path)
        model.eval()
        check_checkpoint(path, model, meta)
        cache[path] = (model, meta)
    return cache[path]


def check_checkpoint(path: str, model: Any, meta: Any) -> None:
    """Refuse a checkpoint whose metadata is impossible or whose weights are not finite (issue 29)."""
    import torch

    shape = meta.get("in_shape") if isinstance(meta, dict) else None
    n_out = meta.get("n_outputs") if isinstance(meta, dict) else None
    if not (isinstance(shape, list | tuple) and len(shape) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1 << 16 for v in shape)):
        raise UserError(f"checkpoint {path}: its metadata gives no valid input shape (C, H, W): {shape!r}")
    k = len(meta.get("label_names") or LABELS) if isinstance(meta, dict) else 3
    if not (isinstance(n_out, int) and n_out in (1, k)):
        raise UserError(f"checkpoint {path}: its metadata gives {n_out!r} outputs (a network has 1 or {k})")
    with torch.no_grad():
        weights = [t for t in model.state_dict().values() if t.is_floating_point()]
        if not all(bool(torch.isfinite(t).all()) for t in weights):
            raise UserError(f"checkpoint {path}: its weights are not all finite; retrain or remove it")


def predict_group(image: np.ndarray, checkpoints: list[str], target: str, source: str,
                  cache: dict[str, Any], names: list[str] | None = None) -> np.ndarray:
    """Physical values (n_members, n_outputs) of one grid point's realizations on one (C, H, W) image: each
    network's output un-scaled by the label ranges saved in its checkpoint (its dataset's own)."""
    import torch

    outs = []
    for path in checkpoints:
        model, meta = _load(path, cache)
        label_names = meta.get("label_names")
        cols = target_index(target, label_names or LABELS)
        x = _channels_for(image, meta, source, names)
        in_shape = tuple(meta.get("in_shape") or x.shape)
        if tuple(x.shape[-2:]) != tuple(in_shape[-2:]):
            raise UserError(f"{source}: resampled image {x.shape} does not fit the network input {in_shape}")
        dev = next(iter(model.parameters())).device
        with torch.no_grad():
            y = model(torch.from_numpy(np.ascontiguousarray(x))[None].to(dev)).float().cpu().numpy()
        if y.size != len(cols):
            raise UserError(
                f"checkpoint {path}: the network gives {y.size} outputs, but its target {target} needs "
                f"{len(cols)}; the checkpoint does not belong to this results row"
            )
        if not np.isfinite(y).all():
            raise UserError(f"checkpoint {path}: the network's output on {source} is not finite")
        scaler = LabelScaler.from_dict(meta.get("label_ranges"), label_names)
        outs.append(scaler.unscale(y.reshape(-1), cols))
    return np.stack(outs)


def training_grid(checkpoint: str, rundir: str | os.PathLike[str], store: str | None,
                  cache: dict[str, Any]) -> tuple[tuple[int, int], float]:
    """(H, W) and nm per px of the training images: from the checkpoint metadata, else the store manifest."""
    _, meta = _load(checkpoint, cache)
    in_shape = tuple(meta.get("in_shape") or ())
    nm = meta.get("nm_per_px")
    if nm is None and isinstance(meta.get("image"), dict):
        try:
            nm = store_nm_per_px({"image": meta["image"]})
        except UserError:
            nm = None
    if nm is None:
        # --store first, then where the network was trained (if still there), then what the run dir records.
        cands = [store, meta.get("store"), _store_from_rundir(rundir)]
        store_dir = next((c for c in cands if c and Path(c).is_dir()), None)
        if store_dir is None:
            raise UserError(f"{rundir}: cannot find the training dataset (pixel size); pass --store DIR")
        from moirescale.data.store import open_store

        s = open_store(store_dir)
        nm = store_nm_per_px(s.manifest)
        if len(in_shape) != 3:
            in_shape = tuple(s.image_shape)
    if len(in_shape) != 3:
        raise UserError(f"{checkpoint}: checkpoint metadata lacks the input shape")
    return (int(in_shape[1]), int(in_shape[2])), float(nm)


def _store_from_rundir(rundir: str | os.PathLike[str]) -> str | None:
    """The dataset a sweep used, from ``RUNDIR/dataset.json`` (written by ``moirescale sweep``)."""
    return rd.dataset_store(rundir)


def find_store(
    rundir: str | os.PathLike[str], store: str | None = None, meta: dict[str, Any] | None = None
) -> str:
    """The training dataset of a run directory: ``store`` if given, else what the run directory records (a
    sweep's ``dataset.json``), else the store its first checkpoint was trained on (a ``moirescale train``
    run's), if it is still there. ``meta``: a checkpoint's metadata the caller already loaded (read instead
    of loading the first checkpoint again)."""
    if store:
        from moirescale.data.store import read_manifest

        read_manifest(store)  # a --store that is not a dataset store is refused here, not deep inside
        return store
    found = _store_from_rundir(rundir) or _trained_store(rundir, meta)
    if found is None:
        raise UserError(f"{rundir}: the run directory does not name its dataset; pass --store DATASET_DIR")
    return found


def _trained_store(rundir: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> str | None:
    """The store a run directory's first checkpoint (or ``meta``) records (None: no checkpoint, or the store
    is gone)."""
    recorded = (meta if meta is not None else _first_meta(rundir, {}) or {}).get("store")
    return str(recorded) if isinstance(recorded, str) and Path(recorded).is_dir() else None


def _first_meta(rundir: str | os.PathLike[str], cache: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of a run directory's first usable checkpoint, or None (nothing readable yet)."""
    from moirescale.results import checkpointed_rows, read_results

    try:
        d = checkpointed_rows(read_results(rundir), rundir)
        return _load(str(d.iloc[0]["abs_ckpt"]), cache)[1]
    except UserError:
        return None


def _imported_meta(rundir: Path, cache: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint metadata of a run directory trained on an imported store (it records the store's
    ``pixel_map`` and ``label_names``), or None (a simulated store, or nothing readable yet)."""
    meta = _first_meta(rundir, cache)
    return meta if meta and isinstance(meta.get("pixel_map"), dict) and meta.get("label_names") else None


def read_imported_image(ref: str | os.PathLike[str], meta: dict[str, Any]) -> InputImage:
    """An image for networks trained on an imported store: a sample of a store (already in [-1, 1]), or a
    picture / ``.npy`` in the user's pixel values, mapped the way the store's images were
    (:func:`moirescale.data.importer.apply_pixel_map` with the store's ``pixel_map``)."""
    from moirescale.data.importer import _read_npy, _read_picture, apply_pixel_map

    ref = str(ref)
    if parse_store_ref(ref) is not None:
        return read_store_sample(ref)
    path = Path(ref)
    if not path.is_file():
        raise UserError(f"{ref}: no such file (give a .npy, a picture such as .png or STORE::split:index)")
    suffix = path.suffix.lower()
    if suffix not in (".npy", *PICTURE_SUFFIXES):
        raise UserError(f"{ref}: unknown image type {suffix!r}; give a .npy or a picture (.png, .tif)")
    raw = _read_npy(path) if suffix == ".npy" else _read_picture(path)
    check_input_pixels(raw.shape[1], raw.shape[2], ref)
    if not np.isfinite(raw).all():
        raise UserError(f"{ref}: the image has NaN or infinite values")
    pm = meta["pixel_map"]
    return InputImage(image=apply_pixel_map(raw, pm), source=ref,
                      notes=[f"pixels mapped as the store's: [{pm['lo']:g}, {pm['hi']:g}] -> [-1, 1]"])


def to_imported_grid(inp: InputImage, meta: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The image at the networks' input size: channels as trained, resized when its H x W differ."""
    c, h, w = (int(v) for v in meta["in_shape"])
    img, notes = inp.image, []
    if inp.channels is None and img.shape[0] != c:
        raise UserError(f"{inp.source}: the image has {img.shape[0]} channel(s), the networks take {c}")
    if tuple(img.shape[1:]) != (h, w):
        check_resampled_pixels(h, w, inp.source)
        img = np.stack([_resize_channel(ch, (h, w)) for ch in img])
        notes.append(f"resized from {inp.image.shape[1]} x {inp.image.shape[2]} to the training {h} x {w} px")
    return np.clip(img, -1.0, 1.0).astype(np.float32), notes


@dataclass
class Prediction:
    label: str
    value: float  # physical units: ensemble mean
    std: float  # ensemble spread (std over realizations, physical units)
    unit: str
    rank: int
    arch: str
    width: int | None
    n_layers: int | None
    target: str
    n_train: int
    n_members: int
    val_mse: float
    members: list[float]
    truth: float | None = None


def predict(
    rundir: str | os.PathLike[str],
    image: str | os.PathLike[str],
    arch: str | None = None,
    width: int | None = None,
    n_layers: int | None = None,
    n_train: int | None = None,
    nm_per_px: float | None = None,
    store: str | None = None,
    top: int = 1,
) -> tuple[list[Prediction], InputImage]:
    """Predict (theta, J, D) of one image with the best trained grid points of a run directory.

    Parameters
    ----------
    rundir : a sweep's run directory (results.parquet + checkpoints/)
    image : ``.npy`` ((H, W) or (C, H, W)), a picture (``.png``...), or ``STORE_DIR::split:index``
    arch, width, n_layers, n_train : restrict the choice to one family / size / N_D
    nm_per_px : the input's pixel size in nm (None: a store sample's own, else "spans the field of view")
    store : the training dataset (only needed when the checkpoints do not record the pixel size)
    top : how many of the best grid points per label to report (rank 1 is the answer)

    Returns
    -------
    predictions (label-major, rank-minor) and the input as read (with notes)
    """
    from moirescale.results import read_results

    if top < 1:
        raise UserError(f"--top must be >= 1, got {top}")
    rundir = Path(rundir)
    if not rundir.is_dir():
        raise UserError(f"{rundir}: no such run directory")
    if store is not None:
        from moirescale.data.store import read_manifest

        read_manifest(store)  # --store that names no dataset store is an error, even when unneeded
    cache: dict[str, Any] = {}
    imported = _imported_meta(rundir, cache)  # a store of `data import`: its own labels and pixel map
    if imported is None:
        inp = read_image(image, nm_per_px)  # read before loading models: a bad image fails fast
    ranked = rank_groups(read_results(rundir), rundir, arch, width, n_layers, n_train)
    names = LABELS if imported is None else tuple(imported["label_names"])
    chosen = choose_models(ranked, top, names)
    first_ckpt = next(iter(chosen.values())).iloc[0]["checkpoints"][0]
    if imported is None:
        shape, train_nm = training_grid(first_ckpt, rundir, store, cache)
        x, notes = to_training_grid(inp, shape, train_nm)
    else:
        inp = read_imported_image(image, imported)
        x, notes = to_imported_grid(inp, imported)
    inp.notes.extend(notes)
    preds: list[Prediction] = []
    for label, groups in chosen.items():
        col = names.index(label)
        for rank, (_, g) in enumerate(groups.iterrows(), start=1):
            z = predict_group(x, g["checkpoints"], g["target"], inp.source, cache, inp.channels)
            phys = z[:, col] if g["target"] == "all" else z[:, 0]
            preds.append(Prediction(
                label=label, value=float(phys.mean()),
                std=float(phys.std(ddof=1)) if len(phys) > 1 else 0.0,
                unit=UNITS[label] if imported is None else "", rank=rank, arch=str(g["arch"]),
                width=None if pd.isna(g["width"]) else int(g["width"]),
                n_layers=None if pd.isna(g["n_layers"]) else int(g["n_layers"]),
                target=str(g["target"]), n_train=int(g["n_train"]), n_members=int(g["n_members"]),
                val_mse=float(g["val_gmean"]), members=[float(v) for v in phys],
                truth=None if inp.truth is None else float(inp.truth[col]),
            ))
    return preds, inp


def to_json(preds: list[Prediction], inp: InputImage) -> str:
    """Machine-readable output: the answer per label plus every reported grid point."""
    best = {p.label: {"value": p.value, "std": p.std, "unit": p.unit} for p in preds if p.rank == 1}
    if inp.truth is not None:
        for p in preds:
            if p.rank == 1:
                best[p.label]["truth"] = p.truth
    return dumps_strict({  # a non-finite number is null: the output is JSON, never a bare NaN
        "image": inp.source, "prediction": best, "notes": inp.notes,
        "models": [p.__dict__ for p in preds],
    }, indent=2)


def render_table(preds: list[Prediction], inp: InputImage) -> None:
    """Print the predictions as a rich table (stdout)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"moirescale predict: {inp.source}")
    table.add_column("label", no_wrap=True)
    table.add_column("value ± spread", justify="right", no_wrap=True)
    if inp.truth is not None:
        table.add_column("truth", justify="right", no_wrap=True)
    for name in ("model", "N_D", "N_r", "val MSE"):
        table.add_column(name, justify="left" if name == "model" else "right", no_wrap=True)
    for p in preds:
        model = model_label(p.arch, p.n_layers, p.width) + (" [all]" if p.target == "all" else "")
        row = [p.label if p.rank == 1 else f"  #{p.rank}", f"{p.value:.4g} ± {p.std:.2g} {p.unit}"]
        if inp.truth is not None:
            row.append(f"{p.truth:.4g}" if p.truth is not None else "")
        row += [model, str(p.n_train), str(p.n_members), f"{p.val_mse:.3g}"]
        table.add_row(*row)
    console.print(table)
    for note in inp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
