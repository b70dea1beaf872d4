from __future__ import annotations

import pytest
import torch

from fedseg.losses import ConsistencyLoss, DiceLoss, FocalDiceLoss, FocalLoss

LOSSES = [DiceLoss, FocalLoss, FocalDiceLoss]


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 1, 16, 12, generator=generator)
    target = (torch.rand(4, 1, 16, 12, generator=generator) > 0.7).float()
    target[2] = 0  # one empty mask in the batch
    return logits, target


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_per_sample_values_equal_batch_of_one(loss_cls: type) -> None:
    logits, target = _batch()
    per_sample = loss_cls(reduction="none")(logits, target)
    assert per_sample.shape == (4,)
    singles = torch.stack([loss_cls(reduction="mean")(logits[i : i + 1], target[i : i + 1]) for i in range(4)])
    assert torch.allclose(per_sample, singles, atol=1e-6)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_reductions(loss_cls: type) -> None:
    logits, target = _batch(1)
    none = loss_cls(reduction="none")(logits, target)
    assert torch.allclose(loss_cls(reduction="sum")(logits, target), none.sum())
    assert torch.allclose(loss_cls(reduction="mean")(logits, target), none.mean())
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss_cls(reduction="batch")


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_one_sample_gradient_does_not_leak_into_another(loss_cls: type) -> None:
    logits, target = _batch(2)
    logits.requires_grad_(True)
    loss_cls(reduction="none")(logits, target)[1].backward()
    grad = logits.grad.abs().flatten(1).sum(dim=1)
    assert grad[1] > 0 and grad[0] == 0 and grad[2] == 0 and grad[3] == 0


def test_dice_on_empty_masks_is_defined() -> None:
    empty = torch.zeros(1, 1, 8, 8)
    assert DiceLoss()(torch.full((1, 1, 8, 8), -30.0), empty).item() == pytest.approx(0.0, abs=1e-4)
    assert DiceLoss()(torch.full((1, 1, 8, 8), 30.0), empty).item() == pytest.approx(1.0, abs=1e-4)
    assert torch.isfinite(DiceLoss()(torch.zeros(1, 1, 8, 8), empty))


def test_dice_perfect_and_hand_computed() -> None:
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, 0] = 1
    assert DiceLoss()(torch.where(target > 0, 50.0, -50.0), target).item() == pytest.approx(0.0, abs=1e-5)
    # p = 0.5 everywhere: 1 - 2*0.5 / (2 + 1) = 2/3
    assert DiceLoss(smooth_nr=0, smooth_dr=0)(torch.zeros(1, 1, 2, 2), target).item() == pytest.approx(2 / 3)


def test_focal_down_weights_easy_negatives() -> None:
    target = torch.zeros(1, 1, 1, 2)
    easy, hard = -4.0, 0.5
    logits = torch.tensor([[[[easy, hard]]]])
    bce = FocalLoss(gamma=0.0, reduction="none")
    focal = FocalLoss(gamma=2.0, reduction="none")
    ratio_easy = focal(logits[..., :1], target[..., :1]) / bce(logits[..., :1], target[..., :1])
    ratio_hard = focal(logits[..., 1:], target[..., 1:]) / bce(logits[..., 1:], target[..., 1:])
    assert ratio_easy.item() < 0.001 and ratio_hard.item() > 0.3


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    logits, target = _batch(3)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), expected, atol=1e-6)


def test_consistency_is_zero_for_equal_inputs_and_stops_teacher_gradient() -> None:
    student = torch.randn(2, 1, 4, 4, requires_grad=True)
    teacher = student.detach().clone().requires_grad_(True)
    assert ConsistencyLoss()(student, teacher).item() == 0.0
    loss = ConsistencyLoss()(student, teacher + 1)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differs from logits shape"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="B,C,H,W"):
        FocalLoss()(torch.zeros(4, 4), torch.zeros(4, 4))
