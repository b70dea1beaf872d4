"""Soft Dice loss, computed per sample so that DP-SGD can clip each sample's gradient."""

from __future__ import annotations

import torch
from torch import nn

from fedseg.losses.reduction import check_reduction, check_shapes, reduce


class DiceLoss(nn.Module):
    """``1 - (2 |P.T| + smooth_nr) / (|P| + |T| + smooth_dr)`` per sample, with ``P = sigmoid(logits)``.

    Sums run over channels and pixels of each sample, never across the batch, so one sample's
    loss does not depend on another's. An empty mask with an empty prediction gives 0.
    """

    def __init__(self, *, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, reduction: str = "mean") -> None:
        super().__init__()
        self.smooth_nr, self.smooth_dr = smooth_nr, smooth_dr
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target)
        probabilities = torch.sigmoid(logits.float())
        target = target.float()
        dims = tuple(range(1, logits.ndim))
        intersection = (probabilities * target).sum(dims)
        denominator = probabilities.sum(dims) + target.sum(dims)
        per_sample = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        return reduce(per_sample, self.reduction)
