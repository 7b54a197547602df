"""Everything a :class:`~moirescale.train.spec.TrainSpec` implies, worked out once (issue 12).

A spec says what to train (model, target, N_D, recipe, realizations); :func:`resolve` turns it, together with
the image shape (and, when a store is at hand, its channel names and training pool), into a frozen
:class:`ResolvedSpec`: input shape, output columns, schedule (step budget included), subset and batch-order
seeds and the parameter count N_M. Validation happens here, once, with one clear :class:`UserError`; training
(:mod:`moirescale.train.run`), the sweep's planning and its estimates (:mod:`moirescale.sweep.estimate`) read
the resolved object instead of deriving the same facts again.

The rule (issue 28): a sweep's driver resolves each unique grid point once, against the store's shape,
channels and pool (:func:`moirescale.sweep.plan.check_plan` -> :class:`~moirescale.sweep.plan.Plan`), and
planning, size checks, cost estimates and failed rows read that object; a worker resolves its job once
(:func:`moirescale.train.run.run_spec`) and hands the :class:`ResolvedSpec` down to training, the results row
and the checkpoint metadata. Nothing below those two places calls :func:`resolve` again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moirescale.data.store import nested_subset
from moirescale.errors import UserError
from moirescale.labels import LABELS, check_target_name, target_index
from moirescale.limits import MAX_DEPTH, check_training_size, physical_memory
from moirescale.physics.params import CHANNELS
from moirescale.train.data import steps_per_epoch
from moirescale.train.precision import check_precision
from moirescale.train.schedules import SCHEDULES, ScheduleConfig, schedule_config
from moirescale.train.spec import TrainSpec, data_seed, order_seed

OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class ResolvedSpec:
    """What a spec implies for one image shape; build it with :func:`resolve`.

    Attributes
    ----------
    spec : the spec itself.
    in_shape : (C', H, W) the model sees (C' = the channels the spec names).
    channel_index : positions of those channels among the store's (or the known) channel names.
    columns : label columns regressed (``labels.target_index`` among ``label_names``).
    schedule : the learning-rate schedule, with its step budget.
    subset_seeds : one seed per training subset: one per realization, or one shared (``shared_data``).
    batch_seeds : the batch-order seeds, aligned with ``subset_seeds``.
    n_params : trainable parameters of one network (N_M).
    pool : the training pool's size when known (N_D has been checked against it), else None.
    model_options : the model's options, its defaults filled in (``models.model_options`` <- ``model_kw``).
    label_names : every label of the store, in column order (``columns`` index them).
    """

    spec: TrainSpec
    in_shape: tuple[int, int, int]
    channel_index: tuple[int, ...]
    columns: tuple[int, ...]
    schedule: ScheduleConfig
    subset_seeds: tuple[int, ...]
    batch_seeds: tuple[int, ...]
    n_params: int
    pool: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    label_names: tuple[str, ...] = LABELS

    @property
    def target_labels(self) -> tuple[str, ...]:
        """Names of the regressed labels, in output order."""
        return tuple(self.label_names[c] for c in self.columns)

    @property
    def n_outputs(self) -> int:
        """Outputs of the network: one per regressed label."""
        return len(self.columns)

    @property
    def budget(self) -> int:
        """The schedule's step budget (an upper bound: early stopping may end sooner)."""
        return self.schedule.budget

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over an N_D subset."""
        return steps_per_epoch(self.spec.n_train, self.spec.batch_size)

    def data_seed(self, realization: int) -> int:
        """The subset seed of one of the spec's realizations (the ``data_seed`` column)."""
        if self.spec.shared_data:
            return self.subset_seeds[0]
        return self.subset_seeds[self.spec.realizations.index(realization)]

    def seed_columns(self, realization: int) -> dict[str, int]:
        """The seed columns of a realization's results row (the same for ok, diverged and failed rows)."""
        return {"seed": int(self.spec.seed), "data_seed": int(self.data_seed(realization))}

    def subsets(self, pool: int | None = None) -> list[np.ndarray]:
        """The training subsets (indices into the pool), one per entry of ``subset_seeds``.

        Parameters
        ----------
        pool : the pool to draw from (default: the resolved ``pool``); the indices are those of
            :meth:`moirescale.data.store.Store.subset_indices`.
        """
        size = self.pool if pool is None else int(pool)
        if size is None:
            raise ValueError("the training pool size is not known: pass pool")
        check_pool(self.spec, size)
        return [nested_subset(size, self.spec.n_train, s) for s in self.subset_seeds]


