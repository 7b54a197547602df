"""Draw one stored sample: every channel (red +1, blue -1) with its labels in the title."""

from __future__ import annotations

from pathlib import Path

from moirescale.data.store import Store
from moirescale.errors import UserError


def plot_sample(store: Store, split: str, index: int, out: str | Path) -> Path:
    """Save a PNG of sample ``index`` of ``split``; returns its path."""
    from moirescale.physics.render import figure_format, plot_channels

    figure_format(out)
    n = store.split_len(split)
    if not 0 <= index < n:
        raise UserError(f"--index {index} is out of range: split {split!r} has {n} samples")
    out = Path(out)
    images, labels = store.read(split, [index])
    seed = int(store.read_meta(split, [index])["seeds"][0])
    names = store.manifest.get("image_channels") or [f"channel {c}" for c in range(images.shape[1])]
    theta, J, D = labels[0]
    title = f"{split}[{index}]  θ_eff = {theta:.3f}°   J = {J:.3f} meV   D = {D:.3f} meV   (seed {seed})"
    return plot_channels(images[0], out, title, names=names)
