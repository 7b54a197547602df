"""Size budgets, checked at the boundary before any work (issue 11): a size that would exhaust memory or make
a plan of millions of files is refused with a message that names the limit, instead of failing later with an
allocation error.

The limits are far above every config in ``configs/`` (the paper's dataset uses 100 px images, at most 115
unit cells per side and 1 024-sample shards) and far below what breaks a 16 GiB machine.
"""

from __future__ import annotations

import math
import os

from moirescale.errors import UserError

GIB = 1 << 30
# Simulation: unit cells per side of one sample's cell. Spins, couplings and scratch take about
# SIM_BYTES_PER_SITE per unit cell (2 layers x 2 sites x 3 components in float64, plus the kernel's work
# arrays).
MAX_CELL_SIDE = 2048
SIM_BYTES_PER_SITE = 300
MAX_SIM_BATCH_BYTES = 2 * GIB  # samples simulated together (generate's batch) share this much memory
MAX_SWEEPS = 1_000_000  # n_anneal + n_zero: a temperature per sweep is held in memory
# Rendering: size_px * supersample points per side, each a few float64/int64 numbers.
MAX_RENDER_SIDE = 8192
MAX_IMAGE_SIDE = 4096  # size_px
# A store: shards held in memory as float32 while written, and a plan (manifest) of bounded length.
MAX_SHARD_BYTES = 2 * GIB
MAX_SHARDS = 100_000
# Images given to `predict`: decoded pixels, and the resampling to the training grid.
MAX_INPUT_PIXELS = 64 * 1024 * 1024
MAX_RESAMPLED_PIXELS = 64 * 1024 * 1024


def check_cell_side(n: int, what: str = "the simulation cell") -> None:
    """Refuse a cell of more than :data:`MAX_CELL_SIDE` unit cells per side."""
    if n > MAX_CELL_SIDE:
        raise UserError(
            f"{what} would have {n} unit cells per side, above the limit of {MAX_CELL_SIDE} "
            f"(about {SIM_BYTES_PER_SITE * n * n / GIB:.0f} GiB per sample); use a larger theta or fewer "
            "cells_per_side"
        )


def max_cell_side(theta_min_deg: float, cells_per_side: int) -> int:
    """The largest cell (unit cells per side) a theta range down to ``theta_min_deg`` needs (lattice rule)."""
    return max(3, int(round(int(cells_per_side) / math.radians(theta_min_deg))))


def sim_batch_limit(n: int) -> int:
    """How many samples of an ``n`` x ``n`` cell fit in :data:`MAX_SIM_BATCH_BYTES` together (at least 1)."""
    return max(1, int(MAX_SIM_BATCH_BYTES // (SIM_BYTES_PER_SITE * n * n)))


def check_sweeps(n_sweeps: int) -> None:
    if n_sweeps > MAX_SWEEPS:
        raise UserError(f"the annealing protocol has {n_sweeps} sweeps, above the limit of {MAX_SWEEPS}")


def check_image(size_px: int, supersample: int) -> None:
    """Refuse images whose rendering would not fit in memory."""
    if size_px > MAX_IMAGE_SIDE:
        raise UserError(f"image size_px {size_px} is above the limit of {MAX_IMAGE_SIDE} pixels per side")
    if size_px * supersample > MAX_RENDER_SIDE:
        raise UserError(
            f"image size_px x supersample = {size_px} x {supersample} is above the limit of "
            f"{MAX_RENDER_SIDE} rendered points per side"
        )


def check_store_plan(split_sizes: dict[str, int], shard_size: int, channels: int, size_px: int) -> None:
    """Refuse a store of more than :data:`MAX_SHARDS` shards, or shards above :data:`MAX_SHARD_BYTES`."""
    shards = sum(math.ceil(n / shard_size) for n in split_sizes.values())
    if shards > MAX_SHARDS:
        raise UserError(
            f"the store would have {shards} shards, above the limit of {MAX_SHARDS}: use fewer samples "
            f"({sum(split_sizes.values())} asked) or a larger shard_size"
        )
    largest = min(shard_size, max(split_sizes.values()))
    nbytes = largest * channels * size_px * size_px * 4
    if nbytes > MAX_SHARD_BYTES:
        raise UserError(
            f"a shard of {largest} images of {channels} x {size_px} x {size_px} px takes "
            f"{nbytes / GIB:.1f} GiB in memory, above the limit of {MAX_SHARD_BYTES / GIB:.0f} GiB: use a "
            "smaller shard_size"
        )


def check_input_pixels(height: int, width: int, source: str) -> None:
    """Refuse an input picture larger than :data:`MAX_INPUT_PIXELS` (a decompression bomb, or a mistake)."""
    if height * width > MAX_INPUT_PIXELS:
        raise UserError(
            f"{source}: {width} x {height} px is above the limit of {MAX_INPUT_PIXELS // (1024 * 1024)} "
            "megapixels"
        )


def check_resampled_pixels(height: int, width: int, source: str) -> None:
    """Refuse a resampling (``predict --nm-per-px``) whose intermediate image would be too large."""
    if height * width > MAX_RESAMPLED_PIXELS:
        raise UserError(
            f"{source}: resampling to {width} x {height} px is above the limit of "
            f"{MAX_RESAMPLED_PIXELS // (1024 * 1024)} megapixels; check --nm-per-px"
        )


def check_dataset(
    splits: dict[str, int],
    shard_size: int,
    theta_min_deg: float,
    cells_per_side: int,
    n_sweeps: int,
    size_px: int,
    supersample: int,
    channels: int,
) -> None:
    """Every budget of a dataset config at once (what ``generate`` would allocate and plan)."""
    check_cell_side(max_cell_side(theta_min_deg, cells_per_side),
                    f"theta = {theta_min_deg:g} deg with cells_per_side = {cells_per_side}")
    check_sweeps(n_sweeps)
    check_image(size_px, supersample)
    check_store_plan(splits, shard_size, channels, size_px)


# Training: memory per trainable parameter (fp32 weights, gradient, Adam's two moments, the best copy), and
# the largest network and ensemble accepted.
TRAIN_BYTES_PER_PARAM = 20
MAX_NET_PARAMS = 2**31  # one network; far above every grid of configs/ (the paper's largest is ~1e8)
MAX_REALIZATIONS = 10_000  # N_r of one grid point
MAX_DEPTH = 1000  # n_layers: building a deeper model (even to count it) takes minutes


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_training_size(n_params: int, n_nets: int, what: str, memory: int | None = None) -> None:
    """Refuse a network above :data:`MAX_NET_PARAMS`, or ``n_nets`` of them trained together that need more
    than ``memory`` bytes (this machine's, when given)."""
    if n_params > MAX_NET_PARAMS:
        raise UserError(f"{what} has {n_params:.3g} parameters, above the limit of {MAX_NET_PARAMS:.3g}")
    need = TRAIN_BYTES_PER_PARAM * n_params * n_nets
    if memory is not None and need > memory:
        raise UserError(
            f"{n_nets} x {what} ({n_params:.3g} parameters each) need about {need / GIB:.1f} GiB to train, "
            f"more than this machine's {memory / GIB:.1f} GiB; use smaller models or fewer at once"
        )
