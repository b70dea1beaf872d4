"""Privacy accounting that persists across rounds: ``SiteAccountant``.

Follows Opacus' ``IAccountant``: a history of mechanisms ``[(noise_multiplier, sample_rate, steps)]``
with ``step``, ``get_epsilon`` and ``state_dict`` / ``load_state_dict``. A DP-SGD step is the
Poisson-subsampled Gaussian mechanism at (sigma, q); releasing a value of sensitivity 1 with
Gaussian noise of standard deviation sigma is the same mechanism at q = 1, so the site's updates
and its released validation scores compose in one RDP history. The history lives in the site
state, so epsilon accumulates over the whole federation (a fresh PrivacyEngine per round, which
forgets the rounds before, is the classic bug this prevents).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np
from opacus.accountants import create_accountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from opacus.accountants.rdp import RDPAccountant

from fedseg.privacy.budget import PrivacyBudgetExhausted, PrivacyBudgetTooLow
from fedseg.privacy.ledger import LedgerRow

logger = logging.getLogger(__name__)

History = list[tuple[float, float, int]]

# Opacus' default RDP orders stop at 63; few steps with little noise want higher orders for a tight bound.
RDP_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS) + (80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0)
INTEGER_ORDERS = tuple(order for order in RDP_ORDERS if float(order).is_integer())
MAX_NOISE_MULTIPLIER = 1e4  # beyond this, DP-SGD learns nothing whatever the batch
CALIBRATION_TOLERANCE = 0.005  # calibrated epsilon lies in [target - tolerance, target]


def _epsilon_options(accountant: str) -> dict[str, Any]:
    return {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {}


@lru_cache(maxsize=4096)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """RDP at ``RDP_ORDERS`` of one step (RDP adds up over steps, so a history costs one call per mechanism)."""
    return tuple(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS)))


def epsilon_of(history: Sequence[tuple[float, float, int]], *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon spent by a history of (noise multiplier, sampling rate, steps) at ``delta`` (0 when empty).

    The RDP accountant's own computation (Opacus' ``compute_rdp`` and ``get_privacy_spent``), with the
    one-step RDP of each mechanism cached; other accountants go through Opacus' accountant object.
    """
    entries = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not entries:
        return 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # still a valid bound
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # PRV's log(1 - q) at q = 1
        if accountant == "rdp":
            rdp = sum(np.asarray(_rdp_of_one_step(s, q)) * n for s, q, n in entries)
            epsilon, _ = get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
            return float(epsilon)
        tracker = create_accountant(accountant)
        tracker.history = entries
        return float(tracker.get_epsilon(delta=delta, **_epsilon_options(accountant)))


def add_steps(
    history: Sequence[tuple[float, float, int]], noise_multiplier: float, sample_rate: float, steps: int
) -> History:
    """``history`` with ``steps`` more steps at (noise_multiplier, sample_rate), merged with a matching tail."""
    merged: History = [(float(s), float(q), int(n)) for s, q, n in history]
    if steps <= 0:
        return merged
    if merged and merged[-1][0] == noise_multiplier and merged[-1][1] == sample_rate:
        sigma, rate, count = merged.pop()
        merged.append((sigma, rate, count + steps))
    else:
        merged.append((float(noise_multiplier), float(sample_rate), int(steps)))
    return merged


