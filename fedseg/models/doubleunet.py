"""DoubleU-Net (Jha et al., 2020): two cascaded U-Nets for medical image segmentation.

Network 1 is a U-Net whose encoder is VGG-19-shaped (five stages of 2, 2, 4, 4, 4 convolutions;
no pretrained weights here, so every convolution is followed by GroupNorm to make training from
scratch and DP-SGD work), with ASPP at the bottleneck and squeeze-and-excitation (SE) blocks in the
decoder. Its sigmoid output multiplies the input image, which network 2 (its own encoder with SE
blocks, ASPP, and a decoder that concatenates the skips of *both* encoders) segments again.

The paper outputs both masks and supervises both; fedseg's models return one logit map, so the
output here is the mean of the two networks' logits: the loss reaches each network directly.
Opacus-friendly like every zoo model: GroupNorm, no in-place operations, no module called twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.models.blocks import group_norm, pad_to_multiple
from fedseg.models.registry import register_model

VGG19_DEPTHS = (2, 2, 4, 4, 4)


def conv_norm_relu(in_channels: int, out_channels: int, *, groups: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=padding, dilation=dilation, bias=False),
        group_norm(out_channels, groups),
        nn.ReLU(),
    )


class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al., 2018): global pooling, a bottleneck MLP, a sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1, self.act, self.fc2 = nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))
        return x * weights[:, :, None, None]


class SEBlock(nn.Module):
    """DoubleU-Net's conv block: two (3x3 conv, GroupNorm, ReLU) followed by squeeze-and-excitation."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, reduction: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_norm_relu(in_channels, out_channels, groups=groups),
            conv_norm_relu(out_channels, out_channels, groups=groups),
        )
        self.se = SqueezeExcitation(out_channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.convs(x))


