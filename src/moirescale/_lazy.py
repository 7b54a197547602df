"""Lazy package exports (PEP 562): ``moirescale --help`` must not pay for torch, scipy or pandas."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__``/``__dir__`` importing ``name`` from ``package.<exports[name]>`` on first use
    (from ``exports[name]`` itself when that is a full module name, ``moirescale.<...>``)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            mod = exports[name] if exports[name].startswith("moirescale.") else f"{package}.{exports[name]}"
            return getattr(importlib.import_module(mod), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
