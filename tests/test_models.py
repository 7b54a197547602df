"""Model registry: shapes, parameter counts vs hand counts and an independent implementation, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from moirescale.errors import UserError
from moirescale.models import (
    count_params,
    create_model,
    fcn_param_count,
    model_options,
    resnet18_param_count,
    vit_param_count,
)


def test_fcn_counts_match_the_paper_range():
    # MODEL.md §4: 2 x 100 x 100 input, n_l = 3 -> ~8.0e4 params at n_n = 4, ~1.08e7 at n_n = 512.
    small = create_model("fcn", (2, 100, 100), 1, n_layers=3, width=4)
    big = create_model("fcn", (2, 100, 100), 1, n_layers=3, width=512)
    assert count_params(small) == 20000 * 4 + 4 + 2 * (4 * 4 + 4) + 4 + 1 == 80049
    assert count_params(big) == fcn_param_count(20000, 1, 3, 512)
    assert round(count_params(big) / 1e7, 2) == 1.08
    assert count_params(create_model("fcn", (1, 8, 8), 3, n_layers=1, width=5)) == 64 * 5 + 5 + 5 * 3 + 3


@pytest.mark.parametrize("width", [8, 16, 64])
@pytest.mark.parametrize("chans", [1, 2])
def test_resnet_count_matches_hand_count(width, chans):
    m = create_model("resnet18", (chans, 100, 100), 3, width=width)
    assert count_params(m) == resnet18_param_count(chans, 3, width)


def test_resnet_width64_is_torchvision_resnet18():
    ours = create_model("resnet18", (2, 64, 64), 1)
    ref = torchvision.models.resnet18(num_classes=1)
    ref.conv1 = torch.nn.Conv2d(2, 64, 7, 2, 3, bias=False)
    assert count_params(ours) == count_params(ref)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]


def test_vit_count_matches_hand_count_and_shapes():
    m = create_model("vit", (1, 100, 100), 1, n_layers=2, width=64, heads=2, patch=10)
    assert count_params(m) == vit_param_count((1, 100, 100), 1, n_layers=2, width=64, patch=10)
    with torch.no_grad():
        assert m(torch.zeros(3, 1, 100, 100)).shape == (3, 1)


@pytest.mark.parametrize(
    ("name", "kw"),
    [("fcn", {"width": 4}), ("resnet18", {"width": 8}), ("vit", {"width": 32, "heads": 2, "patch": 8})],
)
def test_forward_shapes(name, kw):
    m = create_model(name, (2, 32, 32), 3, **kw)
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(4, 2, 32, 32)).shape == (4, 3)


def test_width_knobs_span_two_decades():
    res = [resnet18_param_count(1, 1, w) for w in (8, 128)]
    vit = [vit_param_count((1, 100, 100), 1, 6, w) for w in (32, 384)]
    assert math.log10(res[1] / res[0]) >= 2
    assert math.log10(vit[1] / vit[0]) >= 2


def test_init_is_seeded():
    torch.manual_seed(3)
    a = create_model("fcn", (1, 8, 8), 1)
    torch.manual_seed(3)
    b = create_model("fcn", (1, 8, 8), 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(
    ("name", "shape", "kw", "msg"),
    [
        ("mlp", (1, 32, 32), {}, "unknown model"),
        ("fcn", (1, 32, 32), {"depth": 3}, "no option"),
        ("fcn", (1, 32, 32), {"width": 0}, "width"),
        ("vit", (1, 100, 100), {"patch": 7}, "divide"),
        ("vit", (1, 32, 32), {"width": 30, "heads": 4, "patch": 8}, "divisible"),
        ("resnet18", (1, 4, 4), {}, "8x8"),
        ("fcn", (32, 32), {}, "(C, H, W)"),
    ],
)
def test_bad_input_is_a_user_error(name, shape, kw, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        create_model(name, shape, 1, **kw)


def test_model_options_lists_defaults():
    import inspect

    from moirescale.models import MODELS

    for name, factory in MODELS.items():  # the registry's contract: the two arguments create_model fills
        assert list(inspect.signature(factory).parameters)[:2] == ["in_shape", "n_outputs"], name
        assert "in_shape" not in model_options(name) and "n_outputs" not in model_options(name)
    assert model_options("fcn") == {"n_layers": 3, "width": 16}
    assert model_options("vit")["patch"] == 10
