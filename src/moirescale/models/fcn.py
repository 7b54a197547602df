"""Fully connected regressor: flatten -> n_layers hidden layers of `width` ReLU -> outputs (the FCN)."""

from __future__ import annotations

import math

import torch
from torch import nn


class FCN(nn.Module):
    """Flatten the image, then ``n_layers`` x (Linear -> ReLU) of ``width`` neurons, then a linear head.

    Parameter names (``layers.<i>.weight``, ``head.weight``) are what the ensemble trainer stacks.
    """

    def __init__(self, in_features: int, n_outputs: int, n_layers: int = 3, width: int = 16):
        super().__init__()
        dims = [in_features] + [width] * n_layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.head = nn.Linear(dims[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.head(h)


def linear_param_count(n_in: int, n_out: int) -> int:
    """Weights and biases of one ``nn.Linear(n_in, n_out)``."""
    return n_in * n_out + n_out


def fcn_param_count(in_features: int, n_outputs: int, n_layers: int, width: int) -> int:
    """Closed form of N_M for :class:`FCN`, the one rule (estimates, benchmarks and tests ask it):
    in*w + w  +  (n_l-1)(w*w + w)  +  w*o + o."""
    return (linear_param_count(in_features, width) + (n_layers - 1) * linear_param_count(width, width)
            + linear_param_count(width, n_outputs))


def create_fcn(in_shape: tuple[int, ...], n_outputs: int, n_layers: int = 3, width: int = 16) -> FCN:
    from moirescale.errors import UserError

    if int(n_layers) < 1 or int(width) < 1:
        raise UserError(f"fcn needs n_layers >= 1 and width >= 1, got n_layers={n_layers}, width={width}")
    return FCN(math.prod(in_shape), n_outputs, int(n_layers), int(width))
