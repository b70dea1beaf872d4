"""Privacy accounting that persists across rounds.

The accountant's history ``[(noise_multiplier, sample_rate, steps), ...]`` lives in the site
state, so epsilon accumulates over the whole federation. (A fresh PrivacyEngine per round,
which forgets the rounds before, is the classic bug this prevents.)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

from opacus.accountants import create_accountant
from opacus.accountants.rdp import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedseg.configuration import ConfigError

logger = logging.getLogger(__name__)
History = list[tuple[float, float, int]]

# DP-SGD learns with noise multipliers of about 0.5 to 5; far above, the noise drowns every gradient.
USEFUL_NOISE_LIMIT = 10.0
_EPSILON_OPTION = "--dp-epsilon (run config 'dp-epsilon')"
# Opacus' default RDP orders stop at 63; few steps with little noise want higher orders for a tight bound.
RDP_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS) + (80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0)


def _epsilon_options(accountant: str) -> dict[str, Any]:
    return {"alphas": list(RDP_ORDERS)} if accountant == "rdp" else {}


def epsilon_of(history: Sequence[tuple[float, float, int]], *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon spent by a history of DP-SGD steps at ``delta`` (0 for an empty history)."""
    if not history:
        return 0.0
    tracker = create_accountant(accountant)
    tracker.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # still a valid bound
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


def smallest_epsilon(delta: float) -> float:
    """The RDP accountant's epsilon at ``delta`` as the noise grows without bound: no target below it is
    reachable (Opacus' conversion from RDP with an RDP of 0, at the best of ``RDP_ORDERS``)."""
    return min(math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in RDP_ORDERS if a > 1)


def _unreachable(epsilon: float, delta: float, sample_rate: float, steps: int) -> ConfigError:
    floor = max(0.0, smallest_epsilon(delta))
    return ConfigError(
        f"dp epsilon {epsilon:g} cannot be reached with any amount of noise ({steps} steps at sampling rate "
        f"{sample_rate:.3g}, delta {delta:.1e}; the smallest reachable is about {floor:.3g}). "
        f"Raise {_EPSILON_OPTION}: 1 to 10 is usual."
    )


def calibrate_noise(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier whose ``steps`` steps at ``sample_rate`` stay within (epsilon, delta).

    An epsilon that no noise can reach is a ``ConfigError``; one that needs more noise than DP-SGD can
    learn through (``USEFUL_NOISE_LIMIT``) is logged as a warning. Both name the setting and the fix.
    """
    if accountant == "rdp" and epsilon <= smallest_epsilon(delta):  # refused at once, not after Opacus' search
        raise _unreachable(epsilon, delta, sample_rate, steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # the search probes tiny noise
        try:
            sigma = get_noise_multiplier(
                target_epsilon=epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=0.005,
                **_epsilon_options(accountant),
            )
        except ValueError:  # Opacus: "The privacy budget is too low."
            raise _unreachable(epsilon, delta, sample_rate, steps) from None
    if sigma > USEFUL_NOISE_LIMIT:
        logger.warning(
            "dp epsilon %g needs noise multiplier %.0f over %d steps: the noise drowns the gradients (DP-SGD "
            "learns with about 0.5 to 5), so the model will learn little or nothing. Raise %s, train fewer "
            "steps, or use larger batches.",
            epsilon,
            sigma,
            steps,
            _EPSILON_OPTION,
        )
    return float(sigma)
