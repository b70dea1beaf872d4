from __future__ import annotations

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedseg.privacy import (
    PrivacyBudgetExhausted,
    PrivacyBudgetTooLow,
    PrivacyConfig,
    SiteAccountant,
    add_steps,
    calibrate_noise,
    default_delta,
    epsilon_of,
)
from fedseg.privacy.accountant import RDP_ORDERS


def independent_epsilon(entries: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon straight from Opacus' analysis functions: RDP adds up over rounds."""
    rdp = sum(
        compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(RDP_ORDERS)) for sigma, q, steps in entries
    )
    epsilon, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(epsilon)


def test_epsilon_of_history_matches_opacus_analysis() -> None:
    history = add_steps(add_steps([], 1.1, 0.05, 30), 1.1, 0.05, 20)
    assert history == [(1.1, 0.05, 50)]
    history = add_steps(history, 0.9, 0.08, 10)
    expected = independent_epsilon([(1.1, 0.05, 50), (0.9, 0.08, 10)], 1e-5)
    assert epsilon_of(history, delta=1e-5) == pytest.approx(expected, rel=1e-9)
    assert epsilon_of([], delta=1e-5) == 0.0


def test_calibrated_noise_meets_the_budget_at_the_planned_steps() -> None:
    sigma = calibrate_noise(epsilon=3.0, delta=1e-5, sample_rate=0.1, steps=120)
    spent = epsilon_of([(sigma, 0.1, 120)], delta=1e-5)
    assert 2.95 < spent <= 3.0
    assert epsilon_of([(sigma, 0.1, 240)], delta=1e-5) > 3.0


def test_delta_defaults_below_one_over_n_and_bad_settings_are_named() -> None:
    assert default_delta(20) == 1e-5 and default_delta(10**6) == pytest.approx(1e-7)
    assert PrivacyConfig(epsilon=1).delta_for(50) < 1 / 50
    with pytest.raises(ValueError, match="not below 1/n"):
        PrivacyConfig(epsilon=1, delta=0.1).delta_for(20)
    with pytest.raises(ValueError, match="dp epsilon must be > 0"):
        PrivacyConfig(epsilon=0)
    with pytest.raises(ValueError, match="max grad norm"):
        PrivacyConfig(epsilon=1, max_grad_norm=-1)


def test_calibration_leaves_room_for_the_planned_validation_releases() -> None:
    sigma = calibrate_noise(epsilon=4.0, delta=1e-5, sample_rate=0.2, steps=100, releases=5, release_noise=6.0)
    spent = independent_epsilon([(sigma, 0.2, 100), (6.0, 1.0, 5)], 1e-5)
    assert 3.99 < spent <= 4.0
    assert sigma > calibrate_noise(epsilon=4.0, delta=1e-5, sample_rate=0.2, steps=100)
    with pytest.raises(PrivacyBudgetTooLow, match="'dp-validation-noise'"):
        calibrate_noise(epsilon=1.0, delta=1e-5, sample_rate=0.2, steps=100, releases=30, release_noise=1.0)


def test_site_accountant_counts_steps_and_releases_and_round_trips() -> None:
    accountant = SiteAccountant(
        noise_multiplier=1.2, sample_rate=0.1, delta=1e-5, epsilon_budget=3.0, release_noise=5.0
    )
    accountant.step(10)
    accountant.record_release()
    accountant.step(4)
    assert (accountant.steps, accountant.releases) == (14, 1)
    expected = independent_epsilon([(1.2, 0.1, 10), (5.0, 1.0, 1), (1.2, 0.1, 4)], 1e-5)
    assert accountant.get_epsilon() == pytest.approx(expected, rel=1e-9)
    assert SiteAccountant.from_state_dict(accountant.state_dict()) == accountant
    more = accountant.max_more_steps()
    assert accountant.projected_epsilon(steps=more) <= 3.0 < accountant.projected_epsilon(steps=more + 1)
    with pytest.raises(PrivacyBudgetExhausted):
        accountant.check(steps=more + 1)
    # the state of fedseg 0.1.0: no unit, no counts; every history step was a DP-SGD step of one image
    old = dict(noise_multiplier=1.2, sample_rate=0.1, delta=1e-5, epsilon_budget=3.0, history=[[1.2, 0.1, 7]])
    restored = SiteAccountant.from_state_dict(old)
    assert (restored.steps, restored.releases, restored.unit) == (7, 0, "image")
