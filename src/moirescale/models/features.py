"""Physics-feature baseline: translation-invariant features of each image channel -> one linear layer.

The features (per channel, image ``s`` in [-1, 1] of H x W pixels):

| name | meaning |
|---|---|
| ``mean`` | mean magnetisation <s> |
| ``abs``, ``sq`` | <abs(s)> and <s^2> (how saturated the domains are) |
| ``up``, ``down``, ``mid`` | pixel fractions with s > 0.5, s < -0.5 and abs(s) <= 0.5 (walls, grey pixels) |
| ``walls`` | domain-wall density: fraction of neighbouring pixel pairs (rows, columns) of opposite sign |
| ``grad`` | mean abs difference of neighbouring pixels |
| ``k_mean`` | spectral centroid of s - <s> (cycles per image side) |
| ``p1`` .. ``pK`` | radially averaged power spectrum of s - <s>: variance in the rings abs(k) ~ 1, ..., K |

K = min(H, W) // 2. Every feature is a mean over the image or a function of the power spectrum, so none
depends on where the image's origin lies (exactly for the pixel statistics, up to edge effects for the
spectrum). The moiré period sets the spectral peak (theta), the AFM area the pixel fractions (J), the
labyrinth texture the wall density and the high-k power (D).

:class:`FeatureRegressor` is an ``nn.Module``: a fixed :class:`PhysicsFeatures` extractor (no trainable
parameters) and a ``Linear`` head, so ``count_params`` gives the number of fitted coefficients (N_M) and a
checkpoint loads and predicts like any network. It is not trained by gradient descent:
:mod:`moirescale.train.features` fits the head in closed form (ridge regression) and writes the solution in.
"""

from __future__ import annotations

import torch
from torch import nn

PIXEL_FEATURES = ("mean", "abs", "sq", "up", "down", "mid", "walls", "grad", "k_mean")


def n_rings(h: int, w: int) -> int:
    return max(1, min(h, w) // 2)


def feature_names(in_shape: tuple[int, ...]) -> list[str]:
    """Names of the features of a (C, H, W) image, channel by channel (``c0.mean``, ..., ``c1.p12``)."""
    c, h, w = (int(v) for v in in_shape)
    per = [*PIXEL_FEATURES, *(f"p{k}" for k in range(1, n_rings(h, w) + 1))]
    return [f"c{i}.{name}" for i in range(c) for name in per]


class PhysicsFeatures(nn.Module):
    """(N, C, H, W) images -> (N, C * F) features (see the module docstring); no trainable parameters."""

    def __init__(self, in_shape: tuple[int, ...]):
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        self.in_shape = (c, h, w)
        k_max = n_rings(h, w)
        ky = torch.fft.fftfreq(h, dtype=torch.float64) * min(h, w)
        kx = torch.fft.rfftfreq(w, dtype=torch.float64) * min(h, w)
        k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)  # cycles per image side, (H, W//2+1)
        # rfft2 keeps half the plane: columns 0 < kx < Nyquist stand for two conjugate frequencies
        mult = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
        mult[0] = 1.0
        if w % 2 == 0:
            mult[-1] = 1.0
        weight = (mult[None, :] / float(h * w) ** 2).expand(h, -1)
        ring = torch.round(k).flatten()[:, None] == torch.arange(1, k_max + 1, dtype=torch.float64)[None, :]
        rings = ring.double() * weight.flatten()[:, None]  # (H * (W//2+1), K)
        # ring sums of |F|^2 as a matrix product: works on any device, and on the meta device (FLOP counts)
        self.register_buffer("rings", rings.float(), persistent=False)
        self.register_buffer("k_rings", torch.arange(1, k_max + 1, dtype=torch.float32), persistent=False)
        self.n_features = c * (len(PIXEL_FEATURES) - 1 + 1 + k_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        s = x.float()
        mean = s.mean(dim=(2, 3))
        pix = [
            mean,
            s.abs().mean(dim=(2, 3)),
            (s * s).mean(dim=(2, 3)),
            (s > 0.5).float().mean(dim=(2, 3)),
            (s < -0.5).float().mean(dim=(2, 3)),
            (s.abs() <= 0.5).float().mean(dim=(2, 3)),
        ]
        dx, dy = s[..., :, 1:] * s[..., :, :-1], s[..., 1:, :] * s[..., :-1, :]
        pix.append(0.5 * ((dx < 0).float().mean(dim=(2, 3)) + (dy < 0).float().mean(dim=(2, 3))))
        gx, gy = (s[..., :, 1:] - s[..., :, :-1]).abs(), (s[..., 1:, :] - s[..., :-1, :]).abs()
        pix.append(0.5 * (gx.mean(dim=(2, 3)) + gy.mean(dim=(2, 3))))
        f = torch.fft.rfft2(s - mean[..., None, None])
        power = (f.real**2 + f.imag**2).flatten(2) @ self.rings  # (N, C, K): variance per ring
        k_mean = (power @ self.k_rings) / (power.sum(-1) + 1e-12)
        pix.append(k_mean)
        feats = torch.cat([torch.stack(pix, dim=-1), power], dim=-1)  # (N, C, F)
        return feats.reshape(n, c * feats.shape[-1])


class FeatureRegressor(nn.Module):
    """Physics features -> ``Linear(F, n_outputs)``; the head is fitted in closed form (train.features)."""

    def __init__(self, in_shape: tuple[int, ...], n_outputs: int):
        super().__init__()
        self.features = PhysicsFeatures(in_shape)
        self.head = nn.Linear(self.features.n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def create_features(in_shape: tuple[int, ...], n_outputs: int) -> FeatureRegressor:
    return FeatureRegressor(tuple(int(v) for v in in_shape), int(n_outputs))
