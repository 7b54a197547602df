"""Torch access to a dataset store: a lazy ``Dataset`` and a one-shot in-memory loader.

Both return images float32 (C', H, W) in [-1, 1] (C' = the number of channels named in ``channels``:
``"top"`` is the paper's images, ``"both"`` = ``"top,bottom"``, any comma-separated subset of the store's
channels) and labels min-max scaled to the store's own label ranges (:func:`label_scaler`; float32, (3,)
per sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from moirescale.data.store import Store
from moirescale.errors import UserError
from moirescale.labels import LabelScaler


def store_channels(store: Store) -> list[str]:
    """The names of a store's image channels, in stored order."""
    return list(store.manifest.get("image_channels") or ["top", "bottom"][: store.image_shape[0]])


def label_scaler(store: Store) -> LabelScaler:
    """The min-max scaling of a store's labels: its own sampling ranges, from its manifest."""
    return LabelScaler.from_manifest(store.manifest)


def channel_positions(available: Sequence[str], channels: str) -> list[int]:
    """Positions in ``available`` of the channels named by ``channels``.

    ``channels`` is a comma-separated list of names (``top``, ``bottom``, ``net``, ``afm``), in the order the
    model sees them, or ``both`` (= ``top,bottom``). UserError names what the store holds.
    """
    if not isinstance(channels, str) or not channels.strip():
        raise UserError(f"channels must be comma-separated channel names, got {channels!r}")
    names = ["top", "bottom"] if channels.strip() == "both" else [c.strip() for c in channels.split(",")]
    if len(set(names)) != len(names) or "" in names:
        raise UserError(f"channels must be distinct, non-empty names, got {channels!r}")
    missing = [c for c in names if c not in available]
    if missing:
        raise UserError(
            f"channels: {missing[0]!r} is not in the store (it holds {', '.join(available)}); "
            "choose a comma-separated subset of those"
        )
    return [list(available).index(c) for c in names]


def channel_slice(store: Store, channels: str) -> list[int]:
    """Positions in the store's images of the comma-separated channel names ``channels``."""
    return channel_positions(store_channels(store), channels)


class StoreDataset(Dataset):
    """A split of a store read lazily: ``__getitem__`` gives ``(image tensor, scaled label tensor)``.

    Parameters
    ----------
    store : an open :class:`~moirescale.data.store.Store`.
    split : 'train', 'val' or 'test'.
    indices : the samples of the split to expose, in order (default: all).
    channels : comma-separated channel names of the store ('top', the paper's images; 'both' = 'top,bottom').
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
        self._ch = channel_slice(store, channels)
        self._scaler = label_scaler(store)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, lab = self.store.read(self.split, [self.indices[i]], channels=self._ch)
        return torch.from_numpy(img[0]), torch.from_numpy(self._scaler.scale(lab)[0])


def load_arrays(
    store: Store,
    split: str,
    indices: Sequence[int] | np.ndarray | None = None,
    channels: str = "top",
    codes: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load samples into memory in one pass (reads grouped by shard and sorted).

    Returns
    -------
    x : float32 (N, C', H, W) in [-1, 1] (``codes``: the stored int16 codes), in the order of ``indices``.
    y : float32 (N, 3) labels scaled to [0, 1] by the store's own ranges (:func:`label_scaler`).
    """
    ch = channel_slice(store, channels)
    images, labels = store.read(split, indices, channels=ch, codes=codes)
    return images, label_scaler(store).scale(labels)
