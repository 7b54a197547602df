"""The model registry: ``MODELS``, ``create_model(name, in_shape, n_outputs, **kw)``, ``model_options`` and
``count_params`` (the paper's N_M). The names are exported by :mod:`moirescale.models`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from moirescale.errors import UserError
from moirescale.models.fcn import create_fcn
from moirescale.models.features import create_features
from moirescale.models.resnet import create_resnet18
from moirescale.models.vit import create_vit

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn": create_fcn,
    "resnet18": create_resnet18,
    "vit": create_vit,
    "features": create_features,  # not trained by gradient descent: see moirescale.train.features
}


_GIVEN = ("in_shape", "n_outputs")  # the arguments every factory takes first, filled by create_model


def model_options(name: str) -> dict[str, Any]:
    """The keyword options of a model and their defaults (every factory argument but ``in_shape`` and
    ``n_outputs``, which :func:`create_model` passes itself)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in _GIVEN}


def create_model(name: str, in_shape: tuple[int, ...], n_outputs: int, **kw: Any) -> nn.Module:
    """Build a freshly initialised regressor (uses torch's global RNG: seed it first for reproducibility).

    Parameters
    ----------
    name : "fcn", "resnet18", "vit" or "features".
    in_shape : (C, H, W) of one image.
    n_outputs : number of regressed labels (1 for one target, 3 for all).
    **kw : the model's knobs (see :func:`model_options`).
    """
    allowed = model_options(name)
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise UserError(f"model {name!r} has no option(s) {', '.join(bad)}; it takes {', '.join(allowed)}")
    in_shape = tuple(int(s) for s in in_shape)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise UserError(f"image shape must be (C, H, W) with positive sizes, got {in_shape}")
    if int(n_outputs) < 1:
        raise UserError(f"n_outputs must be >= 1, got {n_outputs}")
    try:
        return MODELS[name](in_shape, int(n_outputs), **kw)
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad options for model {name!r}: {exc}") from exc


def count_params(model: nn.Module) -> int:
    """Trainable parameters (the paper's N_M)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
