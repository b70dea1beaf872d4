"""Building blocks of the fedseg U-Net. All are Opacus-friendly: GroupNorm, no in-place ops."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``groups`` that divides ``channels``."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class SeparableConv2d(nn.Sequential):
    """Depthwise ``k x k`` convolution followed by a pointwise ``1 x 1`` convolution."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class ConvBlock(nn.Module):
    """Two (separable conv, GroupNorm, activation) layers with a residual projection."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, act: str, separable: bool = True) -> None:
        super().__init__()

        def conv(cin: int) -> nn.Module:
            if separable:
                return SeparableConv2d(cin, out_channels)
            return nn.Conv2d(cin, out_channels, 3, padding=1, bias=False)

        self.conv1, self.norm1, self.act1 = conv(in_channels), group_norm(out_channels, groups), activation(act)
        self.conv2, self.norm2 = conv(out_channels), group_norm(out_channels, groups)
        self.skip = (
            nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )
        self.act2 = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act2(y + self.skip(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., 2018): weights a skip connection by decoder context."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 1, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1, bias=True)
        self.act = nn.ReLU()
        self.psi = nn.Conv2d(inter_channels, 1, 1, bias=True)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.psi(self.act(self.theta(skip) + self.phi(gate))))
        return skip * attention


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with separable dilated branches and an image-pooling branch."""

    def __init__(self, in_channels: int, out_channels: int, *, rates: Sequence[int], groups: int, act: str) -> None:
        super().__init__()
        if not rates or any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {list(rates)}")
        branches: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), group_norm(out_channels, groups), activation(act)
            )
        ]
        for rate in rates:
            branches.append(
                nn.Sequential(
                    SeparableConv2d(in_channels, out_channels, dilation=int(rate)),
                    group_norm(out_channels, groups),
                    activation(act),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), activation(act))
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(branches) + 1), out_channels, 1, bias=False),
            group_norm(out_channels, groups),
            activation(act),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad height and width up to a multiple; returns the padded tensor and the original size.

    Pads unconditionally (zero padding is a copy): a branch on the size would be frozen into an
    exported graph (ONNX, TorchScript) at the size it was exported with.
    """
    height, width = x.shape[-2:]
    return F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple)), (height, width)
