"""ResNet-18 (torchvision's standard implementation) for C-channel images with a linear regression head.

``width`` is the stem/first-stage channel count (64 in the standard net); the four stages have
(w, 2w, 4w, 8w) channels, so N_M grows about as w² and w = 8 ... 128 spans more than two decades.
At width 64 the network is exactly ``torchvision.models.resnet18`` with a C-channel stem and n outputs.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class WideResNet18(ResNet):
    """torchvision's ResNet with the channel widths (64, 128, 256, 512) replaced by (w, 2w, 4w, 8w)."""

    def __init__(self, in_chans: int, n_outputs: int, width: int = 64):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=n_outputs)
        w = width
        # Rebuild every width-dependent piece with torchvision's own builders, then redo its initialisation.
        self.inplanes = w
        self.conv1 = nn.Conv2d(in_chans, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = self._make_layer(BasicBlock, w, 2)
        self.layer2 = self._make_layer(BasicBlock, 2 * w, 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * w, 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * w, 2, stride=2)
        self.fc = nn.Linear(8 * w, n_outputs)
        for m in self.modules():  # same init as torchvision's ResNet.__init__
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def create_resnet18(in_shape: tuple[int, ...], n_outputs: int, width: int = 64) -> nn.Module:
    from moirescale.errors import UserError

    c, h, w = in_shape
    if int(width) < 1:
        raise UserError(f"resnet18 needs width >= 1, got {width}")
    # Five stride-2 stages: below 32 px the last stages see 1 x 1 maps (padding keeps them 1 x 1), which
    # works but wastes depth (an imported store's small images); below 8 px there is too little to pool.
    if min(h, w) < 8:
        raise UserError(f"resnet18 needs images of at least 8x8 pixels, got {h}x{w}")
    return WideResNet18(c, n_outputs, int(width))


def resnet18_param_count(in_chans: int, n_outputs: int, width: int = 64) -> int:
    """Independent hand count of ResNet-18's parameters (convs: no bias; BN: 2 per channel)."""
    w = width
    n = 7 * 7 * in_chans * w + 2 * w  # stem conv + bn
    c_in = w
    for c in (w, 2 * w, 4 * w, 8 * w):
        for block in range(2):
            cin = c_in if block == 0 else c
            n += 3 * 3 * cin * c + 2 * c + 3 * 3 * c * c + 2 * c
            if block == 0 and cin != c:  # projection shortcut: 1x1 conv + bn
                n += cin * c + 2 * c
        c_in = c
    return n + 8 * w * n_outputs + n_outputs
