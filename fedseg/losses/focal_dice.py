"""Focal + Dice: the supervised loss fedseg trains with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedseg.losses.dice import DiceLoss
from fedseg.losses.focal import FocalLoss
from fedseg.losses.reduction import check_reduction, reduce


@dataclass(frozen=True)
class LossConfig:
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    gamma: float = 2.0
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.focal_weight < 0 or self.dice_weight < 0 or self.focal_weight + self.dice_weight == 0:
            raise ValueError(
                f"loss weights must be >= 0 and not both 0, got focal={self.focal_weight}, dice={self.dice_weight}"
            )


class FocalDiceLoss(nn.Module):
    """``focal_weight * focal + dice_weight * dice``, per sample."""

    def __init__(
        self,
        *,
        focal_weight: float = 1.0,
        dice_weight: float = 1.0,
        gamma: float = 2.0,
        alpha: float | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.focal = FocalLoss(gamma=gamma, alpha=alpha, reduction="none")
        self.dice = DiceLoss(reduction="none")
        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.reduction = check_reduction(reduction)

    @classmethod
    def from_config(cls, config: LossConfig, *, reduction: str = "mean") -> FocalDiceLoss:
        return cls(
            focal_weight=config.focal_weight,
            dice_weight=config.dice_weight,
            gamma=config.gamma,
            alpha=config.alpha,
            reduction=reduction,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = self.focal_weight * self.focal(logits, target) + self.dice_weight * self.dice(logits, target)
        return reduce(per_sample, self.reduction)
