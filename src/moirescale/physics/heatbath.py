"""The checkerboard heat-bath sweep of MODEL.md §3, written once against the array API standard.

The same functions run on numpy arrays (the reference back end :mod:`moirescale.physics.anneal_numpy`, and
the float64 local fields of :func:`moirescale.physics.energy.local_fields`) and on torch tensors on any device
(the batched back end :mod:`moirescale.physics.anneal_torch`): ``array_api_compat.array_namespace`` picks the
namespace of the input, so one implementation serves both. The numba back end keeps its own fused kernel
(:mod:`moirescale.physics.anneal_numba`) and is tested equal to this one.

Layout (see :mod:`moirescale.physics.layout`), always with a leading batch axis ``B``: spins
``x (B, layer, sub, xyz, n, n)``, interlayer couplings ``jp (B, sub, n, n)``, DMI vectors ``dmi (B, 3, 3)``,
fields ``(B, xyz, n, n)``. Coefficients are those of
:func:`moirescale.physics.energy.couplings` (S^2 folded in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

Array = Any  # a numpy array or a torch tensor (anything array_api_compat knows)
# the uniforms (u, w) at the given int64 counters of each sample's stream, shape (B, n, n) or (n, n)
Draw = Callable[[Array], tuple[Array, Array]]


def _clip(xp: Any, x: Array, lo: float | None, hi: float | None) -> Array:
    """``clip(x, lo, hi)`` in the dtype of ``x``.

    On numpy arrays numpy's own clip: array-api-compat's clip for numpy copies through boolean masks, ~5x
    slower on these small arrays (the reference lost ~15 % to it).
    """
    if isinstance(x, np.ndarray):
        return np.clip(x, lo, hi)
    return xp.clip(x, min=lo, max=hi)


def group_field(
    x: Array, jp: Array, dmi: Array, j1: float, lam: float, bz: float, layer: int, sub: int
) -> Array:
    """Local field (meV) on sublattice ``sub`` of ``layer`` for the whole batch: ``(B, 3, n, n)``.

    ``H = j1 sum m + lam sum m_z z + DMI + jp * (same sublattice, other layer) + bz z``, summed over the three
    neighbours ``m`` on the other sublattice of the same layer; same dtype as ``x``.
    """
    xp = array_namespace(x, jp, dmi)
    nb = x[:, layer, 1 - sub]  # the other sublattice of the same layer, (B, 3, n, n)
    step = 1 if sub == 0 else -1  # A(i,j) sees B(i-1,j), B(i,j-1); B(i,j) sees A(i+1,j), A(i,j+1)
    ms = (nb, xp.roll(nb, step, axis=2), xp.roll(nb, step, axis=3))
    tot = ms[0] + ms[1] + ms[2]
    h = j1 * tot
    h[:, 2] += lam * tot[:, 2]
    sgn = 1.0 if sub == 0 else -1.0  # A: d x m_B ; B: m_A x d = -(d x m_A)
    d = sgn * dmi[:, :, :, None, None]  # (B, 3, 3, 1, 1): broadcasts over the sites
    for k, m in enumerate(ms):
        dx, dy = d[:, k, 0], d[:, k, 1]
        h[:, 0] += dy * m[:, 2]
        h[:, 1] -= dx * m[:, 2]
        h[:, 2] += dx * m[:, 1] - dy * m[:, 0]
    h += jp[:, sub, None] * x[:, 1 - layer, sub]
    h[:, 2] += bz
    return h


def heat_bath(h: Array, temp: float, u: Array | None, w: Array | None) -> Array:
    """New unit vectors ``(B, 3, n, n)`` drawn from exp(n.H / T) in the fields ``h (B, 3, n, n)``.

    ``u`` in (0, 1] sets the polar angle about H, ``w`` in [0, 1) the azimuth (both ``(B, n, n)`` or
    ``(n, n)``); at ``temp <= 0`` they are unused and n = H/|H|. Same dtype as ``h``.
    """
    xp = array_namespace(h)
    # explicit sum of squares: a strided norm over the xyz axis is ~20x slower in torch on the CPU
    hn = xp.sqrt(h[:, 0] * h[:, 0] + h[:, 1] * h[:, 1] + h[:, 2] * h[:, 2])
    hn = _clip(xp, hn, 1e-30, None)  # no 0/0 for a zero field
    hh = h / hn[:, None]
    if temp <= 0:
        return hh
    x = hn / temp
    # for x > 20 the e^(-2x) term is dropped: < 5e-18, invisible next to u >= 2^-24 in float32; the clip
    # keeps exp away from subnormal results, which are ~10x slower on the CPU
    tail = xp.where(x > 20, 0.0, xp.exp(-2 * _clip(xp, x, None, 20.0)))
    c = 1 + xp.log(u + (1 - u) * tail) / x
    c = xp.where(x < 1e-4, 2 * u - 1, c)  # the x -> 0 limit: uniform on the sphere
    c = _clip(xp, c, -1.0, 1.0)
    s = xp.sqrt(1 - c * c)
    phi = (2 * math.pi) * w
    cphi, sphi = xp.cos(phi), xp.sin(phi)
    # orthonormal frame (b1, b2) perpendicular to hh (Duff et al. 2017, branch-free)
    hx, hy, hz = hh[:, 0], hh[:, 1], hh[:, 2]
    # +-1 in h's dtype (numpy would make a where of two Python floats float64)
    sign = xp.astype(xp.where(hz >= 0, 1.0, -1.0), h.dtype, copy=False)
    a = -1 / (sign + hz)
    b = hx * hy * a
    # n = c hh + s (cos(phi) b1 + sin(phi) b2) with
    # b1 = (1 + sign hx^2 a, sign b, -sign hx), b2 = (b, sign + hy^2 a, -hy)
    return xp.stack(
        [
            c * hx + s * (cphi * (1 + sign * hx * hx * a) + sphi * b),
            c * hy + s * (cphi * sign * b + sphi * (sign + hy * hy * a)),
            c * hz - s * (cphi * sign * hx + sphi * hy),
        ],
        axis=1,
    )


def anneal(
    x: Array, jp: Array, dmi: Array, j1: float, lam: float, bz: float, temps: Sequence[float], draw: Draw
) -> Array:
    """Anneal the batch ``x`` in place, one checkerboard sweep per temperature; returns ``x``.

    ``draw(ctr)`` gives the uniforms at the counters ``ctr = sweep * 4 n^2 + site`` of each sample's stream
    (:mod:`moirescale.physics.rng`), an int64 ``(n, n)`` array of ``x``'s namespace and device.
    """
    xp = array_namespace(x)
    n = x.shape[-1]
    # site = ((layer n + i) n + j) 2 + sublattice, as rng.site_index
    sites = xp.reshape(xp.arange(4 * n * n, dtype=xp.int64, device=device(x)), (2, n, n, 2))
    for k, temp in enumerate(temps):
        for colour in (0, 1):
            # colour = (layer + sublattice) mod 2: no bond joins two sites of one colour, so both layers'
            # groups of a colour update at once; the fields of both are taken before either is updated
            groups = [(layer, (colour + layer) % 2) for layer in (0, 1)]
            fields = [group_field(x, jp, dmi, j1, lam, bz, layer, sub) for layer, sub in groups]
            for (layer, sub), h in zip(groups, fields, strict=True):
                u, w = draw(sites[layer, :, :, sub] + k * 4 * n * n) if temp > 0 else (None, None)
                x[:, layer, sub] = heat_bath(h, temp, u, w)
    return x
