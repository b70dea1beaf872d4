"""``PrivateTraining``: secret batches, subject-level DP on CHASE_DB1, and the warnings on hopeless noise."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.grouping import subject_ids
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record
from fedseg.data.sampling import PoissonKeys
from fedseg.models import ModelConfig
from fedseg.privacy import PrivacyBudgetTooLow, PrivacyConfig, default_delta
from fedseg.privacy.engine import PrivateTraining, calibrated_accountant, privacy_units
from fedseg.training.local import LocalConfig, LocalTrainer
from tests.conftest import RETINA, require_shared_data
from tests.privacy.test_accountant import independent_epsilon

TINY = ModelConfig(name="unet", options={"widths": [4, 8]})
CPU = torch.device("cpu")


def _crops(root: Path, centre: str) -> TrainingCrops:
    images = [load_record(record) for record in scan_centre(root, centre)]
    return TrainingCrops(images, crop=CropConfig(size=32), augment=AugmentConfig.preset("basic"))


def _trainer(crops: TrainingCrops, *, seed: int, unit: str = "image") -> LocalTrainer:
    config = LocalConfig(batch_size=2, privacy=PrivacyConfig(epsilon=8.0, unit=unit))
    return LocalTrainer(model_config=TINY, config=config, dataset=crops, device=CPU, seed=seed, planned_steps=20)


def _batches(trainer: LocalTrainer, steps: int = 40) -> list[list[int]]:
    return [sorted(index for index, _ in trainer.keys.keys_for_step(step)) for step in range(steps)]


def test_dp_batches_are_secret_draws_that_no_run_seed_reaches(
    retina_crops: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crops = _crops(retina_crops, "STARE")
    # Identical config and seed: the batches differ (they come from OS entropy, not from the seed).
    assert _batches(_trainer(crops, seed=0)) != _batches(_trainer(crops, seed=0))
    assert isinstance(_trainer(crops, seed=0).keys, PoissonKeys)

    # Every random bit of the sampler comes from os.urandom: with the same entropy stream, runs with
    # different seeds draw the same batches and crops, so no run-config seed reaches the DP sampler.
    def draws(seed: int) -> list:
        stream = np.random.default_rng(11)
        monkeypatch.setattr(os, "urandom", lambda n: stream.bytes(n))
        trainer = _trainer(crops, seed=seed)
        return [trainer.keys.keys_for_step(step) for step in range(10)]

    assert draws(seed=0) == draws(seed=123_456)


def test_subject_level_dp_on_chase_db1_samples_both_eyes_together_and_matches_opacus(retina_crops: Path) -> None:
    crops = _crops(retina_crops, "CHASE_DB1")
    assert [stem for _, stem in crops.sources] == ["Image_01L", "Image_01R", "Image_02L", "Image_02R"]
    trainer = _trainer(crops, seed=0, unit="subject")
    private = trainer.private
    assert private is not None and private.units == [[0, 1], [2, 3]]  # one child, both eyes: one unit
    for batch in _batches(trainer, 300):
        assert all((2 * child in batch) == (2 * child + 1 in batch) for child in (0, 1))
    stats = trainer.run(3)
    accountant = private.accountant
    assert accountant.unit == "subject" and accountant.sample_rate == 0.5  # 2 images per batch of 4
    assert accountant.delta == default_delta(2)  # delta below 1/n for n = 2 children
    expected = independent_epsilon([(accountant.noise_multiplier, 0.5, 3)], accountant.delta)
    assert stats.epsilon == pytest.approx(expected, rel=1e-9)
    assert private.ledger_row(site="CHASE_DB1", round=1, steps=3).unit == "subject"


def test_on_all_of_chase_db1_a_child_is_one_unit_and_the_ledger_epsilon_is_opacus() -> None:
    """The 28 images of CHASE_DB1 (14 children, two eyes each), file names only: 14 units of two eyes."""
    require_shared_data()
    records = scan_centre(RETINA, "CHASE_DB1")
    subjects = subject_ids([(record.centre, record.stem) for record in records], {})
    units = privacy_units(range(len(records)), "subject", subjects)
    assert len(records) == 28 and len(units) == 14
    assert all({records[i].stem[:-1] for i in unit} == {records[unit[0]].stem[:-1]} for unit in units)
    assert all(sorted(records[i].stem[-1] for i in unit) == ["L", "R"] for unit in units)
    private = PrivateTraining.start(
        PrivacyConfig(epsilon=4.0, unit="subject"), units=units, batch_size=4, planned_steps=60
    )
    accountant = private.accountant
    assert accountant.sample_rate == pytest.approx(4 / 28) and accountant.delta == default_delta(14)
    sampler, eyes = private.sampler(), {i: next(u for u in units if i in u) for unit in units for i in unit}
    for _ in range(200):
        batch = {index for index, _ in sampler.keys_for_step(0)}
        assert all(set(eyes[index]) <= batch for index in batch)  # a sampled child brings both eyes
    for _ in range(60):
        accountant.step()
    row = private.ledger_row(site="CHASE_DB1", round=1, steps=60)
    expected = independent_epsilon([(accountant.noise_multiplier, 4 / 28, 60)], default_delta(14))
    assert (row.unit, row.steps, row.sampling_rate) == ("subject", 60, pytest.approx(4 / 28))
    assert row.epsilon == pytest.approx(expected, rel=1e-9) and row.epsilon <= 4.0


def test_too_small_an_epsilon_names_the_option_and_hopeless_noise_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(PrivacyBudgetTooLow, match=r"Raise --dp-epsilon \(run config 'dp-epsilon'"):
        calibrated_accountant(PrivacyConfig(epsilon=1e-4), n_units=100, sample_rate=0.08, planned_steps=2000)
    with caplog.at_level(logging.WARNING):
        private = PrivateTraining.start(
            PrivacyConfig(epsilon=0.05), units=[[i] for i in range(50)], batch_size=4, planned_steps=100
        )
    assert private.accountant.noise_multiplier > 4
    assert "will learn next to nothing" in caplog.text and "--dp-epsilon" in caplog.text


def test_per_unit_rates_are_accounted_at_the_largest_and_set_the_expected_batch() -> None:
    units, rates, budget = [[i] for i in range(8)], [0.1] * 4 + [0.3] * 4, PrivacyConfig(epsilon=8.0)
    private = PrivateTraining.start(budget, units=units, batch_size=4, planned_steps=10, rates=rates)
    assert private.accountant.sample_rate == 0.3 and private.expected_batch_size == pytest.approx(1.6)
    assert list(private.sampler().sample_rate) == rates
    uniform = PrivateTraining.start(budget, units=units, batch_size=4, planned_steps=10)
    assert uniform.accountant.sample_rate == 0.5 and uniform.accountant.noise_multiplier > 0
    with pytest.raises(ValueError, match="3 sampling rates for 8 privacy units"):
        PrivateTraining.start(budget, units=units, batch_size=4, planned_steps=10, rates=rates[:3])
