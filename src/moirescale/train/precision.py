"""Numeric precision of training: the one owner of what ``precision: fp32 | bf16 | tf32`` means.

Mixed precision as the field does it (PyTorch AMP): matmuls and convolutions run in the compute dtype
(bf16 under ``torch.autocast``; the hand-written FCN ensemble casts its operands itself), while master
weights, gradients as the optimiser sees them, the loss, the optimiser state and the final test MSE stay fp32.

| precision | matmuls / convolutions                         | where                                  |
|-----------|------------------------------------------------|----------------------------------------|
| ``fp32``  | fp32                                           | everywhere (the default)               |
| ``bf16``  | bf16 operands, fp32 accumulation (oneDNN/cuBLAS)| CPUs with AVX-512 BF16 or AMX, GPUs    |
| ``tf32``  | fp32 storage, TF32 tensor-core matmuls         | CUDA only (Ampere and newer)           |

Images are held in memory as the store's int16 codes (the narrowest type that is exact for what the store
holds: the images use ~65 000 distinct codes, see docs/training.md) and decoded per batch by
:func:`decode_images`; a bf16 run holds them as bf16 instead (:func:`images_for`), the values its matmuls
read anyway, so it decodes nothing per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from moirescale.data.store import IMAGE_SCALE
from moirescale.errors import UserError

PRECISIONS = ("fp32", "bf16", "tf32")


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown precision, or ``tf32`` on a device without TF32 (one clear UserError)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise UserError("precision tf32 applies to CUDA devices only; use fp32 or bf16 on a CPU")


def compute_dtype(precision: str, weights: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype matmul and convolution operands are cast to (``weights``: the master weights' dtype, which
    fp32 and tf32 compute in)."""
    return torch.bfloat16 if precision == "bf16" else weights


def autocast(precision: str, device: torch.device | str) -> Any:
    """The context a forward pass runs in: ``torch.autocast`` for bf16, nothing for fp32 and tf32."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@contextmanager
def matmul_mode(precision: str) -> Iterator[None]:
    """TF32 tensor-core matmuls and convolutions while training in ``tf32`` (restored afterwards)."""
    if precision != "tf32":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def decode_images(
    x: torch.Tensor, dtype: torch.dtype = torch.float32, buf: torch.Tensor | None = None
) -> torch.Tensor:
    """Images in [-1, 1] as ``dtype``: int16 store codes (:func:`moirescale.data.store.encode_images`) are
    decoded exactly as the store decodes them (into fp32, then cast), float images are only cast (no copy
    when already ``dtype``).

    ``buf``: a flat fp32 tensor of at least ``x.numel()`` elements to decode into (a training loop reuses
    one: a fresh batch-sized tensor each step costs more in page faults than the decoding itself).
    """
    if x.dtype != torch.int16:
        return x.to(dtype)
    n = x.numel()
    if buf is not None and buf.dtype == torch.float32 and buf.numel() >= n:
        out = buf[:n].view(x.shape)
    else:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    # copy + in-place scale: 2.5x faster on a CPU than one mixed-dtype multiply, and bit-identical to it
    return out.copy_(x).mul_(1.0 / IMAGE_SCALE).to(dtype)


def images_for(precision: str) -> torch.dtype | None:
    """The dtype training images are held in for ``precision``: bf16 for bf16 (what its matmuls read, so no
    decoding per step), None (keep the store's exact int16 codes, decoded per batch) otherwise."""
    return torch.bfloat16 if precision == "bf16" else None
