"""A site's privacy budget and the error raised before a round would exceed it."""

from __future__ import annotations

from dataclasses import dataclass


def default_delta(n_images: int) -> float:
    """A delta well below 1/n: ``min(1e-5, 1 / (10 n))``."""
    if n_images < 1:
        raise ValueError(f"need at least one image to set delta, got {n_images}")
    return min(1e-5, 1.0 / (10 * n_images))


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings of a site: target (epsilon, delta) over ``planned_rounds`` rounds, clipping bound.

    ``delta`` None means ``default_delta(n)`` for the site's number of images n.
    """

    epsilon: float
    delta: float | None = None
    max_grad_norm: float = 1.0
    planned_rounds: int = 1
    accountant: str = "rdp"

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

    def delta_for(self, n_images: int) -> float:
        delta = self.delta if self.delta is not None else default_delta(n_images)
        if delta >= 1.0 / n_images:
            raise ValueError(
                f"dp delta {delta} is not below 1/n = {1.0 / n_images:.3g} for this site's {n_images} "
                "images; choose a smaller delta"
            )
        return delta


class PrivacyBudgetExhausted(RuntimeError):
    """Training would take the site past its (epsilon, delta) budget; nothing was trained."""

    def __init__(self, *, spent: float, projected: float, budget: float, delta: float) -> None:
        self.spent, self.projected, self.budget, self.delta = spent, projected, budget, delta
        super().__init__(
            f"privacy budget exhausted: epsilon spent {spent:.4f}, this round would reach {projected:.4f}, "
            f"budget {budget:.4f} (delta {delta:.2e}). The site trains no further."
        )
