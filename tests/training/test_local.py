from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record
from fedseg.models import ModelConfig, available_models, model_spec
from fedseg.privacy import PrivacyConfig
from fedseg.training.local import LocalConfig, LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig
from tests.models.test_contract import config_for

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def crops(retina_crops: Path) -> TrainingCrops:
    images = [load_record(r, with_mask=i % 2 == 0) for i, r in enumerate(scan_centre(retina_crops, "AV-WIDE"))]
    return TrainingCrops(images, crop=CropConfig(size=32), augment=AugmentConfig.preset("basic"))


@pytest.mark.parametrize("name", [n for n in available_models() if model_spec(n).spatial_dims == 2])
def test_a_dp_mean_teacher_step_runs_for_every_zoo_model(name: str, crops: TrainingCrops) -> None:
    config = LocalConfig(batch_size=2, mean_teacher=MeanTeacherConfig(), privacy=PrivacyConfig(epsilon=8.0))
    trainer = LocalTrainer(
        model_config=config_for(name), config=config, dataset=crops, device=CPU, seed=0, planned_steps=1
    )
    before = {k: v.clone() for k, v in trainer.weights().items()}
    stats = trainer.run(1)
    after = trainer.weights()
    assert set(after) == set(before) and not any(k.startswith("_module") for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert 0 < stats.epsilon <= 8.0


def test_an_empty_poisson_batch_still_adds_noise_and_counts(crops: TrainingCrops) -> None:
    config = LocalConfig(batch_size=1, privacy=PrivacyConfig(epsilon=50.0))
    trainer = LocalTrainer(
        model_config=ModelConfig(name="unet", options={"widths": [4, 8]}),
        config=config,
        dataset=crops,
        device=CPU,
        seed=0,
        planned_steps=1,
    )
    before = {k: v.clone() for k, v in trainer.weights().items()}
    trainer.train_step(None)
    assert trainer.state.privacy.history[-1][2] == 1
    assert any(not torch.equal(before[k], v) for k, v in trainer.weights().items())


def test_without_dp_or_mean_teacher_only_labelled_images_are_sampled(crops: TrainingCrops) -> None:
    trainer = LocalTrainer(
        model_config=ModelConfig(name="unet", options={"widths": [4, 8]}),
        config=LocalConfig(batch_size=4),
        dataset=crops,
        device=CPU,
        seed=0,
        planned_steps=5,
    )
    indices = {i for step in range(20) for i, _ in trainer.keys.keys_for_step(step)}
    assert indices == {0, 2}
    stats = trainer.run(2)
    assert stats.consistency_loss == 0.0 and stats.epsilon is None and stats.examples == 2


def test_fedprox_pulls_toward_the_global_weights(crops: TrainingCrops) -> None:
    model = ModelConfig(name="unet", options={"widths": [4, 8]})

    def drift(mu: float) -> float:
        torch.manual_seed(0)
        trainer = LocalTrainer(
            model_config=model,
            config=LocalConfig(batch_size=2, fedprox_mu=mu),
            dataset=crops,
            device=CPU,
            seed=0,
            planned_steps=8,
        )
        start = {k: v.clone() for k, v in trainer.weights().items()}
        trainer.run(8)
        return sum(float((trainer.weights()[k] - start[k]).norm()) for k in start)

    assert drift(50.0) < drift(0.0)
