"""Spins -> image (MODEL.md §4), and a PNG of one sample (top layer red +1 / blue -1, bottom beside it)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from moirescale.errors import UserError
from moirescale.fsio import atomic_path
from moirescale.physics.lattice import A_NM
from moirescale.physics.params import ImageSpec


def channel_maps(spins: np.ndarray) -> dict[str, np.ndarray]:
    """Per-unit-cell value of every image channel, float64 ``(n, n)`` each, from spins ``(2, n, n, 2, 3)``.

    ``top``/``bottom``: the layer's S_z averaged over the A and B sites; ``net``: (S_z^t + S_z^b)/2, 0 where
    the layers are opposite (an AFM domain); ``afm``: S_z^t S_z^b per vertical pair, averaged over A and B.
    """
    sz = np.asarray(spins, dtype=np.float64)[..., 2]  # (2, n, n, 2): layer, i, j, sublattice
    top, bottom = sz[0].mean(axis=-1), sz[1].mean(axis=-1)
    return {
        "top": top,
        "bottom": bottom,
        "net": 0.5 * (top + bottom),
        "afm": (sz[0] * sz[1]).mean(axis=-1),
    }


def render_image(spins: np.ndarray, origin: tuple[float, float], spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """Out-of-plane magnetisation image, float32 ``(C, H, W)`` in [-1, 1], one channel per ``spec.channels``
    name (see :func:`channel_maps`).

    The periodic solution tiles the plane; a point (x, y) (units of a, x along columns, y along rows) lies in
    unit cell ``(floor(u) mod n, floor(v) mod n)`` with ``v = y / (sqrt(3)/2) + v0``, ``u = x - v/2 + u0``;
    its value is the mean S_z of the cell's A and B sites. Each pixel averages ``supersample^2`` points.
    """
    spec.validate()
    n = spins.shape[1]
    u0, v0 = origin
    ss = int(spec.supersample)
    px = spec.fov_nm / spec.size_px / A_NM  # pixel size in units of a
    t = (np.arange(spec.size_px * ss) + 0.5) / ss * px
    v = t[:, None] / (math.sqrt(3.0) / 2.0) + v0
    u = t[None, :] - v / 2.0 + u0
    iu = np.floor(u).astype(np.int64) % n
    iv = np.floor(v).astype(np.int64) % n
    cells = channel_maps(spins)
    out = np.empty((len(spec.channels), spec.size_px, spec.size_px), dtype=np.float32)
    for c, name in enumerate(spec.channels):
        fine = cells[name][iu, iv]
        out[c] = fine.reshape(spec.size_px, ss, spec.size_px, ss).mean(axis=(1, 3))
    return np.clip(out, -1.0, 1.0)


def figure_format(path: str | Path) -> str:
    """The image format a figure path asks for (its suffix); UserError if matplotlib cannot write it.

    Call it before the work that makes the figure, so that a bad name costs nothing.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    known = Figure().canvas.get_supported_filetypes()
    if fmt not in known:
        raise UserError(f"cannot write {path}: a figure name must end in .{', .'.join(sorted(known))}")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    return fmt


def plot_channels(
    image: np.ndarray,
    path: str | Path,
    title: str,
    names: list[str] | tuple[str, ...] = ("top", "bottom"),
    fov_nm: float | None = None,
    titles: list[str] | tuple[str, ...] | None = None,
) -> Path:
    """Save a PNG of every channel of ``image`` (C, H, W) side by side: red +1, blue -1 (the paper's colours).

    Each panel is titled ``titles`` (default: "<name> layer S_z", a simulated image's spin layers). With
    ``fov_nm`` the axes are in nm; without, bare pixels. UserError if the file can't be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = image.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False, constrained_layout=True)
    extent = (0, fov_nm, 0, fov_nm) if fov_nm else None
    titles = titles or [f"{name} layer $S_z$" for name in names]
    for ax, chan, name in zip(axes[0], image, titles, strict=False):
        im = ax.imshow(
            chan, cmap="bwr", vmin=-1, vmax=1, origin="lower", extent=extent, interpolation="nearest"
        )
        ax.set_title(name, fontsize=10)
        if fov_nm:
            ax.set_xlabel("x (nm)")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if fov_nm:
        axes[0][0].set_ylabel("y (nm)")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format=figure_format(path))
    except OSError as exc:
        raise UserError(f"cannot write PNG {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path


def save_png(sample: dict, path: str | Path, spec: ImageSpec | None = None) -> Path:
    """Write a PNG of a sample: top-layer S_z (red +1, blue -1, diverging colormap), bottom layer beside it.

    Uses the sample's stored ``image`` when it has both channels; otherwise re-renders from ``spins``.
    """
    from moirescale.physics.rng import image_origin

    spec = spec or ImageSpec()
    img = np.asarray(sample["image"])
    if img.shape[0] != 2:
        s = np.asarray(sample["spins"])
        spec = dataclasses.replace(spec, channels=("top", "bottom"))
        img = render_image(s, image_origin(s.shape[1], int(sample["seed"]), spec.origin), spec)
    title = (
        f"θ_eff = {float(sample['theta_eff']):.3f}°, J = {float(sample['J']):.3f} meV, "
        f"D = {float(sample['D']):.3f} meV"
    )
    return plot_channels(img, path, title, fov_nm=spec.fov_nm)
