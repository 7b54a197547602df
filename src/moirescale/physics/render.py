"""Spins -> image (MODEL.md §4), and a PNG of one sample (top layer red +1 / blue -1, bottom beside it)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from moirescale.errors import UserError
from moirescale.physics.lattice import A_NM
from moirescale.physics.params import ImageSpec


def render_image(spins: np.ndarray, origin: tuple[float, float], spec: ImageSpec = ImageSpec()) -> np.ndarray:
    """Out-of-plane magnetisation image, float32 ``(C, H, W)`` in [-1, 1].

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
    sz = np.asarray(spins, dtype=np.float64)[..., 2].mean(axis=-1)  # (2, n, n): A/B mean per cell
    layer = {"top": 0, "bottom": 1}
    out = np.empty((len(spec.channels), spec.size_px, spec.size_px), dtype=np.float32)
    for c, name in enumerate(spec.channels):
        fine = sz[layer[name]][iu, iv]
        out[c] = fine.reshape(spec.size_px, ss, spec.size_px, ss).mean(axis=(1, 3))
    return np.clip(out, -1.0, 1.0)


def plot_channels(
    image: np.ndarray,
    path: str | Path,
    title: str,
    names: list[str] | tuple[str, ...] = ("top", "bottom"),
    fov_nm: float | None = None,
) -> Path:
    """Save a PNG of every channel of ``image`` (C, H, W) side by side: red +1, blue -1 (the paper's colours).

    With ``fov_nm`` the axes are in nm; without, bare pixels. UserError if the file can't be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = image.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False, constrained_layout=True)
    extent = (0, fov_nm, 0, fov_nm) if fov_nm else None
    for ax, chan, name in zip(axes[0], image, names, strict=False):
        im = ax.imshow(
            chan, cmap="bwr", vmin=-1, vmax=1, origin="lower", extent=extent, interpolation="nearest"
        )
        ax.set_title(f"{name} layer $S_z$", fontsize=10)
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
        fig.savefig(path, dpi=100)
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
        img = render_image(s, image_origin(s.shape[1], int(sample["seed"])), spec)
    title = (
        f"θ_eff = {float(sample['theta_eff']):.3f}°, J = {float(sample['J']):.3f} meV, "
        f"D = {float(sample['D']):.3f} meV"
    )
    return plot_channels(img, path, title, fov_nm=spec.fov_nm)
