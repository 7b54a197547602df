"""Dataset variants (MODEL.md §7): image origin, shared start, net/afm channels, J_perp shift mode.

Each key is part of the store's identity; a variant store generates, verifies and resumes like the default.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from moirescale.data.config import config_hash, load_config, resolved_dict, validate_config, variant_of
from moirescale.data.generate import generate
from moirescale.data.store import open_store, verify_store
from moirescale.data.torch_data import channel_positions, load_arrays
from moirescale.errors import UserError
from moirescale.physics import AnnealProtocol, ImageSpec, JperpSpec, simulate_batch
from moirescale.physics.jperp import F_MIN, jperp_landscape
from moirescale.physics.lattice import cell_size
from moirescale.physics.render import channel_maps
from test_data_generate import TINY, cli, store_bytes

QUICK = AnnealProtocol(n_anneal=40, n_zero=20)
SMALL = ImageSpec(size_px=24, fov_nm=38.4, channels=("top", "bottom", "net", "afm"))


def afm_fraction(spins: np.ndarray) -> float:
    """Fraction of vertical pairs whose layers point opposite ways (S_z^t S_z^b < 0)."""
    return float((spins[0, ..., 2] * spins[1, ..., 2] < 0).mean())


# ------------------------------------------------------------------------------------------ channels
def test_net_is_zero_where_layers_are_opposite_and_afm_is_their_product():
    n = 6
    spins = np.zeros((2, n, n, 2, 3), np.float32)
    spins[..., 2] = 1.0
    spins[1, :3, :, :, 2] = -1.0  # the first three rows: bottom layer flipped, an AFM domain
    maps = channel_maps(spins)
    np.testing.assert_array_equal(maps["net"][:3], 0.0)
    np.testing.assert_array_equal(maps["net"][3:], 1.0)
    np.testing.assert_array_equal(maps["afm"][:3], -1.0)
    np.testing.assert_array_equal(maps["afm"][3:], 1.0)


def test_rendered_net_channel_is_the_mean_of_the_layers():
    s = simulate_batch([2.0], [0.6], [0.4], [5], backend="numba", protocol=QUICK, image=SMALL)[0]
    top, bottom, net, afm = s["image"]
    np.testing.assert_allclose(net, 0.5 * (top + bottom), atol=1e-6)
    assert np.all(np.abs(afm) <= 1.0) and afm.min() < 0  # this sample has AFM domains


def test_channel_names_select_and_order():
    avail = ["top", "bottom", "net", "afm"]
    assert channel_positions(avail, "top") == [0]
    assert channel_positions(avail, "both") == [0, 1]
    assert channel_positions(avail, "net,top") == [2, 0]
    for bad in ("middle", "top,top", "", "top,,net"):
        with pytest.raises(UserError):
            channel_positions(avail, bad)
    with pytest.raises(UserError, match="holds top, bottom"):
        channel_positions(["top", "bottom"], "net")


# ---------------------------------------------------------------------------------------- origin, start
def test_fixed_origin_shared_start_images_depend_only_on_labels():
    spec = ImageSpec(size_px=24, fov_nm=38.4, channels=("top", "net"), origin="fixed")
    proto = AnnealProtocol(n_anneal=40, n_zero=20, start="shared")
    a, b = simulate_batch([1.8, 1.8], [0.5, 0.5], [0.3, 0.3], [11, 999], backend="numba", protocol=proto,
                          image=spec)
    assert a["image"].tobytes() == b["image"].tobytes()
    # the default variant: the same labels with other seeds give other images
    c, d = simulate_batch([1.8, 1.8], [0.5, 0.5], [0.3, 0.3], [11, 999], backend="numba", protocol=QUICK,
                          image=SMALL)
    assert c["image"].tobytes() != d["image"].tobytes()


def test_fixed_origin_alone_keeps_the_seeded_anneal():
    spec = ImageSpec(size_px=24, fov_nm=38.4, channels=("top",), origin="fixed")
    a, b = simulate_batch([1.8, 1.8], [0.5, 0.5], [0.3, 0.3], [11, 999], backend="numba", protocol=QUICK,
                          image=spec)
    assert not np.array_equal(a["spins"], b["spins"])  # seeded start: different anneals


def test_shared_start_is_the_same_on_numba_and_torch():
    proto = AnnealProtocol(n_anneal=10, n_zero=5, start="shared")
    a = simulate_batch([2.0], [0.6], [0.3], [3], backend="numba", protocol=proto, image=SMALL)[0]
    b = simulate_batch([2.0], [0.6], [0.3], [4], backend="torch", protocol=proto, image=SMALL)[0]
    np.testing.assert_allclose(a["spins"], b["spins"], atol=2e-3)


# ------------------------------------------------------------------------------------------------ jperp
def test_jperp_modes_agree_at_the_reference_depth_and_keep_min_at_minus_J():
    n, L0 = cell_size(2.0, 1)
    np.testing.assert_allclose(jperp_landscape(n, L0, -F_MIN, "scale"),
                               jperp_landscape(n, L0, -F_MIN, "shift"))
    for J in (0.2, 0.6, 1.0):
        for mode in ("scale", "shift"):
            assert jperp_landscape(n, L0, J, mode).min() == pytest.approx(-J, abs=0.02)
    # shift: the AFM-coupled area (J_perp < 0) grows with J; scale: it does not move
    frac = {m: [(jperp_landscape(n, L0, J, m) < 0).mean() for J in (0.3, 0.6, 0.9)]
            for m in ("scale", "shift")}
    assert frac["scale"][0] == frac["scale"][1] == frac["scale"][2]
    assert frac["shift"][0] < frac["shift"][1] < frac["shift"][2]


def test_shift_mode_afm_area_rises_with_J_at_fixed_theta_and_D():
    Js = [0.3, 0.5, 0.7, 0.9]
    out = simulate_batch([1.75] * 4, Js, [0.6] * 4, [1, 1, 1, 1], backend="numba",
                         protocol=AnnealProtocol(n_anneal=60, n_zero=30), jperp=JperpSpec("shift"),
                         image=ImageSpec(size_px=8, fov_nm=12.8, channels=("top",)))
    area = [afm_fraction(s["spins"]) for s in out]
    assert all(a < b for a, b in zip(area, area[1:], strict=False)), area


def test_bad_variant_values_are_refused():
    with pytest.raises(UserError, match="origin"):
        ImageSpec(origin="centre").validate()
    with pytest.raises(UserError, match="start"):
        AnnealProtocol(start="same").validate()
    with pytest.raises(UserError, match="jperp"):
        JperpSpec("add").validate()
    with pytest.raises(UserError, match="channels"):
        ImageSpec(channels=("top", "top")).validate()
    for raw, where in [({"jperp": {"mode": "add"}}, "jperp"), ({"jperp": {"depth": 1}}, "jperp.depth"),
                       ({"image": {"origin": 0}}, "image"), ({"protocol": {"start": "x"}}, "protocol")]:
        with pytest.raises(UserError, match=f"^c.yaml: {where}"):
            validate_config(raw, "c.yaml")


# ------------------------------------------------------------------------------------------ identity
def test_variant_keys_are_part_of_the_identity_and_defaults_keep_old_hashes():
    base, _ = load_config(TINY)
    resolved = resolved_dict(base)
    # at their defaults the variant keys are not written, so a store from before the variants keeps its hash
    assert "jperp" not in resolved
    assert "origin" not in resolved["image"] and "start" not in resolved["protocol"]
    assert variant_of(resolved) == {"origin": "random", "start": "seeded", "jperp": "scale",
                                    "channels": "top,bottom"}
    hashes = {config_hash(resolved)}
    for key, value in [("image.origin", "fixed"), ("protocol.start", "shared"), ("jperp.mode", "shift"),
                       ("image.channels", ["top", "bottom", "net"])]:
        cfg, _ = load_config(TINY, {key: value})
        hashes.add(config_hash(resolved_dict(cfg)))
    assert len(hashes) == 5


def test_variant_store_generates_verifies_resumes_and_trains(tmp_path):
    overrides = {"image.origin": "fixed", "protocol.start": "shared", "jperp.mode": "shift",
                 "image.channels": ["top", "bottom", "net", "afm"], "splits.train": 64, "splits.val": 16,
                 "splits.test": 16, "protocol.n_anneal": 20, "protocol.n_zero": 10}
    cfg, _ = load_config(TINY, overrides)
    whole = generate(cfg, tmp_path / "whole", progress=False)
    assert verify_store(whole) == []
    store = open_store(whole)
    assert store.manifest["image_channels"] == ["top", "bottom", "net", "afm"]
    assert variant_of(store.manifest["config"]) == {"origin": "fixed", "start": "shared", "jperp": "shift",
                                                    "channels": "top,bottom,net,afm"}
    x, _ = load_arrays(store, "train", [0, 1], "net,afm")
    full, _ = load_arrays(store, "train", [0, 1], "top,bottom,net,afm")
    np.testing.assert_array_equal(x, full[:, 2:])
    # resume: drop the last shards and the manifest's record of them, regenerate, same bytes
    part = tmp_path / "part"
    generate(cfg, part, progress=False)
    for p in sorted(part.glob("test-*.h5")):
        p.unlink()
    generate(cfg, part, progress=False)
    assert store_bytes(part) == store_bytes(whole)
    # in shift mode the AFM area follows J over the store's samples
    imgs, labels = store.read("train", channels=[3])
    afm_area = (imgs[:, 0] < 0).mean(axis=(1, 2))
    assert spearmanr(afm_area, labels[:, 1]).statistic > 0.5
    # train on the net channel by name; a channel the store lacks is one clear error
    r = cli("train", "--data", whole, "--out", tmp_path / "run", "--model", "fcn", "--n-train", "32",
            "--target", "D", "--channels", "net", "--max-epochs", "2")
    assert r.returncode == 0, r.stderr
    default_store = tmp_path / "plain"
    plain, _ = load_config(TINY, {"splits.train": 8, "splits.val": 4, "splits.test": 4,
                                  "protocol.n_anneal": 4, "protocol.n_zero": 2})
    generate(plain, default_store, progress=False)
    r = cli("train", "--data", default_store, "--out", tmp_path / "run2", "--model", "fcn", "--n-train", "8",
            "--channels", "net")
    assert r.returncode == 2 and "not in the store" in r.stderr and "Traceback" not in r.stderr
