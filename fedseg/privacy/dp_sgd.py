"""The DP-SGD step: Opacus' per-sample gradients (GradSampleModule) and clipped, noised optimiser."""

from __future__ import annotations

import torch
from opacus.grad_sample import GradSampleModule, wrap_model
from opacus.optimizers import DPOptimizer
from torch import nn

from fedseg.privacy import grad_samplers  # noqa: F401  (registers the Conv2d per-sample gradient sampler)


def make_private(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    grad_sample_mode: str,
    generator: torch.Generator | None = None,
) -> tuple[GradSampleModule, DPOptimizer]:
    """Wrap ``model`` for per-sample gradients and ``optimizer`` for per-sample clipping and Gaussian noise.

    Losses are the mean of per-sample losses over the sampled batch; the optimiser divides the
    noised sum by ``expected_batch_size`` (Poisson sampling makes the real size vary).
    """
    private_model = wrap_model(model, grad_sample_mode=grad_sample_mode)
    private_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=max(1, round(expected_batch_size)),
        loss_reduction="mean",
        generator=generator,
    )
    return private_model, private_optimizer


def mark_empty_batch(model: nn.Module) -> None:
    """Per-sample gradients of an empty Poisson batch: the step still adds noise, as the analysis assumes."""
    for parameter in model.parameters():
        if parameter.requires_grad:
            empty = torch.zeros((0, *parameter.shape), device=parameter.device, dtype=parameter.dtype)
            setattr(parameter, "grad_sample", empty)  # noqa: B010  (Opacus' per-sample gradient attribute)
