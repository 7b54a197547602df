"""Models: the registry ``create_model(name, in_shape, n_outputs, **kw)``, ``count_params`` (the paper's N_M),
the closed-form parameter counts, and :func:`model_label`, the one display name of a model.

| name       | knobs (defaults)                                        |
|------------|---------------------------------------------------------|
| ``fcn``      | n_layers=3, width=16                                    |
| ``resnet18`` | width=64 (stage channels w, 2w, 4w, 8w)                 |
| ``vit``      | n_layers=6, width=192, heads=3, patch=10, mlp_ratio=4   |
| ``features`` | none: physics features + a linear head fitted by ridge (a baseline) |

Names other than :func:`model_label` and :data:`ARCH_NAMES` are imported lazily (PEP 562), so that the
analysis, which names models in its figures and tables, does not pay for torch.
"""

from __future__ import annotations

import math
from typing import Any

from moirescale._lazy import lazy_exports

# Display names of the architectures (figures, tables, reports).
ARCH_NAMES = {"fcn": "FCN", "resnet18": "ResNet-18", "vit": "ViT", "features": "features + ridge"}


def _known(v: Any) -> bool:
    try:
        return v is not None and not math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def model_label(arch: str, n_layers: Any = None, width: Any = None, **_: Any) -> str:
    """A model's display name, the same everywhere: ``FCN 3x16`` (n_l x n_n), ``ViT 6x192`` (depth x width),
    ``ResNet-18 w64``, ``features + ridge``. Other knobs (a results row's columns) are ignored; an unknown
    (None or NaN) knob is left out."""
    name = ARCH_NAMES.get(arch, arch)
    if arch == "features":
        return name
    if _known(n_layers) and _known(width):
        return f"{name} {int(n_layers)}x{int(width)}"
    return f"{name} w{int(width)}" if _known(width) else name


_EXPORTS = {
    "FCN": "fcn",
    "fcn_param_count": "fcn",
    "FeatureRegressor": "features",
    "resnet18_param_count": "resnet",
    "vit_param_count": "vit",
    "MODELS": "registry",
    "count_params": "registry",
    "create_model": "registry",
    "model_options": "registry",
}
__all__ = sorted([*_EXPORTS, "ARCH_NAMES", "model_label"])

__getattr__, __dir__ = lazy_exports("moirescale.models", _EXPORTS, globals())
