from __future__ import annotations

import math

import pytest
import torch

from fedseg.models import ModelConfig, build_model
from fedseg.training.mean_teacher import (
    MeanTeacherConfig,
    Perturbation,
    PerturbationConfig,
    consistency_weight,
    ema_update,
    make_teacher,
)


def test_consistency_weight_ramps_up_along_a_sigmoid() -> None:
    config = MeanTeacherConfig(consistency_weight=2.0, rampup_steps=100)
    assert consistency_weight(0, config) == pytest.approx(2.0 * math.exp(-5))
    assert consistency_weight(50, config) == pytest.approx(2.0 * math.exp(-5 * 0.25))
    assert consistency_weight(100, config) == consistency_weight(500, config) == 2.0
    weights = [consistency_weight(s, config) for s in range(0, 101, 10)]
    assert weights == sorted(weights)


def test_ema_warm_up_follows_the_student_then_averages() -> None:
    torch.manual_seed(0)
    student = build_model(ModelConfig(name="unet", options={"widths": [4, 8]}))
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, step=0, decay=0.99)  # alpha = 0: the teacher becomes the student
    assert all(torch.equal(t, s) for t, s in zip(teacher.state_dict().values(), student.state_dict().values()))
    before = [t.clone() for t in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, step=1000, decay=0.99)
    moved = [float((t - b).abs().max()) for t, b in zip(teacher.parameters(), before)]
    assert all(m == pytest.approx(0.01, abs=1e-5) for m in moved)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_perturbation_flips_are_undone_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    view = Perturbation(8, PerturbationConfig(noise_std=0.0, jitter=0.0), generator=generator)
    x = torch.randn(8, 1, 5, 7)
    assert torch.equal(view.undo(view.apply(x)), x)
    assert bool(view.flip_h.any()) and bool((~view.flip_h).any())
