"""Randomness, all derived from the one integer seed of a sample.

- Start state and image origin: numpy ``PCG64`` streams ``default_rng([seed, 0])`` and
  ``default_rng([seed, 1])`` (same on every back end, so all back ends start from the identical state).
- Heat-bath draws: a counter-based generator, splitmix64 evaluated at position ``ctr`` of the stream of the
  sample key: ``z = key + ctr * 0x9E3779B97F4A7C15``, then the splitmix64 finaliser. The counter of a site
  update is ``sweep * 4 n^2 + site`` with ``site = ((layer n + i) n + j) 2 + sublattice``, so each draw
  depends only on (seed, sweep, site): results do not depend on the batch composition, the thread count or the
  order of updates, and numpy, numba and torch produce the same numbers. 64 bits per update give two 24-bit
  uniforms: ``u`` in (0, 1] (polar angle) and ``w`` in [0, 1) (azimuth).
"""

from __future__ import annotations

import numpy as np

from moirescale.errors import UserError

GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
KEY_SALT = 0x6D6F697265736361  # "moiresca": separates the key stream from plain splitmix64(seed)
INV24 = np.float32(1.0 / (1 << 24))
MAX_SEED = (1 << 63) - 1
# protocol.start = shared: every sample's start state and heat-bath stream come from this one seed.
SHARED_START_SEED = 0x5348415245  # "SHARE"


def check_seed(seed: object) -> int:
    """Return the seed as an int in [0, 2^63) or raise UserError."""
    try:
        s = int(seed)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"seed must be an integer in [0, 2^63), got {seed!r}") from None
    if s != seed or not 0 <= s <= MAX_SEED:
        raise UserError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    return s


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def sample_key(seed: int) -> np.uint64:
    """The 64-bit key of a sample's heat-bath stream."""
    with np.errstate(over="ignore"):
        return np.uint64(_mix(np.uint64(seed) + np.uint64(KEY_SALT)))


def draw(key: np.uint64, ctr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two float32 uniforms ``(u in (0, 1], w in [0, 1))`` at counters ``ctr`` of the stream ``key``."""
    with np.errstate(over="ignore"):
        z = _mix(np.uint64(key) + np.asarray(ctr).astype(np.uint64) * np.uint64(GAMMA))
    u = ((z >> np.uint64(40)) + np.uint64(1)).astype(np.float32) * INV24
    w = ((z >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float32) * INV24
    return u, w


def site_index(n: int) -> np.ndarray:
    """Counter offset of every site within a sweep, int64 ``(2, n, n, 2)``."""
    return np.arange(4 * n * n, dtype=np.int64).reshape(2, n, n, 2)


def initial_spins(n: int, seed: int, noise: float) -> np.ndarray:
    """Ferromagnetic +z start plus ``noise`` times a standard Gaussian vector, renormalised, float32."""
    g = np.random.default_rng([seed, 0]).standard_normal((2, n, n, 2, 3))
    s = noise * g
    s[..., 2] += 1.0
    s /= np.linalg.norm(s, axis=-1, keepdims=True)
    return s.astype(np.float32)


def start_seed(seed: int, start: str) -> int:
    """The seed of a sample's start state and heat-bath stream: its own (``seeded``) or the shared one."""
    return SHARED_START_SEED if start == "shared" else seed


def image_origin(n: int, seed: int, origin: str = "random") -> tuple[float, float]:
    """Origin offset ``(u0, v0)`` of the image in unit cells: uniform over the periodic cell (``random``,
    from the sample's seed) or ``(0, 0)`` (``fixed``)."""
    if origin == "fixed":
        return 0.0, 0.0
    u0, v0 = np.random.default_rng([seed, 1]).uniform(0.0, float(n), size=2)
    return float(u0), float(v0)
