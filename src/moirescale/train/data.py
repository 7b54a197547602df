"""In-memory training data and the batch stream that every training path (single net or ensemble) shares.

Training works on arrays, not on the store, so the core can be tested on synthetic data and an ensemble can
slice one tensor per step. :func:`load_train_data` fills a :class:`TrainData` from a dataset store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from moirescale.errors import UserError


@dataclass
class TrainData:
    """Images (N, C, H, W) and min-max scaled labels (N, k) float32 of the three splits.

    ``label_names`` names the k label columns (a store's ``label_names``); None: theta, J, D when k = 3.

    Images are float32 in [-1, 1], or the store's int16 codes (what :func:`load_train_data` gives: half the
    memory, exact; :func:`moirescale.train.precision.decode_images` turns them into floats).

    ``x_train``/``y_train`` hold every training sample any realization may use; which rows a realization
    trains on is given separately (an index array into them), so realizations can share or not share a subset.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        k = self.y_train.shape[1] if self.y_train.ndim == 2 else -1
        if self.label_names is not None:
            self.label_names = tuple(self.label_names)
            k = len(self.label_names)
        for name in ("train", "val", "test"):
            x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
            if x.ndim != 4 or y.ndim != 2 or y.shape[1] != k or k < 1 or len(x) != len(y):
                raise UserError(
                    f"{name} data must be x (N, C, H, W) and y (N, k) with the same k labels in every "
                    f"split; got {x.shape} and {y.shape}"
                )
            if len(x) == 0:
                raise UserError(f"the {name} split is empty")
            if x.dtype not in (np.float32, np.int16):
                raise UserError(f"{name} images must be float32 or int16 codes, got {x.dtype}")
        shapes = {self.x_train.shape[1:], self.x_val.shape[1:], self.x_test.shape[1:]}
        if len(shapes) != 1:
            raise UserError(f"image shapes differ between splits: {sorted(shapes)}")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]


def load_train_data(
    store_path: str | os.PathLike[str],
    subsets: list[np.ndarray],
    channels: str = "top",
) -> tuple[TrainData, list[np.ndarray]]:
    """Read the union of the training subsets plus the whole val and test splits into memory, images as
    the store's int16 codes (decoded per batch while training).

    Returns the data and the subsets re-indexed into ``TrainData.x_train`` (order preserved).
    """
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import load_arrays

    store = open_store(store_path)
    try:
        for split in ("val", "test"):
            if store.split_len(split) == 0:
                raise UserError(f"{store_path}: the {split} split is missing or empty")
        union, inverse = np.unique(np.concatenate(subsets), return_inverse=True)
        x_tr, y_tr = load_arrays(store, "train", union, channels, codes=True)
        x_va, y_va = load_arrays(store, "val", None, channels, codes=True)
        x_te, y_te = load_arrays(store, "test", None, channels, codes=True)
    finally:
        store.close()
    local, pos = [], 0
    for s in subsets:
        local.append(inverse[pos : pos + len(s)].astype(np.int64))
        pos += len(s)
    return TrainData(x_tr, y_tr, x_va, y_va, x_te, y_te, label_names=store.label_names), local


class BatchStream:
    """Mini-batch indices (and optional input noise) for one data order, drawn from a seeded generator.

    Every epoch is a fresh permutation of the subset cut into batches of ``batch_size``; a final batch of a
    single sample is dropped (BatchNorm cannot train on it). Two streams with the same seed give the same
    batches, which is what makes an ensemble step equal to the same step of each network trained alone.
    """

    def __init__(self, subset: np.ndarray, batch_size: int, seed: int):
        self.subset = torch.as_tensor(np.asarray(subset, dtype=np.int64))
        self.batch_size = int(min(batch_size, len(subset)))
        self.gen = torch.Generator().manual_seed(int(seed))
        self.noise_gen = torch.Generator().manual_seed(int(seed) ^ 0x5EED)
        self._queue: list[torch.Tensor] = []
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.subset), self.batch_size)

    def epoch_order(self) -> torch.Tensor:
        """The next epoch's permutation of the subset (indices into the training arrays)."""
        self.epoch += 1
        return self.subset[torch.randperm(len(self.subset), generator=self.gen)]

    def next(self) -> torch.Tensor:
        """Indices (into the training arrays) of the next batch."""
        if not self._queue:
            perm = self.epoch_order()
            self._queue = [perm[a:b] for a, b in batch_bounds(len(perm), self.batch_size)][::-1]
        return self._queue.pop()

    def noise(self, shape: tuple[int, ...], sigma: float) -> torch.Tensor:
        return torch.randn(shape, generator=self.noise_gen) * sigma

    def state_dict(self) -> dict[str, Any]:
        """Where the stream stands (its generators and the rest of the epoch): a resumed run continues it."""
        return {"gen": self.gen.get_state(), "noise_gen": self.noise_gen.get_state(),
                "queue": list(self._queue), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.noise_gen.set_state(state["noise_gen"])
        self._queue, self.epoch = list(state["queue"]), int(state["epoch"])


class MemberStreams:
    """The batch streams of several networks with their own subsets, stepped together.

    Member ``i`` gets exactly the batches of ``BatchStream(subsets[i], batch_size, seeds[i])``, so an
    ensemble step equals the same step of each network trained alone. The members' permutations are drawn once
    per epoch into one ``(R, N_D)`` tensor on ``device``; a step is then a column slice of it (rows of the
    networks still training): no Python loop over members per step, and the caller gathers every member's
    batch with one indexed read of the training images.
    """

    def __init__(
        self,
        subsets: list[np.ndarray],
        batch_size: int,
        seeds: list[int],
        device: torch.device | str = "cpu",
    ):
        if len({len(s) for s in subsets}) != 1:
            raise ValueError("every member's subset must have the same size N_D")
        self.streams = [BatchStream(s, batch_size, seed) for s, seed in zip(subsets, seeds, strict=True)]
        self.bounds = batch_bounds(len(subsets[0]), self.streams[0].batch_size)
        self.device = torch.device(device)
        self._order: torch.Tensor | None = None
        self._k = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.bounds)

    def next(self, members: np.ndarray) -> torch.Tensor:
        """(len(members), B) indices into the training arrays: the next batch of each listed member."""
        if self._order is None or self._k == len(self.bounds):
            self._order = torch.stack([s.epoch_order() for s in self.streams]).to(self.device)
            self._k = 0
        a, b = self.bounds[self._k]
        self._k += 1
        rows = torch.as_tensor(members, dtype=torch.long, device=self.device)
        return self._order[rows, a:b]

    def noise(self, members: np.ndarray, shape: tuple[int, ...], sigma: float) -> torch.Tensor:
        """(len(members), *shape) input noise, each member from its own generator (as when trained alone)."""
        return torch.stack([self.streams[i].noise(shape, sigma) for i in members])

    def state_dict(self) -> dict[str, Any]:
        return {"streams": [s.state_dict() for s in self.streams], "order": self._order, "k": self._k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for s, st in zip(self.streams, state["streams"], strict=True):
            s.load_state_dict(st)
        order = state["order"]
        self._order, self._k = (None if order is None else order.to(self.device)), int(state["k"])


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch of ``n`` samples; a final partial batch of one sample is
    dropped."""
    b = min(batch_size, n)
    bounds = [(a, min(a + b, n)) for a in range(0, n, b)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1 < b:
        bounds.pop()
    return bounds


def steps_per_epoch(n: int, batch_size: int) -> int:
    return len(batch_bounds(n, batch_size))
