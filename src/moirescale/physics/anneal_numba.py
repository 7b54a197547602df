"""CPU back end: one fused numba kernel for the checkerboard heat-bath sweep (MODEL.md §3), float32.

- Field, random draw and update of a site in one pass; internal layout ``(layer, sub, xyz, i, j)``.
- Random numbers from the counter-based splitmix64 of :mod:`moirescale.physics.rng` (the same numbers as the
  numpy and torch back ends), so a sample's result does not depend on batching or threads.
- No wasted transcendentals: at T = 0 a site is just n = H/|H|; in the heat bath exp(-2x) is skipped when it
  cannot change the float32 result (x > 20); azimuth by a polynomial cos/sin (no libm call).
- Parallel over samples with ``prange``; a batch smaller than the thread count is parallel over rows instead.
- IEEE semantics only (fastmath flags that allow reassociation or FMA contraction are off) so that the
  sample- and row-parallel paths give bit-identical results.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from moirescale.physics.rng import GAMMA, INV24, MIX1, MIX2

_GAMMA = np.uint64(GAMMA)
_MIX1 = np.uint64(MIX1)
_MIX2 = np.uint64(MIX2)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S40 = np.uint64(40)
_S16 = np.uint64(16)
_M24 = np.uint64(0xFFFFFF)
_ONE = np.uint64(1)
_INV24 = np.float32(INV24)
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F2 = np.float32(2.0)
_FM1 = np.float32(-1.0)
_X_TAIL = np.float32(20.0)  # above this exp(-2x) < 5e-18 is invisible next to u >= 2^-24
_X_FLAT = np.float32(1e-4)  # below this the heat bath is uniform on the sphere
_TINY = np.float32(1e-30)
_HALFPI = np.float32(math.pi / 2.0)
_S3, _S5, _S7 = np.float32(-1.0 / 6.0), np.float32(1.0 / 120.0), np.float32(-1.0 / 5040.0)
_C2, _C4 = np.float32(-0.5), np.float32(1.0 / 24.0)
_C6, _C8 = np.float32(-1.0 / 720.0), np.float32(1.0 / 40320.0)

_FLAGS = {"nnan", "ninf", "nsz"}  # no reassoc/contract: results must not depend on the inlining context


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _cos_sin_turn(w):
    """(cos 2 pi w, sin 2 pi w) for w in [0, 1): reduction to |r| <= pi/4 and Taylor polynomials.

    |error| < 4e-7 (a few float32 ulp), and cheaper than libm's cosf + sinf.
    """
    t = np.float32(4.0) * w
    q = np.int32(t + np.float32(0.5))
    r = (t - np.float32(q)) * _HALFPI
    r2 = r * r
    s = r * (_F1 + r2 * (_S3 + r2 * (_S5 + r2 * _S7)))
    c = _F1 + r2 * (_C2 + r2 * (_C4 + r2 * (_C6 + r2 * _C8)))
    # quadrant q: (c, s), (-s, c), (-c, -s), (s, -c), written as selects and sign products (no branches:
    # q is random, a mispredicted branch costs more than the polynomials)
    odd = (q & 1) == 1
    x0 = s if odd else c
    y0 = c if odd else s
    sgn_c = np.float32(1 - 2 * (((q + 1) >> 1) & 1))
    sgn_s = np.float32(1 - 2 * ((q >> 1) & 1))
    return sgn_c * x0, sgn_s * y0


@njit(cache=True, fastmath=_FLAGS, inline="always")
def _update_rows(x, jp, dmi, j1, lam, bz, key, temp, sweep, colour, i_lo, i_hi):
    """Update the sites of one colour in rows ``[i_lo, i_hi)`` of one sample ``x (2, 2, 3, n, n)``."""
    n = x.shape[4]
    nsite = np.uint64(4 * n * n)
    base = key + np.uint64(sweep) * nsite * _GAMMA
    for layer in range(2):
        sub = (colour + layer) & 1
        oth = 1 - sub
        step = 1 if sub == 0 else -1
        sgn = _F1 if sub == 0 else _FM1
        d0x = sgn * dmi[0, 0]
        d0y = sgn * dmi[0, 1]
        d1x = sgn * dmi[1, 0]
        d1y = sgn * dmi[1, 1]
        d2x = sgn * dmi[2, 0]
        d2y = sgn * dmi[2, 1]
        for i in range(i_lo, i_hi):
            i1 = (i - step) % n  # A(i,j) sees B(i-1,j): roll by +1; B sees A(i+1,j)
            for j in range(n):
                # A(i,j) sees B(i,j-1), B(i,j) sees A(i,j+1); a compare instead of an integer division
                j2 = j - step
                if j2 < 0:
                    j2 = n - 1
                elif j2 == n:
                    j2 = 0
                # three in-plane neighbours m0 = (i,j), m1 = (i1,j), m2 = (i,j2) of the other sublattice
                ax = x[layer, oth, 0, i, j]
                ay = x[layer, oth, 1, i, j]
                az = x[layer, oth, 2, i, j]
                bx = x[layer, oth, 0, i1, j]
                by = x[layer, oth, 1, i1, j]
                bz_ = x[layer, oth, 2, i1, j]
                cx = x[layer, oth, 0, i, j2]
                cy = x[layer, oth, 1, i, j2]
                cz = x[layer, oth, 2, i, j2]
                sx = ax + bx + cx
                sy = ay + by + cy
                sz = az + bz_ + cz
                jv = jp[sub, i, j]
                hx = j1 * sx + (d0y * az + d1y * bz_ + d2y * cz) + jv * x[1 - layer, sub, 0, i, j]
                hy = j1 * sy - (d0x * az + d1x * bz_ + d2x * cz) + jv * x[1 - layer, sub, 1, i, j]
                hz = (
                    (j1 + lam) * sz
                    + ((d0x * ay - d0y * ax) + (d1x * by - d1y * bx) + (d2x * cy - d2y * cx))
                    + jv * x[1 - layer, sub, 2, i, j]
                    + bz
                )
                h2 = hx * hx + hy * hy + hz * hz
                if h2 < _TINY:
                    continue
                hn = math.sqrt(h2)
                inv = _F1 / hn
                ux = hx * inv
                uy = hy * inv
                uz = hz * inv
                if temp > _F0:
                    site = np.uint64(((layer * n + i) * n + j) * 2 + sub)
                    z = base + site * _GAMMA
                    z = (z ^ (z >> _S30)) * _MIX1
                    z = (z ^ (z >> _S27)) * _MIX2
                    z = z ^ (z >> _S31)
                    # via int64: a signed conversion is one instruction, an unsigned one is not
                    u = np.float32(np.int64((z >> _S40) + _ONE)) * _INV24
                    w = np.float32(np.int64((z >> _S16) & _M24)) * _INV24
                    xx = hn / temp
                    if xx > _X_TAIL:
                        c = _F1 + math.log(u) * (temp * inv)  # = ln(u) / x without a second division
                    elif xx < _X_FLAT:
                        c = _F2 * u - _F1
                    else:
                        c = _F1 + math.log(u + (_F1 - u) * math.exp(-_F2 * xx)) / xx
                    if c < _FM1:
                        c = _FM1
                    s = math.sqrt(max(_F1 - c * c, _F0))
                    cw, sw = _cos_sin_turn(w)
                    cp = s * cw
                    sp = s * sw
                    sg = _F1 if uz >= _F0 else _FM1
                    a = _FM1 / (sg + uz)
                    b = ux * uy * a
                    # frame b1 = (1 + sg ux^2 a, sg b, -sg ux), b2 = (b, sg + uy^2 a, -uy)
                    ux, uy, uz = (
                        c * ux + cp * (_F1 + sg * ux * ux * a) + sp * b,
                        c * uy + cp * (sg * b) + sp * (sg + uy * uy * a),
                        c * uz - cp * (sg * ux) - sp * uy,
                    )
                x[layer, sub, 0, i, j] = ux
                x[layer, sub, 1, i, j] = uy
                x[layer, sub, 2, i, j] = uz


@njit(cache=True, fastmath=_FLAGS)
def _anneal_serial(x, jp, dmi, j1, lam, bz, key, temps):
    n = x.shape[4]
    for k in range(temps.shape[0]):
        for colour in range(2):
            _update_rows(x, jp, dmi, j1, lam, bz, key, temps[k], k, colour, 0, n)


@njit(cache=True, fastmath=_FLAGS, parallel=True)
def _anneal_samples(xs, jps, dmis, j1, lam, bz, keys, temps):
    """Anneal a batch ``xs (B, 2, 2, 3, n, n)`` in place, one sample per thread at a time."""
    for b in prange(xs.shape[0]):
        _anneal_serial(xs[b], jps[b], dmis[b], j1, lam, bz, keys[b], temps)


@njit(cache=True, fastmath=_FLAGS, parallel=True)
def _anneal_rows(x, jp, dmi, j1, lam, bz, key, temps):
    """Anneal one sample ``x (2, 2, 3, n, n)`` in place, its rows shared between threads."""
    n = x.shape[4]
    for k in range(temps.shape[0]):
        for colour in range(2):
            for i in prange(n):
                _update_rows(x, jp, dmi, j1, lam, bz, key, temps[k], k, colour, i, i + 1)


def anneal(
    xs: np.ndarray,
    jps: np.ndarray,
    dmis: np.ndarray,
    j1: float,
    lam: float,
    bz: float,
    keys: np.ndarray,
    temps: np.ndarray,
    workers: int | None = None,
) -> np.ndarray:
    """Anneal a batch in place and return it.

    Parameters
    ----------
    xs : float32 ``(B, 2, 2, 3, n, n)`` start spins (SoA layout), overwritten.
    jps : float32 ``(B, 2, n, n)`` S^2 J_perp per sublattice.
    dmis : float32 ``(B, 3, 3)`` S^2 D (z x e_k).
    j1, lam, bz : S^2 J1, S^2 lambda, (3/2) B.
    keys : uint64 ``(B,)`` heat-bath stream keys.
    temps : float32 ``(n_sweeps,)``.
    workers : numba threads (default: all).
    """
    nthreads = (
        numba.config.NUMBA_NUM_THREADS
        if workers is None
        else max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS))
    )
    old = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        args = (np.float32(j1), np.float32(lam), np.float32(bz))
        temps = np.ascontiguousarray(temps, dtype=np.float32)
        if xs.shape[0] >= nthreads or nthreads == 1:
            _anneal_samples(xs, jps, dmis, *args, keys, temps)
        else:
            for b in range(xs.shape[0]):
                _anneal_rows(xs[b], jps[b], dmis[b], *args, keys[b], temps)
    finally:
        numba.set_num_threads(old)
    return xs
