"""fedseg's own U-Net: depthwise-separable residual blocks, GroupNorm, attention-gated skips and
an optional ASPP bottleneck. The output bias starts at the foreground prior (as in RetinaNet), so
early steps are not spent unlearning a 50 % foreground guess. Any input size works: inputs are padded to a multiple of
``2 ** depth`` and the output is cropped back."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.models.blocks import ASPP, AttentionGate, ConvBlock, pad_to_multiple
from fedseg.models.registry import register_model


class UNet(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 3,
        classes: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        attention: bool = True,
        aspp: bool = True,
        aspp_rates: Sequence[int] = (2, 4, 6),
        norm_groups: int = 8,
        activation: str = "relu",
        separable: bool = True,
        foreground_prior: float = 0.1,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not 0.0 < foreground_prior < 1.0:
            raise ValueError(f"foreground_prior must be in (0, 1), got {foreground_prior}")
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths needs at least two positive entries, got {widths}")
        self.size_multiple = 2 ** (len(widths) - 1)
        self.stem = ConvBlock(in_channels, widths[0], separable=False, groups=norm_groups, act=activation)
        self.down = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], separable=separable, groups=norm_groups, act=activation)
            for i in range(len(widths) - 1)
        )
        self.bottleneck = (
            ASPP(widths[-1], widths[-1], rates=aspp_rates, groups=norm_groups, act=activation)
            if aspp
            else nn.Identity()
        )
        self.reduce = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1, bias=False) for i in range(len(widths) - 1))
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i], max(widths[i] // 2, 1)) if attention else nn.Identity()
            for i in range(len(widths) - 1)
        )
        self.up = nn.ModuleList(
            ConvBlock(2 * widths[i], widths[i], separable=separable, groups=norm_groups, act=activation)
            for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[0], classes, 1)
        if self.head.bias is not None:
            nn.init.constant_(self.head.bias, math.log(foreground_prior / (1 - foreground_prior)))
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = self.bottleneck(skips.pop())
        for level in reversed(range(len(self.up))):
            skip = skips[level]
            y = self.reduce[level](F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False))
            if self.attention:
                skip = self.gates[level](skip, y)
            y = self.up[level](torch.cat([skip, y], dim=1))
        return self.head(y)[..., :height, :width]


@register_model(
    "unet",
    default_options={
        "widths": [16, 32, 64, 128, 256],
        "attention": True,
        "aspp": True,
        "aspp_rates": [2, 4, 6],
        "norm_groups": 8,
        "activation": "relu",
        "separable": True,
        "foreground_prior": 0.1,
    },
)
def build_unet(*, in_channels: int, classes: int, **options: object) -> nn.Module:
    return UNet(in_channels=in_channels, classes=classes, **options)  # type: ignore[arg-type]
