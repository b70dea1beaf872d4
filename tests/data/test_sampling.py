from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fedseg.data.sampling import PoissonKeys, StepBatches, StratifiedKeys, UniformKeys


def test_keys_depend_only_on_seed_and_step() -> None:
    sampler = UniformKeys(range(10), 4, seed=3)
    full = list(StepBatches(sampler, start=0, stop=6))
    resumed = list(StepBatches(UniformKeys(range(10), 4, seed=3), start=4, stop=6))
    assert full[4:] == resumed and len(full) == 6
    assert full != list(StepBatches(UniformKeys(range(10), 4, seed=4), start=0, stop=6))


def _units(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]


def test_poisson_batches_have_the_expected_size_and_can_be_empty() -> None:
    sampler = PoissonKeys(_units(50), 0.1)
    sizes = np.array([len(sampler.keys_for_step(s)) for s in range(3000)])
    assert sizes.mean() == pytest.approx(5.0, rel=0.05)
    assert sizes.var() == pytest.approx(50 * 0.1 * 0.9, rel=0.15)
    tiny = PoissonKeys(_units(3), 0.05)
    assert any(len(tiny.keys_for_step(s)) == 0 for s in range(100))


def test_poisson_includes_each_unit_independently_with_all_its_images() -> None:
    sampler = PoissonKeys([[0, 1], *_units(20)[2:]], 0.3)
    counts = np.zeros(20)
    for step in range(4000):
        indices = [index for index, _ in sampler.keys_for_step(step)]
        assert (0 in indices) == (1 in indices)  # images 0 and 1 are one subject: together or not at all
        counts[indices] += 1
    assert np.allclose(counts / 4000, 0.3, atol=0.03)


def test_poisson_draws_are_secret_and_repeat_only_with_the_same_entropy() -> None:
    sampler = PoissonKeys(_units(40), 0.5)
    assert sampler.keys_for_step(0) != sampler.keys_for_step(0)  # not a function of the step: a fresh draw

    def fixed_entropy() -> Callable[[int], bytes]:
        stream = np.random.default_rng(7)
        return lambda n: stream.bytes(n)

    first, second = (PoissonKeys(_units(40), 0.5, entropy=fixed_entropy()) for _ in range(2))
    assert [first.keys_for_step(s) for s in range(5)] == [second.keys_for_step(s) for s in range(5)]


def test_stratified_batches_add_unlabelled_images_to_a_full_labelled_batch() -> None:
    sampler = StratifiedKeys([0, 1], list(range(2, 40)), 8, unlabelled_ratio=0.5, seed=0)
    for step in range(20):
        indices = [i for i, _ in sampler.keys_for_step(step)]
        assert len(indices) == 12 and sum(i < 2 for i in indices) == 8
    labelled_only = StratifiedKeys([0, 1], [], 8, unlabelled_ratio=1.0, seed=0)
    assert len(labelled_only.keys_for_step(0)) == 8
    with pytest.raises(ValueError, match="at least one labelled"):
        StratifiedKeys([], [1, 2], 4, unlabelled_ratio=1.0, seed=0)


def test_poisson_rates_may_differ_per_unit() -> None:
    rates = [0.1] * 10 + [0.6] * 10
    sampler = PoissonKeys(_units(20), rates)
    counts = np.zeros(20)
    for step in range(3000):
        counts[[index for index, _ in sampler.keys_for_step(step)]] += 1
    assert np.allclose(counts / 3000, rates, atol=0.04)
    with pytest.raises(ValueError, match=r"every sample_rate must be in \(0, 1\]"):
        PoissonKeys(_units(2), [0.5, 0.0])
