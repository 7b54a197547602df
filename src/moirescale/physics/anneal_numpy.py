"""Reference back end: the checkerboard heat-bath sweep of MODEL.md §3 in plain numpy (float32).

The sweep itself is :mod:`moirescale.physics.heatbath` (the same code the torch back end runs), here on numpy
arrays with the numpy counter RNG of :mod:`moirescale.physics.rng`. Slow but short: the test oracle for the
numba kernel and the numpy baseline of the benchmark.
"""

from __future__ import annotations

import numpy as np

from moirescale.physics import heatbath, rng


def anneal(
    xs: np.ndarray,
    jps: np.ndarray,
    dmis: np.ndarray,
    j1: float,
    lam: float,
    bz: float,
    keys: np.ndarray,
    temps: np.ndarray,
) -> np.ndarray:
    """Anneal a batch (same arguments and layout as :func:`moirescale.physics.anneal_numba.anneal`); returns a
    new float32 array ``(B, 2, 2, 3, n, n)``."""
    x = np.array(xs, dtype=np.float32)  # a copy: the sweep works in place
    key = np.asarray(keys, dtype=np.uint64)[:, None, None]  # one stream per sample
    # 1 + log(...)/x may overflow to +inf for a vanishing field before the clip: intended, not worth a warning
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        heatbath.anneal(
            x,
            np.asarray(jps, dtype=np.float32),
            np.asarray(dmis, dtype=np.float32),
            float(j1),
            float(lam),
            float(bz),
            np.asarray(temps, dtype=np.float32).tolist(),
            lambda ctr: rng.draw(key, ctr),
        )
    return x
