"""Learning-rate schedules over a fixed number of steps."""

from __future__ import annotations

import math

import torch

from fedseg.training.config import OptimConfig


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, config: OptimConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``."""
    if config.schedule == "constant":
        return 1.0
    warmup = max(1, round(config.warmup_fraction * total))
    if config.schedule == "onecycle" and step < warmup:
        return 0.04 + 0.96 * (1 - math.cos(math.pi * step / warmup)) / 2
    start = warmup if config.schedule == "onecycle" else 0
    progress = min(1.0, (step - start) / max(1, total - start))
    return 1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * progress)) / 2


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
