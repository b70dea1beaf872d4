from __future__ import annotations

import numpy as np
import pytest

from fedseg.data.sampling import PoissonKeys, StepBatches, StratifiedKeys, UniformKeys


def test_keys_depend_only_on_seed_and_step() -> None:
    sampler = UniformKeys(range(10), 4, seed=3)
    full = list(StepBatches(sampler, start=0, stop=6))
    resumed = list(StepBatches(UniformKeys(range(10), 4, seed=3), start=4, stop=6))
    assert full[4:] == resumed and len(full) == 6
    assert full != list(StepBatches(UniformKeys(range(10), 4, seed=4), start=0, stop=6))


def test_poisson_batches_have_the_expected_size_and_can_be_empty() -> None:
    sampler = PoissonKeys(range(50), 0.1, seed=0)
    sizes = np.array([len(sampler.keys_for_step(s)) for s in range(3000)])
    assert sizes.mean() == pytest.approx(5.0, rel=0.05)
    assert sizes.var() == pytest.approx(50 * 0.1 * 0.9, rel=0.15)
    tiny = PoissonKeys(range(3), 0.05, seed=0)
    assert any(len(tiny.keys_for_step(s)) == 0 for s in range(100))


def test_poisson_includes_each_image_independently() -> None:
    sampler = PoissonKeys(range(20), 0.3, seed=1)
    counts = np.zeros(20)
    for step in range(4000):
        for index, _ in sampler.keys_for_step(step):
            counts[index] += 1
    assert np.allclose(counts / 4000, 0.3, atol=0.03)


def test_stratified_batches_add_unlabelled_images_to_a_full_labelled_batch() -> None:
    sampler = StratifiedKeys([0, 1], list(range(2, 40)), 8, unlabelled_ratio=0.5, seed=0)
    for step in range(20):
        indices = [i for i, _ in sampler.keys_for_step(step)]
        assert len(indices) == 12 and sum(i < 2 for i in indices) == 8
    labelled_only = StratifiedKeys([0, 1], [], 8, unlabelled_ratio=1.0, seed=0)
    assert len(labelled_only.keys_for_step(0)) == 8
    with pytest.raises(ValueError, match="at least one labelled"):
        StratifiedKeys([], [1, 2], 4, unlabelled_ratio=1.0, seed=0)
