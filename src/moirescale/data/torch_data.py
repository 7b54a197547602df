"""Torch access to a dataset store: a lazy ``Dataset`` and a one-shot in-memory loader.

Both return images float32 (C', H, W) in [-1, 1] (C' = 1 for ``channels="top"``, the paper's images; 2 for
``"both"``) and labels min-max scaled by :func:`moirescale.labels.scale` (float32, (3,) per sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from moirescale.data.store import Store
from moirescale.errors import UserError
from moirescale.labels import scale

CHANNEL_CHOICES = ("top", "both")


def _channel_slice(store: Store, channels: str) -> slice:
    if channels not in CHANNEL_CHOICES:
        raise UserError(f"channels must be 'top' or 'both', got {channels!r}")
    names = store.manifest.get("image_channels") or ["top", "bottom"][: store.image_shape[0]]
    if channels == "both":
        if store.image_shape[0] < 2:
            raise UserError(f"channels='both' needs a two-channel store; {store.root} has only {names}")
        return slice(0, store.image_shape[0])
    if "top" not in names:
        raise UserError(f"channels='top' needs the top layer; {store.root} has only {names}")
    i = names.index("top")
    return slice(i, i + 1)


class StoreDataset(Dataset):
    """A split of a store read lazily: ``__getitem__`` gives ``(image tensor, scaled label tensor)``.

    Parameters
    ----------
    store : an open :class:`~moirescale.data.store.Store`.
    split : 'train', 'val' or 'test'.
    indices : the samples of the split to expose, in order (default: all).
    channels : 'top' (one channel, the paper's images) or 'both' layers.
    """

    def __init__(
        self,
        store: Store,
        split: str,
        indices: Sequence[int] | np.ndarray | None = None,
        channels: str = "top",
    ):
        self.store = store
        self.split = split
        self.indices = store._check_indices(store._check_split(split), indices)
        self._ch = _channel_slice(store, channels)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.store.read(self.split, [self.indices[i]], channels=self._ch)
        return torch.from_numpy(img[0]), torch.from_numpy(scale(lab)[0])


def load_arrays(
    store: Store, split: str, indices: Sequence[int] | np.ndarray | None = None, channels: str = "top"
) -> tuple[np.ndarray, np.ndarray]:
    """Load samples into memory in one pass (reads grouped by shard and sorted).

    Returns
    -------
    x : float32 (N, C', H, W) in [-1, 1], in the order of ``indices``.
    y : float32 (N, 3) labels scaled to [0, 1] (:func:`moirescale.labels.scale`).
    """
    ch = _channel_slice(store, channels)
    images, labels = store.read(split, indices, channels=ch)
    return images, scale(labels)
