from __future__ import annotations

import numpy as np
import pytest

from fedseg.metrics import bootstrap_ci


def test_interval_contains_the_mean_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.7, 0.1, 10), rng.normal(0.7, 0.1, 400)
    low_few, high_few = bootstrap_ci(few)
    low_many, high_many = bootstrap_ci(many)
    assert low_few < few.mean() < high_few and low_many < many.mean() < high_many
    assert high_many - low_many < (high_few - low_few) / 3
    assert bootstrap_ci(few) == bootstrap_ci(few)  # seeded


def test_edge_cases() -> None:
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([0.4]) == (0.4, 0.4)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)