def _rdp_epsilon(history: History, delta: float, orders: Sequence[float]) -> tuple[float, float]:
    """(epsilon, best order) of a history from the RDP at ``orders`` only: an upper bound on the epsilon at
    more orders (each order gives a valid bound; the accountant takes the smallest)."""
    rdp = sum(np.asarray(compute_rdp(q=q, noise_multiplier=s, steps=n, orders=list(orders))) for s, q, n in history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")  # a subset's edge: still a valid bound
        epsilon, best = get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    return float(epsilon), float(best)


def _smallest_noise(spent: Callable[[float], float], epsilon: float, high: float) -> float:
    """Bisection for the smallest sigma in (0, ``high``] with ``spent(sigma) <= epsilon`` (``spent(high)`` is)."""
    low, at_high = 0.0, spent(high)
    while epsilon - at_high > CALIBRATION_TOLERANCE and high - low > 1e-6 * high:
        middle = (low + high) / 2
        at_middle = spent(middle)
        if at_middle <= epsilon:
            high, at_high = middle, at_middle
        else:
            low = middle
    return high


def smallest_epsilon(delta: float) -> float:
    """The RDP accountant's epsilon at ``delta`` as the noise grows without bound: no target below it is
    reachable (Opacus' conversion from RDP with an RDP of 0, at the best of ``RDP_ORDERS``)."""
    return min(math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in RDP_ORDERS if a > 1)


def _unreachable(epsilon: float, delta: float, sample_rate: float, steps: int) -> PrivacyBudgetTooLow:
    floor = max(0.0, smallest_epsilon(delta))
    return PrivacyBudgetTooLow(
        f"dp epsilon {epsilon:g} cannot be reached with any amount of noise ({steps} steps at sampling rate "
        f"{sample_rate:.3g}, delta {delta:.1e}; the smallest reachable is about {floor:.3g}). "
        "Raise --dp-epsilon (run config 'dp-epsilon'): 1 to 10 is usual."
    )


def calibrate_noise(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    releases: int = 0,
    release_noise: float = 0.0,
) -> float:
    """The smallest DP-SGD noise multiplier whose ``steps`` steps at ``sample_rate``, composed with
    ``releases`` Gaussian releases at ``release_noise``, stay within (epsilon, delta).

    With the RDP accountant the search runs on a few RDP orders (the integers, then the orders around
    the best one), whose epsilon bounds the epsilon at all orders from above: the result meets the
    budget and is as tight as a search on all orders, at a fraction of the cost (Opacus' ``compute_rdp``
    is slow at fractional orders). Raises ``PrivacyBudgetTooLow`` (naming the setting to change) when
    no noise up to ``MAX_NOISE_MULTIPLIER`` fits; at once, without a search, for an epsilon below the
    RDP accountant's floor (``smallest_epsilon``), which no noise reaches.
    """
    if accountant == "rdp" and epsilon <= smallest_epsilon(delta):
        raise _unreachable(epsilon, delta, sample_rate, steps)
    fixed: History = [(release_noise, 1.0, releases)] if releases > 0 else []
    if fixed and epsilon_of(fixed, delta=delta, accountant=accountant) >= epsilon:
        raise PrivacyBudgetTooLow(
            f"dp epsilon {epsilon:g} is used up by the {releases} planned releases of validation scores "
            f"alone (noise multiplier {release_noise:g}). Raise the validation noise (run config "
            "'dp-validation-noise'), set it to 0 to keep validation scores at the sites, or raise 'dp-epsilon'."
        )

    def spent_at(orders: Sequence[float] | None) -> Callable[[float], float]:
        def spent(sigma: float) -> float:
            history = [(sigma, sample_rate, steps), *fixed]
            if orders is None:
                return epsilon_of(history, delta=delta, accountant=accountant)
            return _rdp_epsilon(history, delta, orders)[0]

        return spent

    coarse = spent_at(INTEGER_ORDERS if accountant == "rdp" else None)
    high = 1.0
    while coarse(high) > epsilon:
        high *= 2
        if high > MAX_NOISE_MULTIPLIER:
            raise PrivacyBudgetTooLow(
                f"dp epsilon {epsilon:g} is too small for {steps} DP-SGD steps at sampling rate {sample_rate:.4g}: "
                f"even noise multiplier {MAX_NOISE_MULTIPLIER:g} would spend more. Raise --dp-epsilon (run config "
                "'dp-epsilon'; 1 to 10 is usual for DP-SGD), or plan fewer steps (--steps; 'num-server-rounds' x "
                "'local-steps')."
            )
    high = _smallest_noise(coarse, epsilon, high)
    if accountant != "rdp":
        return high
    _, best = _rdp_epsilon([(high, sample_rate, steps), *fixed], delta, RDP_ORDERS)
    index = RDP_ORDERS.index(best)
    return _smallest_noise(spent_at(RDP_ORDERS[max(0, index - 8) : index + 9]), epsilon, high)


def max_steps_within(
    history: History,
    *,
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    budget: float,
    accountant: str = "rdp",
) -> int:
    """The most DP-SGD steps that can follow ``history`` without epsilon exceeding ``budget``."""

    def fits(steps: int) -> bool:
        extended = add_steps(history, noise_multiplier, sample_rate, steps)
        return epsilon_of(extended, delta=delta, accountant=accountant) <= budget * (1 + 1e-6)

    if not fits(0):
        return 0
    low, high = 0, 1
    while fits(high):
        low, high = high, high * 2
        if high > 10**9:
            return low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclass
class SiteAccountant:
    """The accountant of one site (``IAccountant``-like): calibrated noise, sampling rate, budget, history.

    ``steps`` counts DP-SGD steps and ``releases`` the Gaussian releases of validation scores; both
    are in ``history``. ``unit`` is what one privacy unit is (image or subject); epsilon is per unit.
    """

    noise_multiplier: float
    sample_rate: float
    delta: float
    epsilon_budget: float
    accountant: str = "rdp"
    unit: str = "image"
    release_noise: float = 0.0
    history: History = field(default_factory=list)
    steps: int = 0
    releases: int = 0

    # -- Opacus' IAccountant -------------------------------------------------------------------
    def step(self, count: int = 1) -> None:
        """Record ``count`` DP-SGD steps."""
        self.history = add_steps(self.history, self.noise_multiplier, self.sample_rate, count)
        self.steps += count

    def record_release(self) -> None:
        """Record one Gaussian release (sensitivity 1, noise multiplier ``release_noise``)."""
        if not self.release_noise > 0:
            raise ValueError("this site releases no validation scores (release noise 0)")
        self.history = add_steps(self.history, self.release_noise, 1.0, 1)
        self.releases += 1

    def get_epsilon(self) -> float:
        return epsilon_of(self.history, delta=self.delta, accountant=self.accountant)

    def mechanism(self) -> str:
        return self.accountant

    def __len__(self) -> int:
        return self.steps

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so that it loads with ``torch.load(weights_only=True)``."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["history"] = [list(entry) for entry in self.history]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        loaded = SiteAccountant.from_state_dict(state)
        for item in fields(self):
            setattr(self, item.name, getattr(loaded, item.name))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SiteAccountant:
        """Also reads the state of fedseg 0.1.0 (no unit, release or step counts: image unit, all steps DP-SGD)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in state.items() if key in known}
        values["history"] = [(float(s), float(q), int(n)) for s, q, n in state.get("history", [])]
        values.setdefault("steps", sum(n for _, _, n in values["history"]))
        return cls(**values)

    # -- the budget ----------------------------------------------------------------------------
    def projected_epsilon(self, *, steps: int = 0, releases: int = 0) -> float:
        history = add_steps(self.history, self.noise_multiplier, self.sample_rate, steps)
        if releases:
            history = add_steps(history, self.release_noise, 1.0, releases)
        return epsilon_of(history, delta=self.delta, accountant=self.accountant)

    def check(self, *, steps: int = 0, releases: int = 0) -> None:
        """Raise ``PrivacyBudgetExhausted`` if ``steps`` more steps and ``releases`` more releases would exceed it."""
        projected = self.projected_epsilon(steps=steps, releases=releases)
        if projected > self.epsilon_budget * (1 + 1e-6):
            raise PrivacyBudgetExhausted(
                spent=self.get_epsilon(), projected=projected, budget=self.epsilon_budget, delta=self.delta
            )

    def ledger_row(self, *, site: str, round: int, kind: str, steps: int = 0) -> LedgerRow:
        """The ledger row of a release that just happened (``update``: ``steps`` DP-SGD steps; ``validation``:
        one Gaussian release) or of a refusal (nothing released)."""
        mechanism = {
            "update": (self.sample_rate, self.noise_multiplier, steps),
            "validation": (1.0, self.release_noise, 1),
            "refused": (0.0, 0.0, 0),
        }[kind]
        return LedgerRow(
            site=site,
            round=round,
            kind=kind,
            epsilon=self.get_epsilon(),
            delta=self.delta,
            epsilon_budget=self.epsilon_budget,
            sampling_rate=mechanism[0],
            noise_multiplier=mechanism[1],
            steps=mechanism[2],
            step=self.steps,
            releases=self.releases,
            unit=self.unit,
            accountant=self.accountant,
        )

    def max_more_steps(self) -> int:
        return max_steps_within(
            self.history,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            delta=self.delta,
            budget=self.epsilon_budget,
            accountant=self.accountant,
        )


def noise_is_hopeless(noise_multiplier: float, expected_batch: float) -> bool:
    """True when each step's noise (std sigma C) exceeds the largest possible summed signal of a batch
    (``expected_batch`` x C): the model will learn next to nothing."""
    return noise_multiplier > max(expected_batch, 1.0) or not math.isfinite(noise_multiplier)
