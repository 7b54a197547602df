"""Draw one stored sample: every channel (red +1, blue -1) with its labels in the title."""

from __future__ import annotations

from pathlib import Path

from moirescale.data.store import Store
from moirescale.errors import UserError


def plot_sample(store: Store, split: str, index: int, out: str | Path) -> Path:
    """Save a PNG of sample ``index`` of ``split``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = store.split_len(split)
    if not 0 <= index < n:
        raise UserError(f"--index {index} is out of range: split {split!r} has {n} samples")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: directory {out.parent} does not exist")
    images, labels = store.read(split, [index])
    seed = int(store.read_meta(split, [index])["seeds"][0])
    names = store.manifest.get("image_channels") or [f"channel {c}" for c in range(images.shape[1])]
    theta, J, D = labels[0]
    fig, axes = plt.subplots(1, images.shape[1], figsize=(3.6 * images.shape[1], 3.8), squeeze=False)
    for c, ax in enumerate(axes[0]):
        im = ax.imshow(images[0, c], cmap="bwr", vmin=-1, vmax=1, origin="lower", interpolation="nearest")
        ax.set_title(f"{names[c]} layer $S_z$", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    fig.suptitle(
        f"{split}[{index}]  θ_eff = {theta:.3f}°   J = {J:.3f} meV   D = {D:.3f} meV   (seed {seed})",
        fontsize=10,
    )
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out
