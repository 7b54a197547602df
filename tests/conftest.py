"""Shared fixtures. ``tiny_store``: a small real dataset store, made once per test session; ``data``: small
learnable in-memory training data (:func:`synthetic.synth`).

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


@pytest.fixture(scope="module")
def data():
    """256 / 64 / 64 images of 1 x 8 x 8 px that are a smooth function of their labels (a learnable task)."""
    from moirescale.train import TrainData
    from synthetic import synth

    (xa, ya), (xb, yb), (xc, yc) = synth(256, 0), synth(64, 1), synth(64, 2)
    return TrainData(xa, ya, xb, yb, xc, yc)
