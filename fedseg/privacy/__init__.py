"""Differential privacy for site training: budget, accountant, calibration and the DP-SGD step.

Small, separated pieces in the manner of Opacus, with keyword-only privacy parameters.
"""

from fedseg.privacy.accountant import add_steps, calibrate_noise, epsilon_of
from fedseg.privacy.budget import PrivacyBudgetExhausted, PrivacyConfig, default_delta

__all__ = ["PrivacyBudgetExhausted", "PrivacyConfig", "add_steps", "calibrate_noise", "default_delta", "epsilon_of"]
