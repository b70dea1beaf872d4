"""One optimisation step on a batch of crops."""

from __future__ import annotations

import torch
from torch import nn

from fedseg.devices import autocast


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def supervised_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: nn.Module, device: torch.device
) -> torch.Tensor:
    """Per-sample supervised loss (``B``); zero for samples without a mask."""
    with autocast(device):
        logits = model(batch["image"])
    per_sample = loss_fn(logits.float(), batch["mask"])
    return per_sample * batch["labelled"].to(per_sample.dtype)


def supervised_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> float:
    """Forward, backward and step on the labelled samples of a batch; returns the mean loss."""
    batch = to_device(batch, device)
    per_sample = supervised_loss(model, batch, loss_fn, device)
    n_labelled = batch["labelled"].sum().clamp(min=1)
    loss = per_sample.sum() / n_labelled
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
