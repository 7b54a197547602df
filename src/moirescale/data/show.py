"""Draw one stored sample: every channel (red +1, blue -1) with its labels in the title, each named as its
store names it (a simulated store's spin layers, an imported store's own channels and labels)."""

from __future__ import annotations

from pathlib import Path

from moirescale.data.store import Store
from moirescale.errors import UserError


def label_text(store: Store, values) -> str:
    """A sample's labels for a title: a simulated store's θ_eff, J, D with units, else each label by name."""
    names = store.label_names
    if tuple(names) == ("theta", "J", "D"):
        theta, J, D = values
        return f"θ_eff = {theta:.3f}°   J = {J:.3f} meV   D = {D:.3f} meV"
    return "   ".join(f"{k} = {v:.4g}" for k, v in zip(names, values, strict=True))


def channel_titles(manifest: dict, n: int) -> list[str]:
    """Panel titles of a store's ``n`` channels: a simulated store's "<layer> layer S_z", an imported
    store's (it records a ``pixel_map``) channel names as they are."""
    names = manifest.get("image_channels") or [f"channel {c}" for c in range(n)]
    if manifest.get("pixel_map") is not None:
        return [str(x) for x in names]
    return [f"{x} layer $S_z$" for x in names]


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
    title = f"{split}[{index}]  {label_text(store, labels[0])}   (seed {seed})"
    return plot_channels(images[0], out, title, titles=channel_titles(store.manifest, images.shape[1]))
