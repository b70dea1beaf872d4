"""Consistency loss for Mean Teacher: mean squared difference of probabilities, per sample."""

from __future__ import annotations

import torch
from torch import nn

from fedseg.losses.reduction import check_reduction, check_shapes, reduce


class ConsistencyLoss(nn.Module):
    """``mean((sigmoid(student) - sigmoid(teacher))^2)`` per sample; the teacher gets no gradient."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        check_shapes(student_logits, teacher_logits)
        student = torch.sigmoid(student_logits.float())
        teacher = torch.sigmoid(teacher_logits.detach().float())
        return reduce(((student - teacher) ** 2).flatten(1).mean(dim=1), self.reduction)
