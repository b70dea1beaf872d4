"""V-Net (Milletari et al., 2016) for volumes: residual stages of ``kernel_size`` convolutions,
strided-convolution down-sampling, and an up path that adds the stage's input to its output.

Two substitutions keep every layer under Opacus' fast per-sample-gradient hooks: ReLU for PReLU,
and trilinear up-sampling followed by a convolution for transposed convolutions. GroupNorm
normalises each convolution. ``slice_pool_levels`` limits down-sampling along the slice axis."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.models.blocks import activation, group_norm
from fedseg.models.blocks3d import ConvNormAct3d, level_strides, pad_to_multiples, prior_bias, size_multiples
from fedseg.models.registry import register_model


class ResidualStage(nn.Module):
    """``depth`` (conv, GroupNorm, activation) layers with the stage's input added to their output."""

    def __init__(self, channels: int, depth: int, *, groups: int, act: str, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(ConvNormAct3d(channels, channels, groups=groups, act=act, kernel_size=kernel_size) for _ in range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x


class Down(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], *, groups: int, act: str):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, stride, stride=stride, bias=False),
            group_norm(out_channels, groups),
            activation(act),
        )


class VNet(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 1,
        classes: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128),
        depths: Sequence[int] = (1, 2, 3, 3),
        kernel_size: int = 3,
        slice_pool_levels: int | None = None,
        norm_groups: int = 8,
        activation: str = "relu",
        foreground_prior: float = 0.01,
    ) -> None:
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) < 2 or len(depths) != len(widths) or min(widths + depths) < 1:
            raise ValueError(
                f"widths and depths need the same length >= 2 and positive entries, got {widths}, {depths}"
            )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.strides = level_strides(len(widths) - 1, slice_pool_levels)
        self.multiples = size_multiples(self.strides)
        self.size_multiple = self.multiples[0]
        groups, act = norm_groups, activation
        self.stem = ConvNormAct3d(in_channels, widths[0], kernel_size=kernel_size, groups=groups, act=act)
        self.encoders = nn.ModuleList(
            ResidualStage(w, d, kernel_size=kernel_size, groups=groups, act=act) for w, d in zip(widths, depths)
        )
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], self.strides[i], groups=groups, act=act) for i in range(len(widths) - 1)
        )
        self.ups = nn.ModuleList(nn.Conv3d(widths[i + 1], widths[i], 1, bias=False) for i in range(len(widths) - 1))
        self.merges = nn.ModuleList(
            ConvNormAct3d(2 * widths[i], widths[i], kernel_size=1, groups=groups, act=act)
            for i in range(len(widths) - 1)
        )
        self.decoders = nn.ModuleList(
            ResidualStage(widths[i], max(1, depths[i]), kernel_size=kernel_size, groups=groups, act=act)
            for i in range(len(widths) - 1)
        )
        self.head = nn.Conv3d(widths[0], classes, 1)
        prior_bias(self.head, foreground_prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, sizes = pad_to_multiples(x, self.multiples)
        skips = [self.encoders[0](self.stem(x))]
        for down, encoder in zip(self.downs, self.encoders[1:]):
            skips.append(encoder(down(skips[-1])))
        y = skips.pop()
        for level in reversed(range(len(self.decoders))):
            skip = skips[level]
            y = self.ups[level](F.interpolate(y, size=skip.shape[-3:], mode="trilinear", align_corners=False))
            y = self.decoders[level](self.merges[level](torch.cat([skip, y], dim=1)))
        return self.head(y)[..., : sizes[0], : sizes[1], : sizes[2]]


@register_model(
    "vnet",
    default_options={
        "widths": [16, 32, 64, 128],
        "depths": [1, 2, 3, 3],
        "kernel_size": 3,
        "slice_pool_levels": None,
        "norm_groups": 8,
        "activation": "relu",
        "foreground_prior": 0.01,
    },
    spatial_dims=3,
)
def build_vnet(*, in_channels: int, classes: int, **options: object) -> nn.Module:
    return VNet(in_channels=in_channels, classes=classes, **options)  # type: ignore[arg-type]
