"""CPU back end: numba kernels for the checkerboard heat-bath sweep (MODEL.md §3), float32, SIMD rows.

- Internal layout ``(layer, sub, xyz, i, j)``: a row of one sublattice is three contiguous float32 runs, so
  each row is updated by loops that LLVM vectorises 8 lanes wide (AVX2): a field pass (in-plane, DMI,
  interlayer and Zeeman terms into a scratch row) and a draw-and-update pass, both branch-free (selects).
- Random numbers from the counter-based splitmix64 of :mod:`moirescale.physics.rng` (the same numbers as the
  numpy and torch back ends), so a sample's result does not depend on batching, threads or update order.
- Few transcendental calls, none of them a libm call: ln and exp are inline Cephes-style float32 polynomials
  (about 1 ulp), the azimuth's cos/sin a quadrant-reduced polynomial (< 4e-7); exp(-2x) is skipped for rows
  whose every site has x > 20 (then the term is exactly 0, as in the reference); at T = 0 a site is H/|H|.
- Parallel over whole samples: :func:`anneal` runs one sample per thread (``prange`` over samples, no barrier
  per sweep) when the batch has at least as many samples as threads, and splits the rows of each colour
  between threads only when it has fewer. ``workers=1`` runs the serial kernel with the GIL released, so
  callers may also run one sample per Python thread (what ``simulate_batch`` does).
- IEEE semantics only (no fastmath: no reassociation, no FMA contraction) and no reductions across sites, so
  the vectorised, scalar, sample- and row-parallel paths give bit-identical results.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from moirescale.physics.rng import GAMMA, INV24, MIX1, MIX2

_F32 = np.float32
_GAMMA = np.uint64(GAMMA)
_GAMMA2 = np.uint64((2 * GAMMA) % (1 << 64))  # the counter step between neighbouring sites of a row
_MIX1 = np.uint64(MIX1)
_MIX2 = np.uint64(MIX2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S40, _S16 = np.uint64(40), np.uint64(16)
_M24 = np.uint64(0xFFFFFF)
_INV24 = _F32(INV24)
_F0, _F1, _F2, _FM1, _FH = _F32(0.0), _F32(1.0), _F32(2.0), _F32(-1.0), _F32(0.5)
_X_TAIL = _F32(20.0)  # above this exp(-2x) < 5e-18 is invisible next to u >= 2^-24: the term is dropped
_TAIL_MARGIN = 20.01  # rows with |H| > 20.01 T everywhere surely have x = |H|/T > 20 after rounding
_X_FLAT = _F32(1e-4)  # below this the heat bath is uniform on the sphere
_TINY = _F32(1e-30)
_BLOCK = 256  # sites per exp-or-not decision of the heat bath (a multiple of the SIMD width)
# azimuth: cos/sin of 2 pi w
_HALFPI = _F32(math.pi / 2.0)
_S3, _S5, _S7 = _F32(-1.0 / 6.0), _F32(1.0 / 120.0), _F32(-1.0 / 5040.0)
_C2, _C4 = _F32(-0.5), _F32(1.0 / 24.0)
_C6, _C8 = _F32(-1.0 / 720.0), _F32(1.0 / 40320.0)
# ln: Cephes logf (mantissa in [sqrt(1/2), sqrt(2)), degree-9 polynomial, ln 2 split in two)
_SQRTH = _F32(0.707106781186547524)
_L0, _L1, _L2 = _F32(7.0376836292e-2), _F32(-1.1514610310e-1), _F32(1.1676998740e-1)
_L3, _L4, _L5 = _F32(-1.2420140846e-1), _F32(1.4249322787e-1), _F32(-1.6668057665e-1)
_L6, _L7, _L8 = _F32(2.0000714765e-1), _F32(-2.4999993993e-1), _F32(3.3333331174e-1)
_LN2HI, _LN2LO = _F32(0.693359375), _F32(-2.12194440e-4)
# exp: Cephes expf (x = k ln 2 + r, |r| <= ln2 / 2, degree-5 polynomial, 2^k by exponent bits)
_LOG2E = _F32(1.44269504088896341)
_E0, _E1, _E2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_E3, _E4, _E5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)

_OPTS = {"cache": True, "error_model": "numpy"}  # numpy error model: no zero-division checks that block SIMD


@intrinsic
def _as_int(typingctx, x):
    """The bits of a float32 as an int32."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _as_float(typingctx, x):
    """The low 32 bits of an integer as a float32."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if x.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif x.bitwidth < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(x), codegen


@njit(inline="always", **_OPTS)
def _log(a):
    """ln a for a normal float32 a > 0 (Cephes logf, about 1 ulp); ln 1 = 0 exactly."""
    bits = _as_int(a)
    e = np.int32((bits >> 23) - 126)
    m = _as_float((bits & 0x7FFFFF) | 0x3F000000)  # a = m 2^e, m in [0.5, 1)
    small = m < _SQRTH
    e = e - np.int32(1) if small else e
    m = (m + m - _F1) if small else (m - _F1)
    z = m * m
    y = (((((((_L0 * m + _L1) * m + _L2) * m + _L3) * m + _L4) * m + _L5) * m + _L6) * m + _L7) * m + _L8
    fe = _F32(e)
    y = y * m * z + _LN2LO * fe - _FH * z
    return m + y + _LN2HI * fe


@njit(inline="always", **_OPTS)
def _exp(x):
    """e^x for float32 x in [-80, 0] (Cephes expf, about 1 ulp)."""
    t = _LOG2E * x + _FH
    k = np.int32(t)
    k = k - 1 if _F32(k) > t else k  # floor
    fk = _F32(k)
    r = x - fk * _LN2HI - fk * _LN2LO
    z = r * r
    y = (((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5) * z + r + _F1
    return y * _as_float((k + 127) << 23)


@njit(inline="always", **_OPTS)
def _cos_sin_turn(w):
    """(cos 2 pi w, sin 2 pi w) for w in [0, 1): reduction to |r| <= pi/4 and Taylor polynomials (< 4e-7)."""
    t = _F32(4.0) * w
    q = np.int32(t + _FH)
    r = (t - _F32(q)) * _HALFPI
    r2 = r * r
    s = r * (_F1 + r2 * (_S3 + r2 * (_S5 + r2 * _S7)))
    c = _F1 + r2 * (_C2 + r2 * (_C4 + r2 * (_C6 + r2 * _C8)))
    # quadrant q: (c, s), (-s, c), (-c, -s), (s, -c), as selects and sign products (no branches)
    odd = (q & 1) == 1
    x0 = s if odd else c
    y0 = c if odd else s
    sgn_c = _F32(1 - 2 * (((q + 1) >> 1) & 1))
    sgn_s = _F32(1 - 2 * ((q >> 1) & 1))
    return sgn_c * x0, sgn_s * y0


@njit(**_OPTS)
def _field_kernel(m0x, m0y, m0z, m1x, m1y, m1z, m2x, m2y, m2z, ox, oy, oz, jv, d, j1, j1l, bz, hx, hy, hz):
    """Local field ``h[t]`` of sites with in-plane neighbours ``m0, m1, m2``, interlayer partner ``o`` and
    coupling ``jv``, all 1-D runs of one length. (Each SIMD loop is a function of its own whose loop starts at
    0: LLVM vectorises it there, not when the loop sits inside another.)"""
    d0x, d0y, d1x, d1y, d2x, d2y = d[0], d[1], d[2], d[3], d[4], d[5]
    for t in range(hx.shape[0]):
        hx[t] = j1 * (m0x[t] + m1x[t] + m2x[t]) + (d0y * m0z[t] + d1y * m1z[t] + d2y * m2z[t]) + jv[t] * ox[t]
        hy[t] = j1 * (m0y[t] + m1y[t] + m2y[t]) - (d0x * m0z[t] + d1x * m1z[t] + d2x * m2z[t]) + jv[t] * oy[t]
        hz[t] = (
            j1l * (m0z[t] + m1z[t] + m2z[t])
            + ((d0x * m0y[t] - d0y * m0x[t]) + (d1x * m1y[t] - d1y * m1x[t]) + (d2x * m2y[t] - d2y * m2x[t]))
            + jv[t] * oz[t]
            + bz
        )


@njit(**_OPTS)
def _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, base, lo, hi, off1, off2):
    """Local field ``h[:, k - base]`` of the sites ``k`` in ``[lo, hi)`` of ``(layer, sub)``, with
    ``k = i n + j`` the flat index in the plane of ``x (2, 2, 3, n^2)``; the in-plane neighbours of the other
    sublattice are ``k``, ``k + off1`` (the other row) and ``k + off2`` (the other column), all in range."""
    a = x[layer, 1 - sub]
    o = x[1 - layer, sub]
    lo1, hi1, lo2, hi2 = lo + off1, hi + off1, lo + off2, hi + off2
    _field_kernel(
        a[0, lo:hi], a[1, lo:hi], a[2, lo:hi],
        a[0, lo1:hi1], a[1, lo1:hi1], a[2, lo1:hi1],
        a[0, lo2:hi2], a[1, lo2:hi2], a[2, lo2:hi2],
        o[0, lo:hi], o[1, lo:hi], o[2, lo:hi],
        jv[lo:hi], d, j1, j1l, bz,
        h[0, lo - base : hi - base], h[1, lo - base : hi - base], h[2, lo - base : hi - base],
    )  # fmt: skip


@njit(inline="always", **_OPTS)
def _row_offsets(n, sub, i):
    """Flat offsets ``(off1, off2, wrap)`` of row ``i``'s neighbours: A(i, j) sees B(i-1, j) and B(i, j-1),
    B(i, j) sees A(i+1, j) and A(i, j+1); ``wrap`` is the offset of the column neighbour of the row's
    wrapping site (A: j = 0, B: j = n-1)."""
    if sub == 0:
        return (-n if i > 0 else n * (n - 1)), -1, n - 1
    return (n if i < n - 1 else -n * (n - 1)), 1, 1 - n


@njit(**_OPTS)
def _field_row(x, jv, d, j1, j1l, bz, layer, sub, i, h, base, n):
    """Local field of the sites of row ``i`` of ``(layer, sub)`` into ``h[:, i n - base + j]``."""
    off1, off2, wrap = _row_offsets(n, sub, i)
    lo = i * n
    if sub == 0:
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, base, lo + 1, lo + n, off1, off2)
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, base, lo, lo + 1, off1, wrap)
    else:
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, base, lo, lo + n - 1, off1, off2)
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, base, lo + n - 1, lo + n, off1, wrap)


@njit(**_OPTS)
def _field_plane(x, jv, d, j1, j1l, bz, layer, sub, h, n):
    """Local field of every site of ``(layer, sub)`` into ``h (3, n^2)``: long runs over the flat plane (few
    remainder iterations), then the n sites whose column neighbour wraps around are redone."""
    nn = n * n
    if sub == 0:  # rows 1..n-1 (their j = 0 sites use a wrong column neighbour, redone below), then row 0
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, 0, n, nn, -n, -1)
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, 0, 1, n, nn - n, -1)
    else:  # rows 0..n-2 (their j = n-1 sites redone below), then row n-1
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, 0, 0, nn - n, n, 1)
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, 0, nn - n, nn - 1, n - nn, 1)
    for i in range(n):
        off1, _, wrap = _row_offsets(n, sub, i)
        k = i * n + (0 if sub == 0 else n - 1)
        _field_run(x, jv, d, j1, j1l, bz, layer, sub, h, 0, k, k + 1, off1, wrap)


@njit(inline="always", **_OPTS)
def _heat_bath_site(hx, hy, hz, sx, sy, sz, z, temp, with_exp):
    """New spin at one site: heat-bath draw in field (hx, hy, hz) from the counter state ``z``; the old spin
    (sx, sy, sz) is kept where the field vanishes."""
    h2 = hx * hx + hy * hy + hz * hz
    ok = h2 >= _TINY
    hn = math.sqrt(h2 if ok else _TINY)
    inv = _F1 / hn
    ux, uy, uz = hx * inv, hy * inv, hz * inv
    # splitmix64 finaliser; two 24-bit uniforms u in (0, 1], w in [0, 1) (via int32: exact, and SIMD-able)
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    z = z ^ (z >> _S31)
    u = _F32(np.int32(z >> _S40) + np.int32(1)) * _INV24
    w = _F32(np.int32((z >> _S16) & _M24)) * _INV24
    # cos(theta) = 1 + ln(u + (1 - u) e^(-2x)) / x, the e^(-2x) term dropped for x > 20
    xx = hn / temp
    if with_exp:
        tail = _F0 if xx > _X_TAIL else _exp(-_F2 * (xx if xx < _X_TAIL else _X_TAIL))
        c = _F1 + _log(u + (_F1 - u) * tail) / xx
    else:
        c = _F1 + _log(u) / xx
    c = (_F2 * u - _F1) if xx < _X_FLAT else c
    c = _FM1 if c < _FM1 else (_F1 if c > _F1 else c)
    s2 = _F1 - c * c
    s = math.sqrt(s2 if s2 > _F0 else _F0)
    cw, sw = _cos_sin_turn(w)
    cp, sp = s * cw, s * sw
    # orthonormal frame b1 = (1 + sg ux^2 a, sg b, -sg ux), b2 = (b, sg + uy^2 a, -uy) (Duff et al. 2017)
    sg = _F1 if uz >= _F0 else _FM1
    a = _FM1 / (sg + uz)
    b = ux * uy * a
    nx = c * ux + cp * (_F1 + sg * ux * ux * a) + sp * b
    ny = c * uy + cp * (sg * b) + sp * (sg + uy * uy * a)
    nz = c * uz - cp * (sg * ux) - sp * uy
    return (nx if ok else sx), (ny if ok else sy), (nz if ok else sz)


@njit(**_OPTS)
def _near_count(hx, hy, hz, thr2):
    """How many sites of the run have |H|^2 <= thr2."""
    near = 0
    for t in range(hx.shape[0]):
        near += 1 if hx[t] * hx[t] + hy[t] * hy[t] + hz[t] * hz[t] <= thr2 else 0
    return near


@njit(**_OPTS)
def _heat_bath_exp(hx, hy, hz, sx, sy, sz, z0, temp):
    """Heat-bath update of a run of sites; site ``t`` draws at the counter state ``z0 + 2 t GAMMA``."""
    for t in range(hx.shape[0]):
        z = z0 + np.uint64(t) * _GAMMA2
        sx[t], sy[t], sz[t] = _heat_bath_site(hx[t], hy[t], hz[t], sx[t], sy[t], sz[t], z, temp, True)


@njit(**_OPTS)
def _heat_bath_tail(hx, hy, hz, sx, sy, sz, z0, temp):
    """:func:`_heat_bath_exp` without computing exp(-2x): the same bits where every site has x > 20."""
    for t in range(hx.shape[0]):
        z = z0 + np.uint64(t) * _GAMMA2
        sx[t], sy[t], sz[t] = _heat_bath_site(hx[t], hy[t], hz[t], sx[t], sy[t], sz[t], z, temp, False)


@njit(**_OPTS)
def _heat_bath(h, sx, sy, sz, z0, temp):
    """Heat-bath update of the spins ``(sx, sy, sz)`` (a row, or a whole plane) in their fields ``h (3, m)``;
    site ``t`` draws at the counter state ``z0 + 2 t GAMMA`` (its site index is ``2 t`` past the first's).
    Blocks whose every site surely has x = |H|/T > 20 skip exp(-2x) (|H| > 20.01 T: safe after rounding)."""
    m = h.shape[1]
    thr = _F32(_TAIL_MARGIN) * temp
    thr2 = thr * thr
    for lo in range(0, m, _BLOCK):
        hi = min(lo + _BLOCK, m)
        hx, hy, hz = h[0, lo:hi], h[1, lo:hi], h[2, lo:hi]
        zb = z0 + np.uint64(lo) * _GAMMA2
        if _near_count(hx, hy, hz, thr2):
            _heat_bath_exp(hx, hy, hz, sx[lo:hi], sy[lo:hi], sz[lo:hi], zb, temp)
        else:
            _heat_bath_tail(hx, hy, hz, sx[lo:hi], sy[lo:hi], sz[lo:hi], zb, temp)


@njit(**_OPTS)
def _align(h, sx, sy, sz):
    """T = 0 update of a row or a plane: n = H / |H| (the old spin where the field vanishes)."""
    m = h.shape[1]
    hx, hy, hz = h[0], h[1], h[2]
    for t in range(m):
        vx, vy, vz = hx[t], hy[t], hz[t]
        h2 = vx * vx + vy * vy + vz * vz
        ok = h2 >= _TINY
        inv = _F1 / math.sqrt(h2 if ok else _TINY)
        sx[t] = vx * inv if ok else sx[t]
        sy[t] = vy * inv if ok else sy[t]
        sz[t] = vz * inv if ok else sz[t]


@njit(inline="always", **_OPTS)
def _stream(key, sweep, n, layer, sub, k):
    """splitmix64 state of the draw of site ``k = i n + j`` of ``(layer, sub)`` in ``sweep``: counter
    ``sweep 4n^2 + ((layer n + i) n + j) 2 + sub`` (rng.py)."""
    ctr = np.uint64(sweep) * np.uint64(4 * n * n) + np.uint64((layer * n * n + k) * 2 + sub)
    return key + ctr * _GAMMA


@njit(inline="always", **_OPTS)
def _signed_dmi(dmi):
    """In-plane DMI components ``(d0x, d0y, d1x, d1y, d2x, d2y)`` for A sites (row 0) and B sites (row 1)."""
    d = np.empty((2, 6), np.float32)
    for k in range(3):
        for c in range(2):
            d[0, 2 * k + c] = dmi[k, c]
            d[1, 2 * k + c] = -dmi[k, c]  # B: m_A x d = -(d x m_A)
    return d


@njit(nogil=True, **_OPTS)
def _anneal_one(x, jp, dmi, j1, lam, bz, key, temps):
    """Anneal one sample ``x (2, 2, 3, n, n)`` in place, serially, a whole sublattice plane per pass."""
    n = x.shape[4]
    nn = n * n
    xf = x.reshape((2, 2, 3, nn))
    jpf = jp.reshape((2, nn))
    h = np.empty((3, nn), np.float32)
    d = _signed_dmi(dmi)
    j1l = j1 + lam
    for k in range(temps.shape[0]):
        temp = temps[k]
        for colour in range(2):
            for layer in range(2):
                sub = (colour + layer) & 1
                _field_plane(xf, jpf[sub], d[sub], j1, j1l, bz, layer, sub, h, n)
                s = xf[layer, sub]
                if temp > _F0:
                    _heat_bath(h, s[0], s[1], s[2], _stream(key, k, n, layer, sub, 0), temp)
                else:
                    _align(h, s[0], s[1], s[2])


@njit(nogil=True, **_OPTS)
def _anneal_serial(xs, jps, dmis, j1, lam, bz, keys, temps):
    """Anneal a batch ``xs (B, 2, 2, 3, n, n)`` in place on the calling thread (GIL released)."""
    for b in range(xs.shape[0]):
        _anneal_one(xs[b], jps[b], dmis[b], j1, lam, bz, keys[b], temps)


@njit(parallel=True, **_OPTS)
def _anneal_samples(xs, jps, dmis, j1, lam, bz, keys, temps):
    """Anneal a batch ``xs (B, 2, 2, 3, n, n)`` in place, one whole sample per thread at a time."""
    for b in prange(xs.shape[0]):
        _anneal_one(xs[b], jps[b], dmis[b], j1, lam, bz, keys[b], temps)


@njit(**_OPTS)
def _update_row(xf, jv, d, j1, j1l, bz, key, temp, sweep, layer, sub, i, h, n):
    """Update row ``i`` of ``(layer, sub)``; ``h (3, n)`` is the row's scratch."""
    _field_row(xf, jv, d, j1, j1l, bz, layer, sub, i, h, i * n, n)
    lo, hi = i * n, i * n + n
    s = xf[layer, sub]
    if temp > _F0:
        _heat_bath(h, s[0, lo:hi], s[1, lo:hi], s[2, lo:hi], _stream(key, sweep, n, layer, sub, lo), temp)
    else:
        _align(h, s[0, lo:hi], s[1, lo:hi], s[2, lo:hi])


@njit(parallel=True, **_OPTS)
def _anneal_rows(x, jp, dmi, j1, lam, bz, key, temps):
    """Anneal one sample ``x (2, 2, 3, n, n)`` in place, the rows of each colour shared between threads."""
    n = x.shape[4]
    xf = x.reshape((2, 2, 3, n * n))
    jpf = jp.reshape((2, n * n))
    h = np.empty((2 * n, 3, n), np.float32)  # scratch per (layer, row)
    d = _signed_dmi(dmi)
    j1l = j1 + lam
    for k in range(temps.shape[0]):
        for colour in range(2):
            for r in prange(2 * n):
                layer = r // n
                sub = (colour + layer) & 1
                i = r - layer * n
                _update_row(xf, jpf[sub], d[sub], j1, j1l, bz, key, temps[k], k, layer, sub, i, h[r], n)


def thread_count(workers: int | None) -> int:
    """The numba threads ``workers`` asks for (None: all), within numba's limit."""
    limit = numba.config.NUMBA_NUM_THREADS
    return limit if workers is None else max(1, min(int(workers), limit))


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
    workers : numba threads (default: all). 1 runs on the calling thread with the GIL released (no numba
        thread pool), so several Python threads may call it at once. With more, a batch of at least
        ``workers`` samples runs one sample per thread, a smaller one row-parallel. The result is the same
        bits whatever ``workers`` is.

    Returns
    -------
    ``xs``, annealed.
    """
    nthreads = thread_count(workers)
    args = (_F32(j1), _F32(lam), _F32(bz))
    temps = np.ascontiguousarray(temps, dtype=np.float32)
    if nthreads == 1:
        _anneal_serial(xs, jps, dmis, *args, keys, temps)
        return xs
    old = numba.get_num_threads()
    numba.set_num_threads(nthreads)
    try:
        if xs.shape[0] >= nthreads:
            _anneal_samples(xs, jps, dmis, *args, keys, temps)
        else:
            for b in range(xs.shape[0]):
                _anneal_rows(xs[b], jps[b], dmis[b], *args, keys[b], temps)
    finally:
        numba.set_num_threads(old)
    return xs
