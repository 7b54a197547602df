"""Reading images for `predict` (npy, pictures) and resampling them to the training grid (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from moirescale.errors import UserError
from moirescale.use.predict import (
    InputImage,
    parse_store_ref,
    read_image,
    store_nm_per_px,
    to_training_grid,
)


def _stripes(size: int = 100, period_px: float = 20.0) -> np.ndarray:
    x = np.arange(size)
    return np.sign(np.sin(2 * np.pi * (x + 0.5) / period_px))[None, :].repeat(size, 0).astype(np.float32)


def test_npy_2d_and_3d(tmp_path):
    a = _stripes()
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", np.stack([a, -a]))
    x = read_image(tmp_path / "a.npy").image
    assert x.shape == (1, 100, 100) and np.array_equal(x[0], a)
    y = read_image(tmp_path / "b.npy").image
    assert y.shape == (2, 100, 100) and np.array_equal(y[1], -a)


def test_npy_small_overshoot_is_clipped(tmp_path):
    a = _stripes() * (1 + 5e-4)
    np.save(tmp_path / "a.npy", a)
    x = read_image(tmp_path / "a.npy").image
    assert x.max() == 1.0 and x.min() == -1.0


@pytest.mark.parametrize(
    "arr,msg",
    [
        (np.zeros((3, 4, 5, 5)), "shape"),
        (np.zeros((3, 50, 50)), "shape"),
        (np.zeros(10), "shape"),
        (np.full((50, 50), 2.0), "[-1, 1]"),
        (np.full((50, 50), np.nan), "NaN"),
        (np.zeros((4, 4)), "too small"),
        (np.array(["a", "b"]), "numeric"),
    ],
)
def test_npy_bad(tmp_path, arr, msg):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(UserError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        read_image(tmp_path / "bad.npy")


def test_unreadable_files(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    (tmp_path / "x.png").write_bytes(b"not a png")
    (tmp_path / "x.txt").write_text("hello")
    for name in ("x.npy", "x.png", "x.txt", "missing.npy"):
        with pytest.raises(UserError):
            read_image(tmp_path / name)


def test_grey_png_linear(tmp_path):
    a = np.array([[0, 255], [51, 204]], dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    Image.fromarray(a).save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png").image
    assert x.shape == (1, 16, 16)
    assert x[0, 0, 0] == pytest.approx(-1) and x[0, 0, 15] == pytest.approx(1)
    assert x[0, 15, 0] == pytest.approx(51 / 127.5 - 1)


def test_rgb_diverging_png_inverts_bwr(tmp_path):
    import matplotlib

    truth = np.linspace(-1, 1, 256, dtype=np.float32)[None, :].repeat(16, 0)
    rgba = matplotlib.colormaps["bwr"]((truth + 1) / 2)
    Image.fromarray((rgba * 255).round().astype(np.uint8)).save(tmp_path / "c.png")
    x = read_image(tmp_path / "c.png").image
    assert x.shape == (1, 16, 256)
    assert np.abs(x[0] - truth).max() < 0.02  # 8-bit colour quantisation
    # pure red and pure blue
    assert x[0, 0, -1] == pytest.approx(1.0) and x[0, 0, 0] == pytest.approx(-1.0)


def test_rgb_grey_picture_is_treated_as_grey(tmp_path):
    g = np.array([[0, 255]], dtype=np.uint8).repeat(16, 0).repeat(8, 1)
    Image.fromarray(np.stack([g, g, g], -1)).save(tmp_path / "rgb_grey.png")
    x = read_image(tmp_path / "rgb_grey.png").image
    assert x[0, 0, 0] == pytest.approx(-1) and x[0, 0, -1] == pytest.approx(1)


def test_store_ref_syntax():
    assert parse_store_ref("data/demo::test:12") == ("data/demo", "test", 12)
    assert parse_store_ref("a.npy") is None
    for bad in ("d::test", "d::bogus:1", "d::test:x", "::test:1", "d::test:-1"):
        with pytest.raises(UserError):
            parse_store_ref(bad)


def test_manifest_pixel_size():
    assert store_nm_per_px({"image": {"size_px": 100, "fov_nm": 160.0}}) == pytest.approx(1.6)
    assert store_nm_per_px({"config": {"image": {"size_px": 50, "fov_nm": 160.0}}}) == pytest.approx(3.2)
    with pytest.raises(UserError):
        store_nm_per_px({"image_shape": [1, 100, 100]})


def test_same_grid_is_identity():
    a = _stripes()[None]
    x, notes = to_training_grid(InputImage(a, nm_per_px=1.6), (100, 100), 1.6)
    assert np.array_equal(x, a) and notes == []


def test_finer_pixels_are_downsampled_keeping_the_period_in_nm():
    # 200 px at 0.8 nm/px with a 16 nm period -> 100 px at 1.6 nm/px with a period of 10 px.
    a = _stripes(200, period_px=20.0)[None]
    x, notes = to_training_grid(InputImage(a, nm_per_px=0.8), (100, 100), 1.6)
    assert x.shape == (1, 100, 100) and notes == []
    spec = np.abs(np.fft.rfft(x[0].mean(0)))
    assert int(np.argmax(spec[1:]) + 1) == 10  # 100 px / 10 px per period


def test_larger_field_is_centre_cropped_and_smaller_is_mirror_padded():
    a = np.random.default_rng(0).uniform(-1, 1, (1, 140, 140)).astype(np.float32)
    x, notes = to_training_grid(InputImage(a, nm_per_px=1.6), (100, 100), 1.6)
    assert np.array_equal(x, a[:, 20:120, 20:120]) and notes == []
    b = a[:, :60, :60]
    y, notes = to_training_grid(InputImage(b, nm_per_px=1.6), (100, 100), 1.6)
    assert y.shape == (1, 100, 100) and np.array_equal(y[:, 20:80, 20:80], b)
    assert np.array_equal(y[:, 19, 20:80], b[:, 0])  # the mirror of the first row
    assert any("padded" in n for n in notes)


def test_unknown_pixel_size_spans_the_field_of_view():
    a = _stripes(50, period_px=10.0)[None]
    x, notes = to_training_grid(InputImage(a), (100, 100), 1.6)
    assert x.shape == (1, 100, 100)
    assert any("nm-per-px" in n for n in notes)
    assert x.min() >= -1 and x.max() <= 1
