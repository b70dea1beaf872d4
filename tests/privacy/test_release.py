"""The release table: the site's whitelist, the docs' table, and the Gaussian release of validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from fedseg.privacy import LedgerRow, SiteAccountant
from fedseg.privacy.release import Handling, gaussian_release, handling, markdown_table, releasable
from tests.conftest import REPO


def test_docs_show_the_release_table_of_the_code() -> None:
    docs = (REPO / "docs" / "privacy.md").read_text()
    assert markdown_table() in docs, "docs/privacy.md is out of date: paste `python -m fedseg.privacy.release`"


def test_only_listed_fields_leave_and_under_dp_losses_timing_and_exact_counts_stay() -> None:
    metrics = {"supervised_loss": 0.3, "consistency_loss": 0.1, "seconds": 4.0, "epsilon": 1.0, "steps": 2, "new": 9}
    assert releasable("train", "train", "metrics", metrics, dp=True) == {"epsilon": 1.0, "steps": 2}
    assert set(releasable("train", "train", "metrics", metrics, dp=False)) == set(metrics) - {"new"}
    counts = {"n_images": 3, "dice_sum": 2.1, "tp": 500, "fn": 20}
    assert releasable("evaluate", "train", "counts", counts, dp=True) == {"n_images": 3, "dice_sum": 2.1}
    assert releasable("evaluate", "heldout", "counts", counts, dp=True) == counts  # held-out scores, by design
    assert handling("evaluate", "train", "counts", "dice_sum", dp=True) is Handling.GAUSSIAN
    assert handling("train", "train", "weights", "conv.weight", dp=True) is Handling.UPDATE
    assert handling("train", "train", "metrics", "images_seen", dp=False) is None


def test_a_gaussian_release_is_accounted_before_it_is_noised() -> None:
    accountant = SiteAccountant(
        noise_multiplier=1.0, sample_rate=0.1, delta=1e-5, epsilon_budget=50.0, release_noise=2.0
    )
    released = np.array([gaussian_release([0.5] * 10 + [3.0], accountant, upper=11) for _ in range(400)])
    assert accountant.releases == 400 and accountant.history == [(2.0, 1.0, 400)]
    assert released.mean() == pytest.approx(6.0, abs=0.3)  # each value clipped to [0, 1]: 5 + 1
    assert released.std() == pytest.approx(2.0, rel=0.15)
    row = accountant.ledger_row(site="STARE", round=3, kind="validation")
    assert (row.noise_multiplier, row.sampling_rate, row.steps, row.releases) == (2.0, 1.0, 1, 400)
    assert LedgerRow.from_json(row.to_json()) == row
    # rows of fedseg 0.1.0 read as updates or refusals
    assert (
        LedgerRow.from_json(
            {
                "site": "A",
                "round": 1,
                "refused": True,
                "epsilon": 3.0,
                "delta": 1e-5,
                "epsilon_budget": 3.0,
                "budget_left": 0.0,
            }
        ).kind
        == "refused"
    )
