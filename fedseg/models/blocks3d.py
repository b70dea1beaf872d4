"""Building blocks of the 3D models: GroupNorm, no in-place ops, anisotropic pooling, padding to a multiple."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.models.blocks import activation, group_norm


def level_strides(levels: int, slice_pool_levels: int | None) -> list[tuple[int, int, int]]:
    """Down-sampling stride of each level: 2 in-plane always, 2 along slices for the first
    ``slice_pool_levels`` levels (all when None), so thick-slice volumes keep their few slices."""
    pooled = levels if slice_pool_levels is None else min(max(slice_pool_levels, 0), levels)
    return [(2, 2, 2 if level < pooled else 1) for level in range(levels)]


def size_multiples(strides: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    return tuple(math.prod(s[axis] for s in strides) for axis in range(3))  # type: ignore[return-value]


def pad_to_multiples(x: torch.Tensor, multiples: Sequence[int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad the three spatial axes of ``B,C,X,Y,Z`` up to ``multiples``; returns the original sizes."""
    sizes = tuple(int(n) for n in x.shape[-3:])
    padding: list[int] = []
    for size, multiple in reversed(list(zip(sizes, multiples))):
        padding += [0, -size % multiple]
    return (F.pad(x, padding) if any(padding) else x), sizes  # type: ignore[return-value]


class ConvNormAct3d(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, *, groups: int, act: str, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            group_norm(out_channels, groups),
            activation(act),
        )


def prior_bias(head: nn.Conv3d, foreground_prior: float) -> None:
    """Start the output at the foreground prior (as RetinaNet), not at 50 % foreground."""
    if not 0.0 < foreground_prior < 1.0:
        raise ValueError(f"foreground_prior must be in (0, 1), got {foreground_prior}")
    if head.bias is not None:
        nn.init.constant_(head.bias, math.log(foreground_prior / (1 - foreground_prior)))
