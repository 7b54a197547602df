"""Compute estimates for ``--dry-run`` and the ETA of ``status``: FLOPs per job from model and step budget.

FLOPs per training sample: an FCN costs 4·P₁ for its first layer (forward + weight gradient; the input needs
no gradient) plus 6·P for the rest; ResNet/ViT cost 3× a forward pass, counted by torch's ``FlopCounterMode``
on a meta-device model (no memory, no time). Input shape, parameter count and steps per network (the
schedule's step budget, an upper bound: early stopping often ends sooner) come from the resolved spec
(:func:`moirescale.train.resolve.resolve`), the same object training uses: every function here takes a
:class:`~moirescale.train.resolve.ResolvedSpec` (the sweep's plan resolves each grid point once) and none
resolves again.
Wall time = FLOPs / an effective rate (:data:`RATES`, from the figures in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moirescale.train.resolve import ResolvedSpec

# Effective training FLOP/s, documented in docs/sweeps.md. CPU: 2 cores of this machine kind, sgemm peak about
# 168 GFLOP/s and FCN ensembles reach >= 60 % of it (issue 4's target, docs/benchmarks.md); convolutions and
# attention on the CPU run at about a third of that. GPU: one H100 in fp32 without tensor cores (~60 TFLOP/s
# peak), at a third of peak for these small models.
# The feature baseline's rate is per counted FLOP of its extractor (the FFT is not counted): 2000 images of
# 48 x 48 px per second on 2 cores, measured; the GPU figure is a guess (the ridge solve runs on the CPU).
RATES: dict[str, dict[str, float]] = {
    "cpu2": {"fcn": 1.0e11, "resnet18": 3.5e10, "vit": 3.5e10, "features": 3.5e8},
    "gpu": {"fcn": 2.0e13, "resnet18": 1.5e13, "vit": 1.5e13, "features": 3.5e9},
}
# A feature-baseline job's fixed cost: reading the val and test splits, their features, imports, ridge path
# (15 jobs of the 32 px pilot, 1536 val + test images each, took 160 s on a busy 2-core machine).
FEATURES_JOB_S = 10.0
DEFAULT_IMAGE = (2, 100, 100)  # MODEL.md §4: two layers, 100 x 100 px


@functools.lru_cache(maxsize=256)
def _flops(arch: str, kw_items: tuple[tuple[str, Any], ...], shape: tuple[int, int, int],
           n_out: int) -> float:
    kw = dict(kw_items)
    if arch == "fcn":
        from moirescale.models.fcn import fcn_param_count, linear_param_count

        d_in = shape[0] * shape[1] * shape[2]
        n_l, w = int(kw["n_layers"]), int(kw["width"])
        first = linear_param_count(d_in, w)
        rest = fcn_param_count(d_in, n_out, n_l, w) - first
        return 4.0 * first + 6.0 * rest
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from moirescale.models import create_model

    with torch.device("meta"):
        model = create_model(arch, shape, n_out, **kw).eval()  # eval: batch norm takes a batch of 2
        x = torch.zeros((2, *shape))
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    return 3.0 * counter.get_total_flops() / 2


def flops_per_sample(rs: ResolvedSpec) -> float:
    """Training FLOPs for one sample through one network (forward + backward)."""
    # the model's options with its defaults filled in (`train` may leave the knobs at the defaults)
    return _flops(rs.spec.arch, tuple(sorted(rs.model_options.items())), rs.in_shape, rs.n_outputs)


@dataclass(frozen=True)
class JobCost:
    flops: float  # all realizations of the job
    cpu_s: float  # on 2 CPU cores
    gpu_s: float  # on one GPU


def job_cost(rs: ResolvedSpec, n_networks: int | None = None) -> JobCost:
    """The cost of a job of ``n_networks`` realizations of the resolved point (default: all of its own)."""
    spec = rs.spec
    n = len(spec.realizations) if n_networks is None else int(n_networks)
    if spec.arch == "features":  # one feature pass over the subset (shared by the realizations); no steps
        total = flops_per_sample(rs) * spec.n_train
        rate = RATES["cpu2"][spec.arch], RATES["gpu"][spec.arch]
        return JobCost(total, FEATURES_JOB_S + total / rate[0], FEATURES_JOB_S + total / rate[1])
    per_net = flops_per_sample(rs) * rs.budget * min(spec.batch_size, spec.n_train)
    total = per_net * n
    return JobCost(total, total / RATES["cpu2"][spec.arch], total / RATES["gpu"][spec.arch])


def human_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    for unit, div in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= div:
            return f"{s / div:.1f} {unit}"
    return f"{s:.0f} s"