class DoubleUNetASPP(nn.Module):
    """ASPP as in DoubleU-Net: image pooling, a 1x1 branch and dilated 3x3 branches, fused by a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, *, rates: Sequence[int], groups: int) -> None:
        super().__init__()
        if not rates or any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {list(rates)}")
        # No norm on the pooled branch: GroupNorm over a 1 x 1 map with one channel per group is undefined.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU())
        self.point = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), group_norm(out_channels, groups), nn.ReLU()
        )
        self.dilated = nn.ModuleList(
            conv_norm_relu(in_channels, out_channels, groups=groups, dilation=int(r)) for r in rates
        )
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(self.dilated) + 2), out_channels, 1, bias=False),
            group_norm(out_channels, groups),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([pooled, self.point(x)] + [branch(x) for branch in self.dilated], dim=1))


class VGGEncoder(nn.Module):
    """VGG-19's convolutional stages (with GroupNorm). Returns the skips before each pooling and the bottom."""

    def __init__(self, in_channels: int, widths: Sequence[int], depths: Sequence[int], *, groups: int) -> None:
        super().__init__()
        stages, channels = [], in_channels
        for width, depth in zip(widths, depths):
            layers = [conv_norm_relu(channels if i == 0 else width, width, groups=groups) for i in range(depth)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for stage in self.stages[:-1]:
            x = stage(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, self.stages[-1](x)


class SEEncoder(nn.Module):
    """Network 2's encoder: an SE block then max pooling per stage."""

    def __init__(self, in_channels: int, widths: Sequence[int], *, groups: int, reduction: int) -> None:
        super().__init__()
        channels = [in_channels, *widths]
        self.blocks = nn.ModuleList(
            SEBlock(channels[i], channels[i + 1], groups=groups, reduction=reduction) for i in range(len(widths))
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return skips, x


class Decoder(nn.Module):
    """Upsample, concatenate the skips of the same scale, SE block; from the deepest scale up."""

    def __init__(
        self, bottom: int, widths: Sequence[int], skip_channels: Sequence[Sequence[int]], *, groups: int, reduction: int
    ) -> None:
        super().__init__()
        blocks, channels = [], bottom
        for width, skips in zip(widths, skip_channels):
            blocks.append(SEBlock(channels + sum(skips), width, groups=groups, reduction=reduction))
            channels = width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, skips: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        for block, same_scale in zip(self.blocks, skips):
            x = F.interpolate(x, size=same_scale[0].shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, *same_scale], dim=1))
        return x


class DoubleUNet(nn.Module):
    def __init__(
        self,
        *,
        in_channels: int = 3,
        classes: int = 1,
        vgg_widths: Sequence[int] = (64, 128, 256, 512, 512),
        vgg_depths: Sequence[int] = VGG19_DEPTHS,
        widths: Sequence[int] = (32, 64, 128, 256),
        aspp_channels: int = 64,
        aspp_rates: Sequence[int] = (6, 12, 18),
        se_reduction: int = 8,
        norm_groups: int = 8,
        foreground_prior: float = 0.1,
    ) -> None:
        super().__init__()
        vgg_widths, vgg_depths, widths = [int(w) for w in vgg_widths], [int(d) for d in vgg_depths], list(widths)
        if len(vgg_widths) != len(vgg_depths) or len(vgg_widths) < 2:
            raise ValueError(f"vgg_widths and vgg_depths need the same length (>= 2), got {vgg_widths}, {vgg_depths}")
        if len(widths) != len(vgg_widths) - 1 or any(int(w) < 1 for w in widths + vgg_widths + vgg_depths):
            raise ValueError(f"widths needs {len(vgg_widths) - 1} positive entries (one per VGG skip), got {widths}")
        if not 0.0 < foreground_prior < 1.0:
            raise ValueError(f"foreground_prior must be in (0, 1), got {foreground_prior}")
        widths = [int(w) for w in widths]
        decoder_widths = widths[::-1]
        vgg_skips = vgg_widths[:-1][::-1]
        self.size_multiple = 2 ** len(widths)
        self.encoder1 = VGGEncoder(in_channels, vgg_widths, vgg_depths, groups=norm_groups)
        self.aspp1 = DoubleUNetASPP(vgg_widths[-1], aspp_channels, rates=aspp_rates, groups=norm_groups)
        self.decoder1 = Decoder(
            aspp_channels, decoder_widths, [[c] for c in vgg_skips], groups=norm_groups, reduction=se_reduction
        )
        self.head1 = nn.Conv2d(decoder_widths[-1], classes, 1)
        self.encoder2 = SEEncoder(in_channels, widths, groups=norm_groups, reduction=se_reduction)
        self.aspp2 = DoubleUNetASPP(widths[-1], aspp_channels, rates=aspp_rates, groups=norm_groups)
        self.decoder2 = Decoder(
            aspp_channels,
            decoder_widths,
            [[a, b] for a, b in zip(vgg_skips, decoder_widths)],
            groups=norm_groups,
            reduction=se_reduction,
        )
        self.head2 = nn.Conv2d(decoder_widths[-1], classes, 1)
        prior = math.log(foreground_prior / (1 - foreground_prior))
        for head in (self.head1, self.head2):
            if head.bias is not None:
                nn.init.constant_(head.bias, prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips1, bottom1 = self.encoder1(x)
        logits1 = self.head1(self.decoder1(self.aspp1(bottom1), [[s] for s in reversed(skips1)]))
        skips2, bottom2 = self.encoder2(x * torch.sigmoid(logits1))
        same_scale = [[a, b] for a, b in zip(reversed(skips1), reversed(skips2))]
        logits2 = self.head2(self.decoder2(self.aspp2(bottom2), same_scale))
        return ((logits1 + logits2) / 2)[..., :height, :width]


@register_model(
    "doubleunet",
    default_options={
        "vgg_widths": [64, 128, 256, 512, 512],
        "vgg_depths": list(VGG19_DEPTHS),
        "widths": [32, 64, 128, 256],
        "aspp_channels": 64,
        "aspp_rates": [6, 12, 18],
        "se_reduction": 8,
        "norm_groups": 8,
        "foreground_prior": 0.1,
    },
)
def build_doubleunet(*, in_channels: int, classes: int, **options: object) -> nn.Module:
    return DoubleUNet(in_channels=in_channels, classes=classes, **options)  # type: ignore[arg-type]
