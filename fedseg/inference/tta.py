"""Test-time augmentation over the dihedral group D4: flips and 90-degree rotations.

Each transform is applied to the input, the model's probabilities are mapped back by the
inverse transform, and the maps are averaged in probability space. Averaging over the whole
group makes the prediction equivariant: TTA(t(x)) = t(TTA(x)) for every t in D4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Dihedral:
    """``rot90(k)`` after an optional horizontal flip, on the last two dimensions."""

    rotations: int
    flip: bool

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, self.rotations, dims=(-2, -1))

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, -self.rotations, dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if self.flip else x


D4 = tuple(Dihedral(k, flip) for flip in (False, True) for k in range(4))
IDENTITY = (Dihedral(0, False),)


def tta_transforms(enabled: bool) -> tuple[Dihedral, ...]:
    return D4 if enabled else IDENTITY


def average_over(
    transforms: tuple[Dihedral, ...], predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """Mean of ``t^-1(predict(t(inputs)))`` over ``transforms`` (probabilities in, probabilities out)."""
    total = None
    for transform in transforms:
        probabilities = transform.invert(predict(transform.apply(inputs)))
        total = probabilities if total is None else total + probabilities
    if total is None:
        raise ValueError("average_over needs at least one transform")
    return total / len(transforms)
