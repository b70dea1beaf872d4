"""MONAI-style ``reduction`` for per-sample losses."""

from __future__ import annotations

import torch

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")
    return reduction


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """``none`` keeps one value per sample (shape ``B``), ``mean``/``sum`` reduce over the batch."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


def check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim not in (4, 5):
        raise ValueError(f"logits must be B,C,H,W (or B,C,X,Y,Z for volumes); got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from logits shape {tuple(logits.shape)}")
