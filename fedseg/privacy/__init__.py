"""Differential privacy for site training: budget, accountant, the private-training engine, releases, ledger.

Small, separated pieces in the manner of Opacus, with keyword-only privacy parameters.
``PrivateTraining`` (``engine.py``) owns a site's private training; ``release.py`` lists every field
that may leave a site and how it is protected.
"""

from fedseg.privacy.accountant import SiteAccountant, add_steps, calibrate_noise, epsilon_of
from fedseg.privacy.budget import (
    UNITS,
    PrivacyBudgetExhausted,
    PrivacyBudgetTooLow,
    PrivacyConfig,
    default_delta,
)
from fedseg.privacy.ledger import LedgerRow

__all__ = [
    "UNITS",
    "LedgerRow",
    "PrivacyBudgetExhausted",
    "PrivacyBudgetTooLow",
    "PrivacyConfig",
    "SiteAccountant",
    "add_steps",
    "calibrate_noise",
    "default_delta",
    "epsilon_of",
]
