"""Noise functions: statistics, clipping, flip fraction, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from moirescale.errors import UserError
from moirescale.use.noise import add_gaussian, apply_noise, flip_pixels, noise_seed, noise_settings


def _domains(n: int = 8, size: int = 64, seed: int = 0) -> np.ndarray:
    # A domain-like image: mostly +-1 with some intermediate values (like supersampled domain walls).
    rng = np.random.default_rng(seed)
    x = np.sign(rng.normal(size=(n, 1, size, size))).astype(np.float32)
    x[:, :, ::7] *= 0.3
    return x


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2, 0.3])
def test_gaussian_statistics_on_unclipped_values(sigma):
    x = np.zeros((4, 1, 100, 100), np.float32)  # at 0 nothing is clipped for sigma <= 0.3 (|z| < 3.3 sigma)
    y = add_gaussian(x, sigma, seed=1)
    d = (y - x).ravel()
    assert abs(d.mean()) < 3 * sigma / np.sqrt(d.size)
    assert d.std() == pytest.approx(sigma, rel=0.02)


def test_gaussian_clips_to_the_valid_range_and_keeps_input():
    x = _domains()
    before = x.copy()
    y = add_gaussian(x, 0.3, seed=2)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert np.array_equal(x, before)  # the input is not modified
    # At +-1 half the draws push outward and are clipped back: about half the saturated pixels stay at +-1.
    sat = np.abs(x) == 1
    frac = np.mean(np.abs(y[sat]) == 1.0)
    assert 0.45 < frac < 0.55


def test_gaussian_zero_sigma_is_identity():
    x = _domains()
    assert np.array_equal(add_gaussian(x, 0.0, seed=3), x)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.3])
def test_flip_fraction_and_sign(p):
    x = _domains(n=4, size=100)
    y = flip_pixels(x, p, seed=4)
    flipped = y != x
    # binomial: 40 000 draws, 5 standard deviations
    n = x.size
    assert abs(flipped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    assert np.array_equal(y[flipped], -x[flipped])  # a flip is a sign change, magnitude kept
    assert np.array_equal(y[~flipped], x[~flipped])


def test_flip_extremes():
    x = _domains()
    assert np.array_equal(flip_pixels(x, 0.0, seed=0), x)
    assert np.array_equal(flip_pixels(x, 1.0, seed=0), -x)


@pytest.mark.parametrize("kind,level", [("gaussian", 0.2), ("flip", 0.1)])
def test_deterministic_with_seed(kind, level):
    x = _domains()
    a = apply_noise(x, kind, level, seed=5)
    b = apply_noise(x, kind, level, seed=5)
    c = apply_noise(x, kind, level, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_seed_separates_settings():
    seeds = {noise_seed(0, k, v) for k, v in noise_settings()}
    assert len(seeds) == len(noise_settings())
    assert noise_seed(0, "gaussian", 0.1) == noise_seed(0, "gaussian", 0.1)


def test_settings_and_bad_levels():
    s = noise_settings((0.1,), (0.05,))
    assert s == [("gaussian", 0.0), ("gaussian", 0.1), ("flip", 0.0), ("flip", 0.05)]
    assert noise_settings((0.2, 0.0, 0.1), ()) == [("gaussian", 0.0), ("gaussian", 0.1), ("gaussian", 0.2)]
    with pytest.raises(UserError):
        noise_settings((-0.1,), ())
    with pytest.raises(UserError):
        noise_settings((), (1.5,))
    with pytest.raises(UserError):
        apply_noise(_domains(), "salt", 0.1)
    with pytest.raises(UserError):
        add_gaussian(_domains(), -1.0)
