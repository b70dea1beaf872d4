"""Sigmoid focal loss (Lin et al., 2017), averaged over the pixels of each sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedseg.losses.reduction import check_reduction, check_shapes, reduce


class FocalLoss(nn.Module):
    """``-alpha_t (1 - p_t)^gamma log(p_t)`` per pixel, mean per sample.

    ``gamma = 0`` and ``alpha = None`` give binary cross-entropy. ``alpha`` weights the
    foreground (``1 - alpha`` the background).
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean") -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.gamma, self.alpha = gamma, alpha
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_shapes(logits, target)
        logits, target = logits.float(), target.float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = torch.exp(-cross_entropy)
        loss = (1.0 - p_t) ** self.gamma * cross_entropy
        if self.alpha is not None:
            loss = (self.alpha * target + (1.0 - self.alpha) * (1.0 - target)) * loss
        return reduce(loss.flatten(1).mean(dim=1), self.reduction)
