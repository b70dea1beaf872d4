"""Per-sample clipping: one image with an enormous loss cannot move the weights further than C allows."""

from __future__ import annotations

import pytest
import torch

from fedseg.losses import FocalDiceLoss
from fedseg.models import ModelConfig, build_model, grad_sample_mode
from fedseg.models.state import model_state
from fedseg.privacy.dp_sgd import make_private, sum_per_unit

CONFIG = ModelConfig(name="unet", options={"widths": [4, 8, 16]})
LR, CLIP, BATCH = 0.1, 1.0, 4


def _update(private: bool, scale: float) -> float:
    """Norm of the weight change of one SGD step where sample 0's loss is multiplied by ``scale``."""
    torch.manual_seed(0)
    model = build_model(CONFIG)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    if private:
        model, optimizer = make_private(
            module=model,
            optimizer=optimizer,
            noise_multiplier=0.0,
            max_grad_norm=CLIP,
            expected_batch_size=BATCH,
            grad_sample_mode=grad_sample_mode(CONFIG),
        )
    before = torch.cat([v.flatten() for v in model_state(model).values()])
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = (torch.rand(BATCH, 1, 32, 32, generator=torch.Generator().manual_seed(2)) > 0.8).float()
    weights = torch.ones(BATCH)
    weights[0] = scale
    ((FocalDiceLoss(reduction="none")(model(x), y)) * weights).mean().backward()
    optimizer.step()
    after = torch.cat([v.flatten() for v in model_state(model).values()])
    return float((after - before).norm())


def test_one_enormous_loss_moves_weights_no_more_than_the_clipping_bound() -> None:
    bound = LR * CLIP * BATCH / BATCH  # every sample clipped to C, averaged over the expected batch
    assert _update(private=True, scale=1e6) <= bound * (1 + 1e-4)
    assert _update(private=False, scale=1e6) > 1000 * bound  # without DP-SGD it would dominate the step


def test_the_outliers_own_influence_is_bounded_by_one_clipped_sample() -> None:
    outlier = _update(private=True, scale=1e6)
    ordinary = _update(private=True, scale=1.0)
    assert abs(outlier - ordinary) <= 2 * LR * CLIP / BATCH


def test_a_subjects_images_are_clipped_together() -> None:
    """One subject, two (identical) images: per-image clipping lets it move the weights by 2 C, per-subject by C."""

    def update(per_subject: bool) -> float:
        torch.manual_seed(0)
        model = build_model(CONFIG)
        model, optimizer = make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=LR),
            noise_multiplier=0.0,
            max_grad_norm=CLIP,
            expected_batch_size=1,
            grad_sample_mode=grad_sample_mode(CONFIG),
        )
        before = torch.cat([v.flatten() for v in model_state(model).values()])
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).repeat(2, 1, 1, 1)
        y = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)) > 0.8).float().repeat(2, 1, 1, 1)
        (FocalDiceLoss(reduction="none")(model(x), y) * 1e3).mean().backward()  # each image's gradient >> C
        if per_subject:
            assert sum_per_unit(model, torch.tensor([7, 7])) == 1
        optimizer.step()
        return float((torch.cat([v.flatten() for v in model_state(model).values()]) - before).norm())

    assert update(per_subject=False) == pytest.approx(2 * LR * CLIP, rel=1e-3)
    assert update(per_subject=True) == pytest.approx(LR * CLIP, rel=1e-3)
