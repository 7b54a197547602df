"""Intrinsic dimension of a data set (images flattened to vectors), with bootstrap intervals.

The estimators are scikit-dimension's (``skdim.id``), not written here:

* ``twonn``: TwoNN (Facco et al., Sci. Rep. 7, 12140 (2017)): the ratio mu = r2/r1 of each point's second to
  first nearest-neighbour distance is Pareto(d)-distributed on a d-dimensional manifold; d is the slope of the
  straight-line fit to its empirical distribution (10 % largest ratios discarded, the paper's heuristic).
* ``mle``: the Levina-Bickel maximum-likelihood estimate from each point's 20 nearest neighbours, combined
  over points as MacKay and Ghahramani propose (the inverse of the mean inverse).

Both read only each point's nearest-neighbour distances. Those are computed once on the whole sample (exact
Euclidean k-NN, scikit-learn), and the interval is a bootstrap over points: B replicates resample the points
(with their neighbour distances) with replacement and refit the estimator on them; the interval is the
percentile interval of the replicates. Resampling the points rather than re-running the neighbour search keeps
a replicate free of the zero distances that duplicated points would create, and keeps the neighbour scale of
the full sample (both estimators drift with the sample size, so a smaller resample would bias the interval).
What it leaves out: a point's neighbours are shared with other points, so the per-point statistics are not
quite independent; the interval is a little narrower than the estimator's full sampling spread.

Exact duplicates (two equal images, e.g. uniform ferromagnets) have no dimension to offer and r1 = 0 breaks
both estimators, so they are merged before anything else; :class:`DimensionResult` says how many remained.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moirescale.errors import UserError

ESTIMATORS = ("twonn", "mle")
MLE_NEIGHBOURS = 20  # skdim's default neighbourhood for the pointwise MLE
TWONN_DISCARD = 0.1  # fraction of the largest ratios TwoNN leaves out (Facco et al.)
MIN_POINTS = 2 * MLE_NEIGHBOURS  # fewer distinct points than this give no meaningful estimate
DEFAULT_N = 2000  # images per estimate: ~1 min on 2 cores at 48 px, enough for d up to ~10


@dataclass(frozen=True)
class Estimate:
    """One estimator's intrinsic dimension ``d`` with its bootstrap percentile interval [lo, hi]."""

    d: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float]:
        return {"d": self.d, "lo": self.lo, "hi": self.hi}


@dataclass
class DimensionResult:
    """Estimates of one data set: ``n`` distinct points used (of ``n_input``), ``n_features`` per point."""

    n: int
    n_input: int
    n_features: int
    n_boot: int
    level: float
    seed: int
    estimators: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """``{"n": N, "estimators": {"twonn": {"d", "lo", "hi"}, ...}, ...}`` (the ``--json`` document)."""
        return {
            "n": self.n,
            "n_input": self.n_input,
            "n_features": self.n_features,
            "n_boot": self.n_boot,
            "level": self.level,
            "seed": self.seed,
            "estimators": {k: v.to_dict() for k, v in self.estimators.items()},
        }


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of each point's k nearest other points, sorted by distance."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x)
    return nn.kneighbors(return_distance=True)


def _twonn(dists: np.ndarray) -> float:
    import skdim

    r = np.ascontiguousarray(dists[:, :2])
    return float(skdim.id.TwoNN(discard_fraction=TWONN_DISCARD, dist=True).fit(r).dimension_)


def _mle(dists: np.ndarray, idx: np.ndarray) -> float:
    import skdim

    est = skdim.id.MLE().fit(np.zeros((len(dists), 2)), precomputed_knn_arrays=(dists, idx))
    return float(est.dimension_)


def estimate_dimension(
    x: np.ndarray,
    estimators: tuple[str, ...] | list[str] = ESTIMATORS,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> DimensionResult:
    """Intrinsic dimension of the rows of ``x`` by each estimator, with a bootstrap interval.

    Parameters
    ----------
    x : (N, features) array, one point per row (e.g. flattened images).
    estimators : names from :data:`ESTIMATORS`.
    n_boot : bootstrap replicates (resampled points) for the interval.
    level : coverage of the percentile interval.
    seed : seed of the bootstrap.

    Returns
    -------
    DimensionResult with one :class:`Estimate` per estimator.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserError(f"data for the dimension estimate must be (N, features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UserError("data for the dimension estimate contain NaN or inf")
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad or not estimators:
        raise UserError(f"unknown estimator(s) {bad or '(none)'}; choose from {', '.join(ESTIMATORS)}")
    if n_boot < 20:
        raise UserError(f"need at least 20 bootstrap replicates, got {n_boot}")
    if not 0.5 <= level < 1:
        raise UserError(f"level must be in [0.5, 1), got {level}")
    n_input = len(x)
    pts = np.unique(x.astype(np.float64, copy=False), axis=0)
    if len(pts) < MIN_POINTS:
        raise UserError(
            f"only {len(pts)} distinct points (of {n_input}); the dimension estimate needs {MIN_POINTS}"
        )
    dists, idx = _neighbours(pts, MLE_NEIGHBOURS)
    fns = {"twonn": lambda d, i: _twonn(d), "mle": _mle}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(pts), len(pts)) for _ in range(n_boot)]
    q = (1 - level) / 2
    out = DimensionResult(len(pts), n_input, x.shape[1], n_boot, level, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in estimators:
            fn = fns[name]
            d = fn(dists, idx)
            boot = np.array([fn(dists[s], idx[s]) for s in draws])
            boot = boot[np.isfinite(boot)]
            if not np.isfinite(d) or boot.size < n_boot // 2:
                raise UserError(f"the {name} estimate is not finite on these data (degenerate distances?)")
            lo, hi = np.quantile(boot, [q, 1 - q])
            out.estimators[name] = Estimate(d, float(min(lo, d)), float(max(hi, d)))
    return out


def store_dimension(
    store_path: str | os.PathLike[str],
    split: str = "train",
    channels: str = "top",
    n: int | None = None,
    n_boot: int = 200,
    seed: int = 0,
    estimators: tuple[str, ...] | list[str] = ESTIMATORS,
) -> tuple[DimensionResult, dict[str, object]]:
    """:func:`estimate_dimension` on ``n`` images of a store split: a seeded random subset, by default
    :data:`DEFAULT_N` images (or the whole split if it is smaller).

    Returns the result and a dict saying what was measured (store, split, channels, image shape).
    """
    from moirescale.data.store import open_store
    from moirescale.data.torch_data import load_arrays

    store = open_store(store_path)
    try:
        size = store.split_len(store._check_split(split))
        if n is None:
            n = min(size, DEFAULT_N)
        if n < MIN_POINTS:
            raise UserError(f"--n {n}: the dimension estimate needs at least {MIN_POINTS} images")
        if n > size:
            raise UserError(f"--n {n} is larger than the {split} split of {store_path} ({size} images)")
        idx = np.sort(np.random.default_rng(seed).choice(size, n, replace=False))
        x, _ = load_arrays(store, split, idx, channels)
    finally:
        store.close()
    res = estimate_dimension(x.reshape(len(x), -1), estimators, n_boot=n_boot, seed=seed)
    meta = {"store": str(Path(store_path)), "split": split, "channels": channels}
    meta["image_shape"] = list(x.shape[1:])
    return res, meta
