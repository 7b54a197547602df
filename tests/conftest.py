"""Shared fixtures. ``tiny_store``: a small real dataset store, made once per test session.

Set ``MOIRESCALE_TEST_STORE=/path/to/store`` to use a prebuilt store instead (it must be complete and valid).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "dataset-tiny.yaml"
# 128 train / 32 val / 32 test samples of 2 x 32 x 32 px, 6 shards of 32 (configs/dataset-tiny.yaml).


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a complete tiny store generated with the real simulator from configs/dataset-tiny.yaml."""
    prebuilt = os.environ.get("MOIRESCALE_TEST_STORE")
    if prebuilt:
        from moirescale.data.store import open_store

        open_store(prebuilt)  # fail early and clearly if the env var points at something else
        return Path(prebuilt)
    from moirescale.data.config import load_config
    from moirescale.data.generate import generate

    cfg, _ = load_config(TINY_CONFIG)
    return generate(cfg, tmp_path_factory.mktemp("tiny_store") / "store", progress=False)
