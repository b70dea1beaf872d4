"""3D U-Net (Çiçek et al., 2016) for volumes: two (conv, GroupNorm, ReLU) layers per level, max-pooling
down, trilinear up-sampling with a 1x1x1 projection and concatenated skips. ``slice_pool_levels``
limits pooling along the slice axis (the last) for thick-slice scans. Inputs of any size are
padded to the model's multiple and the output cropped back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.models.blocks3d import ConvNormAct3d, level_strides, pad_to_multiples, prior_bias, size_multiples
from fedseg.models.registry import register_model


class DoubleConv3d(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, *, groups: int, act: str) -> None:
        super().__init__(
            ConvNormAct3d(in_channels, out_channels, groups=groups, act=act),
            ConvNormAct3d(out_channels, out_channels, groups=groups, act=act),
        )


class UNet3d(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 1,
        classes: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128),
        slice_pool_levels: int | None = None,
        norm_groups: int = 8,
        activation: str = "relu",
        foreground_prior: float = 0.01,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths needs at least two positive entries, got {widths}")
        self.strides = level_strides(len(widths) - 1, slice_pool_levels)
        self.multiples = size_multiples(self.strides)
        self.size_multiple = self.multiples[0]
        self.encoders = nn.ModuleList(
            DoubleConv3d(c_in, c_out, groups=norm_groups, act=activation)
            for c_in, c_out in zip([in_channels] + widths[:-1], widths)
        )
        self.reduce = nn.ModuleList(nn.Conv3d(widths[i + 1], widths[i], 1, bias=False) for i in range(len(widths) - 1))
        self.decoders = nn.ModuleList(
            DoubleConv3d(2 * widths[i], widths[i], groups=norm_groups, act=activation) for i in range(len(widths) - 1)
        )
        self.head = nn.Conv3d(widths[0], classes, 1)
        prior_bias(self.head, foreground_prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, sizes = pad_to_multiples(x, self.multiples)
        skips = [self.encoders[0](x)]
        for stride, encoder in zip(self.strides, self.encoders[1:]):
            skips.append(encoder(F.max_pool3d(skips[-1], stride)))
        y = skips.pop()
        for level in reversed(range(len(self.decoders))):
            skip = skips[level]
            y = self.reduce[level](F.interpolate(y, size=skip.shape[-3:], mode="trilinear", align_corners=False))
            y = self.decoders[level](torch.cat([skip, y], dim=1))
        return self.head(y)[..., : sizes[0], : sizes[1], : sizes[2]]


@register_model(
    "unet3d",
    default_options={
        "widths": [16, 32, 64, 128],
        "slice_pool_levels": None,
        "norm_groups": 8,
        "activation": "relu",
        "foreground_prior": 0.01,
    },
    spatial_dims=3,
)
def build_unet3d(*, in_channels: int, classes: int, **options: object) -> nn.Module:
    return UNet3d(in_channels=in_channels, classes=classes, **options)  # type: ignore[arg-type]
