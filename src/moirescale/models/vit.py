"""Vision transformer (timm's VisionTransformer) sized for the image: patch 10 on 100 x 100 gives 100 tokens.

Knobs: ``n_layers`` (depth), ``width`` (embedding dimension), ``heads``, ``patch``, ``mlp_ratio``.
N_M grows about as depth * width², so width 32 ... 384 spans two decades at fixed depth.
"""

from __future__ import annotations

from torch import nn


def create_vit(
    in_shape: tuple[int, ...],
    n_outputs: int,
    n_layers: int = 6,
    width: int = 192,
    heads: int = 3,
    patch: int = 10,
    mlp_ratio: float = 4.0,
) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    from moirescale.errors import UserError

    c, h, w = in_shape
    if int(patch) < 1 or h % int(patch) or w % int(patch):
        fits = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
        raise UserError(
            f"vit patch size {patch} must divide the image size {h}x{w} (--patch one of "
            f"{', '.join(map(str, fits[-6:]))})"
        )
    if int(n_layers) < 1 or int(heads) < 1 or int(width) < 1 or int(width) % int(heads):
        raise UserError(
            f"vit needs n_layers, heads >= 1 and width divisible by heads, got "
            f"n_layers={n_layers}, width={width}, heads={heads}"
        )
    return VisionTransformer(
        img_size=(h, w),
        patch_size=int(patch),
        in_chans=c,
        num_classes=n_outputs,
        embed_dim=int(width),
        depth=int(n_layers),
        num_heads=int(heads),
        mlp_ratio=float(mlp_ratio),
    )


def vit_param_count(
    in_shape: tuple[int, ...],
    n_outputs: int,
    n_layers: int = 6,
    width: int = 192,
    patch: int = 10,
    mlp_ratio: float = 4.0,
) -> int:
    """Independent hand count for timm's ViT (class token, learned positions, pre-norm blocks, final norm)."""
    c, h, w = in_shape
    d = width
    hid = int(d * mlp_ratio)
    tokens = (h // patch) * (w // patch) + 1
    n = c * patch * patch * d + d + d + tokens * d  # patch embed, cls token, positions
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hid + hid) + (hid * d + d)
    return n + n_layers * block + 2 * d + d * n_outputs + n_outputs
