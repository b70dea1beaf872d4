"""A site's privacy settings, and the errors raised when a budget cannot be met."""

from __future__ import annotations

from dataclasses import dataclass

from fedseg.configuration import ConfigError

UNITS = ("image", "subject")


def default_delta(n_units: int) -> float:
    """A delta well below 1/n for n privacy units (images or subjects): ``min(1e-5, 1 / (10 n))``."""
    if n_units < 1:
        raise ValueError(f"need at least one image to set delta, got {n_units}")
    return min(1e-5, 1.0 / (10 * n_units))


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings of a site: target (epsilon, delta), clipping bound, privacy unit and the plan.

    ``delta`` None means ``default_delta(n)`` for the site's number n of privacy units.
    ``unit``: ``image`` (one image is protected) or ``subject`` (all images of one patient together).
    ``release_noise``: noise multiplier of the Gaussian mechanism that releases a site's validation
    score to the server (0: the score stays at the site). The noise is calibrated so that
    ``planned_rounds`` rounds of training and ``planned_releases`` such releases fit in epsilon.
    """

    epsilon: float
    delta: float | None = None
    max_grad_norm: float = 1.0
    planned_rounds: int = 1
    accountant: str = "rdp"
    unit: str = "image"
    release_noise: float = 0.0
    planned_releases: int = 0

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"dp epsilon must be > 0, got {self.epsilon}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(f"dp delta must be in (0, 1), got {self.delta}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max grad norm must be > 0, got {self.max_grad_norm}")
        if self.planned_rounds < 1:
            raise ValueError(f"planned rounds must be >= 1, got {self.planned_rounds}")
        if self.accountant not in ("rdp", "prv"):
            raise ValueError(f"accountant must be 'rdp' or 'prv', got '{self.accountant}'")
        if self.unit not in UNITS:
            raise ValueError(f"privacy unit must be one of {UNITS}, got '{self.unit}'")
        if self.release_noise < 0 or self.planned_releases < 0:
            raise ValueError(
                f"validation release noise and planned releases must be >= 0, got {self.release_noise}, "
                f"{self.planned_releases}"
            )

    @property
    def releases(self) -> int:
        """Planned Gaussian releases of validation scores (none when the scores stay at the site)."""
        return self.planned_releases if self.release_noise > 0 else 0

    def delta_for(self, n_units: int) -> float:
        delta = self.delta if self.delta is not None else default_delta(n_units)
        if delta >= 1.0 / n_units:
            raise ValueError(
                f"dp delta {delta} is not below 1/n = {1.0 / n_units:.3g} for this site's {n_units} "
                f"{self.unit}s; choose a smaller delta"
            )
        return delta


class PrivacyBudgetTooLow(ConfigError):
    """No amount of noise lets the planned training fit in the budget."""


class PrivacyBudgetExhausted(RuntimeError):
    """Training (or a release) would take the site past its (epsilon, delta) budget; nothing was done."""

    def __init__(self, *, spent: float, projected: float, budget: float, delta: float) -> None:
        self.spent, self.projected, self.budget, self.delta = spent, projected, budget, delta
        super().__init__(
            f"privacy budget exhausted: epsilon spent {spent:.4f}, this round would reach {projected:.4f}, "
            f"budget {budget:.4f} (delta {delta:.2e}). The site trains no further."
        )
