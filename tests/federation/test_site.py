from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record
from fedseg.federation.site import SiteTrainingConfig, train_site
from fedseg.models import ModelConfig, build_model
from fedseg.models.state import model_state
from fedseg.privacy import PrivacyBudgetExhausted, PrivacyConfig
from fedseg.training.local import LocalConfig, LocalState, LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig
from tests.privacy.test_accountant import independent_epsilon

MODEL = ModelConfig(name="unet", options={"widths": [4, 8, 16]})
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def site_data(retina_crops: Path) -> TrainingCrops:
    """Four real STARE crops: two labelled, two used as unlabelled."""
    images = [load_record(r, with_mask=i < 2) for i, r in enumerate(scan_centre(retina_crops, "STARE"))]
    return TrainingCrops(images, crop=CropConfig(size=32), augment=AugmentConfig.preset("basic"))


def _config(**privacy: object) -> SiteTrainingConfig:
    local = LocalConfig(
        batch_size=2,
        mean_teacher=MeanTeacherConfig(rampup_steps=2),
        privacy=PrivacyConfig(**{"epsilon": 4.0, "planned_rounds": 2, **privacy}),
    )
    return SiteTrainingConfig(model=MODEL, local=local, local_steps=3, seed=5)


def _global() -> dict:
    torch.manual_seed(0)
    return model_state(build_model(MODEL))


def test_epsilon_accumulates_across_rounds_and_matches_its_log(site_data: TrainingCrops) -> None:
    first = train_site(_global(), None, site_data, _config(), device=CPU)
    state = LocalState.from_bytes(first.state.to_bytes())  # the site keeps it on disk between rounds
    second = train_site(first.weights, state, site_data, _config(), device=CPU)
    assert second.metrics["epsilon"] > first.metrics["epsilon"] > 0
    assert second.metrics["epsilon"] <= 4.0
    logged = [(m["noise_multiplier"], m["sample_rate"], 3) for m in (first.metrics, second.metrics)]
    assert second.metrics["epsilon"] == pytest.approx(independent_epsilon(logged, second.metrics["delta"]), rel=1e-9)
    assert first.num_examples == 4  # labelled and unlabelled images all count under Mean Teacher


def test_a_site_at_its_budget_refuses_before_training(site_data: TrainingCrops) -> None:
    one_round = _config(planned_rounds=1)
    update = train_site(_global(), None, site_data, one_round, device=CPU)
    with pytest.raises(PrivacyBudgetExhausted, match="budget exhausted") as refused:
        train_site(update.weights, update.state, site_data, one_round, device=CPU)
    assert refused.value.spent == pytest.approx(update.metrics["epsilon"])
    assert refused.value.projected > 4.0


def test_site_state_round_trips_through_bytes_and_keeps_the_teacher(site_data: TrainingCrops) -> None:
    update = train_site(_global(), None, site_data, _config(), device=CPU)
    restored = LocalState.from_bytes(update.state.to_bytes())
    assert restored.step == update.state.step == 3
    assert restored.privacy == update.state.privacy
    assert update.state.teacher is not None and restored.teacher is not None
    assert all(torch.equal(restored.teacher[k], update.state.teacher[k]) for k in update.state.teacher)
    # The update carries the student only; the teacher stays at the site.
    assert any(not torch.equal(update.weights[k], update.state.teacher[k]) for k in update.weights)


class Built(Exception):
    """Raised by the spy once the round's teacher is built: nothing more of the round is needed."""


@pytest.mark.parametrize("follows", ["reset", "site", "blend"])
def test_each_round_the_teacher_starts_from_the_global_model_the_site_teacher_or_a_blend(
    follows: str, site_data: TrainingCrops, monkeypatch: pytest.MonkeyPatch
) -> None:
    mean_teacher = MeanTeacherConfig(rampup_steps=2, teacher_follows=follows, round_blend=0.25)
    config = SiteTrainingConfig(model=MODEL, local=LocalConfig(batch_size=2, mean_teacher=mean_teacher), local_steps=2)
    first = train_site(_global(), None, site_data, config, device=CPU)
    site_teacher = LocalState.from_bytes(first.state.to_bytes()).teacher
    torch.manual_seed(1)
    new_global = model_state(build_model(MODEL))  # the next round's global model: unlike anything the site holds
    real_build = LocalTrainer._build_teacher

    def build(trainer: LocalTrainer) -> torch.nn.Module:
        teacher = real_build(trainer)
        raise Built(teacher.state_dict())

    monkeypatch.setattr(LocalTrainer, "_build_teacher", build)
    with pytest.raises(Built) as built:
        train_site(new_global, first.state, site_data, config, device=CPU)
    teacher = built.value.args[0]
    expected = {
        "reset": new_global,
        "site": site_teacher,
        "blend": {k: 0.25 * v + 0.75 * new_global[k] if v.is_floating_point() else v for k, v in site_teacher.items()},
    }[follows]
    assert set(teacher) == set(expected)
    assert all(torch.allclose(teacher[k], expected[k]) for k in expected)
    if follows != "reset":
        assert any(not torch.allclose(teacher[k], new_global[k]) for k in new_global)
