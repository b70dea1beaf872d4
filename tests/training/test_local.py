from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record
from fedseg.data.sampling import UniformKeys, step_loader
from fedseg.models import ModelConfig, available_models, model_spec
from fedseg.privacy import PrivacyConfig
from fedseg.training.local import LocalConfig, LocalState, LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig, PerturbationConfig
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


def test_under_dp_a_site_keeps_adamws_moments_and_its_accountant_between_rounds(crops: TrainingCrops) -> None:
    """Round 2 starts from round 1's state bytes: the same AdamW moments (site-local, computed from noised
    gradients: post-processing) and the same accountant, which goes on counting."""

    def trainer(state: LocalState | None) -> LocalTrainer:
        config = LocalConfig(batch_size=2, privacy=PrivacyConfig(epsilon=8.0))
        model = ModelConfig(name="unet", options={"widths": [4, 8]})
        return LocalTrainer(
            model_config=model, config=config, dataset=crops, device=CPU, seed=0, planned_steps=4, state=state
        )

    first = trainer(None)
    first.run(2)
    state = LocalState.from_bytes(first.export_state().to_bytes())
    moments = state.optimizer["state"]
    assert moments and all(entry["step"] == 2 for entry in moments.values())
    second = trainer(state)
    restored = second.optimizer.original_optimizer.state_dict()["state"]
    assert all(torch.equal(restored[k]["exp_avg"], moments[k]["exp_avg"]) for k in moments)
    second.run(2)
    assert second.private.accountant.steps == 4 and second.export_state().optimizer["state"][0]["step"] == 4


def test_perturb_inputs_gives_supervised_only_the_mean_teacher_students_inputs(crops: TrainingCrops) -> None:
    """The fair comparison: with the same seed, a supervised-only student trained with ``perturb_inputs``
    sees exactly the perturbed tensor the Mean Teacher student sees; without it, the clean crop."""
    mean_teacher = MeanTeacherConfig()
    configs = {
        "mean-teacher": LocalConfig(batch_size=2, mean_teacher=mean_teacher),
        "perturbed": LocalConfig(batch_size=2, perturb_inputs=mean_teacher.student_perturbation),
        "clean": LocalConfig(batch_size=2),
    }
    batch = next(iter(step_loader(crops, UniformKeys([0, 2], 2, seed=0), start=0, stop=1)))
    seen: dict[str, torch.Tensor] = {}
    for name, config in configs.items():
        trainer = LocalTrainer(
            model_config=ModelConfig(name="unet", options={"widths": [4, 8]}),
            config=config,
            dataset=crops,
            device=CPU,
            seed=3,
            planned_steps=1,
        )
        trainer.student.register_forward_pre_hook(lambda _, inputs, name=name: seen.setdefault(name, inputs[0]))
        trainer.train_step(batch)
    assert torch.equal(seen["mean-teacher"], seen["perturbed"])
    assert torch.equal(seen["clean"], batch["image"]) and not torch.equal(seen["perturbed"], batch["image"])
    with pytest.raises(ValueError, match="perturb_inputs .* differs from Mean Teacher's student perturbation"):
        LocalConfig(mean_teacher=mean_teacher, perturb_inputs=PerturbationConfig(noise_std=0.5))


def test_dp_balance_samples_labelled_and_unlabelled_images_at_their_own_rates_accounted_at_the_larger(
    crops: TrainingCrops,
) -> None:
    """Two labelled and two unlabelled crops, an expected batch of 2 images split 1 : 3: rates 1/4 and 3/4;
    the accountant (hence epsilon and the noise calibration) counts 3/4, the sampler draws each at its own."""
    mean_teacher = MeanTeacherConfig(dp_balance=True, unlabelled_ratio=3.0)
    config = LocalConfig(batch_size=2, mean_teacher=mean_teacher, privacy=PrivacyConfig(epsilon=8.0))
    trainer = LocalTrainer(
        model_config=ModelConfig(name="unet", options={"widths": [4, 8]}),
        config=config,
        dataset=crops,
        device=CPU,
        seed=0,
        planned_steps=4,
    )
    labelled = {i for i, flag in enumerate(crops.labelled) if flag}
    assert len(labelled) == 2 and len(crops) == 4
    assert trainer.private.accountant.sample_rate == 0.75 and trainer.private.expected_batch_size == 2.0
    drawn = [i for _ in range(2000) for i, _ in trainer.keys.keys_for_step(0)]
    assert sum(i in labelled for i in drawn) / 2000 == pytest.approx(2 * 0.25, abs=0.06)
    assert sum(i not in labelled for i in drawn) / 2000 == pytest.approx(2 * 0.75, abs=0.08)
    assert 0 < trainer.run(2).epsilon <= 8.0
    with pytest.raises(ValueError, match="dp_balance needs unlabelled_ratio > 0"):
        MeanTeacherConfig(dp_balance=True, unlabelled_ratio=0.0)