def check_fields(spec: TrainSpec) -> None:
    """Check the spec's own fields (no image shape needed); raise one clear :class:`UserError`."""
    from moirescale.models import model_options

    model_options(spec.arch)  # unknown model -> UserError
    check_target_name(spec.target)  # a label name of the store or 'all': checked against it in resolve
    names = _channel_names(spec.channels)
    if spec.channels.strip() != "both" and (not names or len(set(names)) != len(names) or "" in names):
        raise UserError(f"channels must be distinct comma-separated names, got {spec.channels!r}")
    if spec.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {spec.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    check_precision(spec.precision)
    if spec.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {spec.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if spec.n_train < 1:
        raise UserError(f"n_train must be >= 1, got {spec.n_train}")
    if spec.batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {spec.batch_size}")
    if not spec.realizations or len(set(spec.realizations)) != len(spec.realizations):
        raise UserError(f"realizations must be a non-empty list of distinct indices, got {spec.realizations}")
    if not (0 <= spec.weight_decay < math.inf and 0 <= spec.noise_train < math.inf):
        raise UserError("weight_decay and noise_train must be finite numbers >= 0")
    depth = spec.model_kw.get("n_layers")
    if isinstance(depth, int | float) and not depth <= MAX_DEPTH:
        raise UserError(f"n_layers must be <= {MAX_DEPTH}, got {depth}")
    if not 0 <= spec.seed < 2**63 or min(spec.realizations) < 0:
        raise UserError(f"the seed must be in [0, 2^63) and realization indices >= 0, got seed {spec.seed}")


def _channel_names(channels: object) -> list[str]:
    if not isinstance(channels, str) or not channels.strip():
        raise UserError(f"channels must be distinct comma-separated names, got {channels!r}")
    return ["top", "bottom"] if channels.strip() == "both" else [c.strip() for c in channels.split(",")]


def label_columns(spec: TrainSpec, label_names: Sequence[str] | None) -> tuple[tuple[str, ...], list[int]]:
    """The label names in play and the columns the spec's target regresses among them.

    ``label_names`` None (no store at hand): the simulated store's theta, J, D for those targets and 'all';
    any other name is taken as the one label it names (checked when the store is known).
    """
    if label_names is None:
        names = LABELS if spec.target in (*LABELS, "all") else (spec.target,)
    else:
        names = tuple(label_names)
    return names, target_index(spec.target, names)


def _channels_of(spec: TrainSpec, channel_names: Sequence[str] | None, c: int, sliced: bool) -> list[int]:
    """Positions of the spec's channels among the store's (or, without a store, the simulator's) names."""
    from moirescale.data.torch_data import channel_positions

    if channel_names is None:
        names = _channel_names(spec.channels)
        if not set(names) <= set(CHANNELS):  # another store's names: checked when the store is at hand
            return list(range(c)) if sliced else list(range(len(names)))
    available = CHANNELS if channel_names is None else list(channel_names)
    try:
        return channel_positions(available, spec.channels)
    except UserError:
        if channel_names is not None:  # a store: its own message names what it holds
            raise
        raise UserError(
            f"channels must be distinct comma-separated names from {', '.join(available)}"
            f"{' (or both)' if {'top', 'bottom'} <= set(available) else ''}, got {spec.channels!r}"
        ) from None


def check_pool(spec: TrainSpec, pool: int, where: str = "") -> None:
    """N_D must fit in the training pool of ``pool`` samples (``where`` names the store in the message)."""
    if where and spec.n_train > pool:
        raise UserError(
            f"n_train={spec.n_train} is larger than the training pool of {pool} samples in {where}"
        )
    if not 1 <= spec.n_train <= pool:
        raise UserError(f"n_train={spec.n_train} must be between 1 and the training pool size {pool}")


def schedule_of(spec: TrainSpec) -> ScheduleConfig:
    """The spec's learning-rate schedule for its N_D (the one place a spec's schedule is built)."""
    return schedule_config(
        spec.schedule, spec.lr, spec.n_train, spec.batch_size, spec.max_epochs, **spec.schedule_kw
    )


def seeds_of(spec: TrainSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Subset seeds and batch-order seeds: one per realization, or one shared (``shared_data``)."""
    reals = spec.realizations[:1] if spec.shared_data else spec.realizations
    return tuple(data_seed(spec, r) for r in reals), tuple(order_seed(spec, r) for r in reals)


@functools.lru_cache(maxsize=512)
def _count(arch: str, kw_items: tuple[tuple[str, Any], ...], shape: tuple[int, int, int], n_out: int) -> int:
    import torch

    from moirescale.models import count_params, create_model

    with torch.device("meta"):  # shapes only: no memory, no time, no draw from torch's RNG
        return count_params(create_model(arch, shape, n_out, **dict(kw_items)))


def count_model_params(
    spec: TrainSpec, in_shape: tuple[int, int, int], label_names: Sequence[str] | None = None
) -> int:
    """N_M of the spec's model for inputs of ``in_shape`` (C', H, W)."""
    n_out = len(label_columns(spec, label_names)[1])
    try:
        key = tuple(sorted(spec.model_kw.items()))
        hash(key)
    except TypeError:  # an unhashable knob value: count without the cache
        return _count.__wrapped__(spec.arch, tuple(spec.model_kw.items()), tuple(in_shape), n_out)
    return _count(spec.arch, key, tuple(in_shape), n_out)


def resolve(
    spec: TrainSpec,
    image_shape: Sequence[int],
    channel_names: Sequence[str] | None = None,
    pool: int | None = None,
    where: str = "",
    sliced: bool = False,
    label_names: Sequence[str] | None = None,
) -> ResolvedSpec:
    """Validate ``spec`` once and work out everything it implies.

    Parameters
    ----------
    spec : the training job.
    image_shape : (C, H, W) of the store's images (C = all stored channels; only H and W are used unless
        ``sliced``).
    channel_names : the store's channel names in stored order; None: the known channel names (only the count
        of the spec's channels then matters).
    pool : the training pool's size, if known: N_D is checked against it.
    where : the store's path, for messages.
    sliced : ``image_shape`` is already the model's input (in-memory arrays, :class:`TrainData`): used as is.
    label_names : the store's label names (its manifest's ``label_names``); the target must name one of them
        or be 'all'. None: see :func:`label_columns`.

    Raises
    ------
    UserError
        A bad field, unknown channel or model knob, or an N_D larger than the pool.
    """
    from moirescale.models import model_options

    check_fields(spec)
    names, columns = label_columns(spec, label_names)
    c, h, w = (int(s) for s in image_shape)
    chans = _channels_of(spec, channel_names, c, sliced)
    in_shape = (c if sliced else len(chans), h, w)
    if pool is not None:
        check_pool(spec, int(pool), where)
    schedule = schedule_of(spec)
    subset_seeds, batch_seeds = seeds_of(spec)
    n_params = count_model_params(spec, in_shape, names)
    # A network that cannot be allocated is refused here, before any memory is asked for.
    check_training_size(n_params, 1, f"{spec.arch} {spec.model_kw}", physical_memory())
    return ResolvedSpec(
        spec=spec,
        in_shape=in_shape,
        channel_index=tuple(chans),
        columns=tuple(columns),
        schedule=schedule,
        subset_seeds=subset_seeds,
        batch_seeds=batch_seeds,
        n_params=n_params,
        pool=None if pool is None else int(pool),
        model_options={**model_options(spec.arch), **spec.model_kw},
        label_names=names,
    )
