"""``PrivateTraining``: the one object that owns a site's private training.

It holds the accountant (``SiteAccountant``), calibrates the noise once, checks the budget,
wraps the model and optimiser with Opacus (keyword-only, like ``PrivacyEngine.make_private``),
draws the secret Poisson batches, takes the DP-SGD step (per-unit clipping, Gaussian noise, then
the FedProx hook, which is data-independent, then the optimiser step) and writes the ledger row.
The trainer (``fedseg.training.local``) keeps only the loss and the loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch
from opacus.optimizers import DPOptimizer
from torch import nn

from fedseg.configuration import ConfigError
from fedseg.data.sampling import PoissonKeys
from fedseg.privacy.accountant import SiteAccountant, calibrate_noise, noise_is_hopeless
from fedseg.privacy.budget import PrivacyConfig
from fedseg.privacy.dp_sgd import make_private, mark_empty_batch, sum_per_unit
from fedseg.privacy.ledger import LedgerRow

logger = logging.getLogger(__name__)


def secret_seed() -> int:
    """A 63-bit seed from the operating system's secure generator (never from the run's seed)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def calibrated_accountant(
    config: PrivacyConfig, *, n_units: int, sample_rate: float, planned_steps: int
) -> SiteAccountant:
    """A new accountant whose noise lets ``planned_steps`` steps and the planned releases fit in the budget."""
    delta = config.delta_for(n_units)
    sigma = calibrate_noise(
        epsilon=config.epsilon,
        delta=delta,
        sample_rate=sample_rate,
        steps=planned_steps,
        accountant=config.accountant,
        releases=config.releases,
        release_noise=config.release_noise,
    )
    logger.info(
        "DP-SGD: noise multiplier %.3f for epsilon %.2f per %s, delta %.1e, sampling rate %.4f, %d steps%s",
        sigma,
        config.epsilon,
        config.unit,
        delta,
        sample_rate,
        planned_steps,
        f", {config.releases} validation releases at noise {config.release_noise:g}" if config.releases else "",
    )
    return SiteAccountant(
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        delta=delta,
        epsilon_budget=config.epsilon,
        accountant=config.accountant,
        unit=config.unit,
        release_noise=config.release_noise if config.releases else 0.0,
    )


def privacy_units(pool: Sequence[int], unit: str, subjects: Sequence[str]) -> list[list[int]]:
    """The privacy units of a training pool (dataset indices): one per image, or one per subject with all
    its images (``subjects[i]`` names the subject of index i)."""
    if unit == "image":
        return [[index] for index in pool]
    by_subject: dict[str, list[int]] = {}
    for index in pool:
        by_subject.setdefault(subjects[index], []).append(index)
    return list(by_subject.values())


class PrivateTraining:
    """A site's DP-SGD: accountant, Opacus wrapping, secret sampling, the private step and the ledger row.

    ``units`` are the privacy units of the training pool, as lists of dataset indices: one image
    each (``unit = image``) or all images of one subject (``unit = subject``).
    """

    def __init__(
        self,
        accountant: SiteAccountant,
        *,
        units: Sequence[Sequence[int]],
        max_grad_norm: float,
        rates: Sequence[float] | None = None,
    ) -> None:
        self.accountant, self.max_grad_norm = accountant, max_grad_norm
        self.units = [list(unit) for unit in units]
        self.rates = list(rates) if rates is not None else None
        self._unit_of = {index: number for number, unit in enumerate(self.units) for index in unit}
        self.model: nn.Module | None = None
        self.optimizer: DPOptimizer | None = None

    @classmethod
    def start(
        cls,
        config: PrivacyConfig,
        *,
        units: Sequence[Sequence[int]],
        batch_size: int,
        planned_steps: int,
        accountant: SiteAccountant | None = None,
        rates: Sequence[float] | None = None,
    ) -> PrivateTraining:
        """Continue ``accountant`` (the site's stored one), or calibrate a new one for the plan.

        The expected batch is ``batch_size`` images: sampling rate ``batch_size / images`` per unit;
        or ``rates``, one per unit. The accountant then counts the largest rate: a unit's privacy loss
        depends only on its own inclusion probability (the other units are sampled independently, alike
        in both neighbouring datasets), and the sampled Gaussian's RDP grows with it, so the epsilon of
        the largest rate bounds every unit's.
        """
        if rates is not None and len(rates) != len(units):
            raise ValueError(f"{len(rates)} sampling rates for {len(units)} privacy units")
        n_images = sum(len(unit) for unit in units)
        sample_rate = min(1.0, batch_size / n_images) if rates is None else max(rates)
        if accountant is None:
            accountant = calibrated_accountant(
                config, n_units=len(units), sample_rate=sample_rate, planned_steps=planned_steps
            )
        elif accountant.unit != config.unit:
            raise ConfigError(
                f"privacy unit is '{config.unit}' but this site's accountant counts per '{accountant.unit}'; "
                f"set privacy-unit = '{accountant.unit}' to go on, or start a new run (another out / state folder)"
            )
        elif abs(accountant.sample_rate - sample_rate) > 1e-12:
            logger.warning(
                "the number of images changed since the noise was calibrated; the accountant uses the "
                "new sampling rate %.4f",
                sample_rate,
            )
            accountant.sample_rate = sample_rate
        private = cls(accountant, units=units, max_grad_norm=config.max_grad_norm, rates=rates)
        if noise_is_hopeless(accountant.noise_multiplier, private.expected_batch_size):
            logger.warning(
                "DP-SGD noise multiplier %.1f exceeds the expected batch of %.1f %ss: each step's noise is larger "
                "than the whole batch's clipped signal, so the model will learn next to nothing. Raise "
                "--dp-epsilon (run config 'dp-epsilon'), use a larger --batch-size, or plan fewer steps.",
                accountant.noise_multiplier,
                private.expected_batch_size,
                accountant.unit,
            )
        return private

    @property
    def expected_batch_size(self) -> float:
        """Expected units per batch: the optimiser divides the noised sum by it."""
        return sum(self.rates) if self.rates is not None else self.accountant.sample_rate * len(self.units)

    # -- wrapping and sampling ------------------------------------------------------------------
    def make_private(
        self, *, module: nn.Module, optimizer: torch.optim.Optimizer, grad_sample_mode: str
    ) -> tuple[nn.Module, DPOptimizer]:
        """Opacus' per-sample gradients and DP optimiser; the noise comes from OS entropy, never the run seed."""
        device = next(module.parameters()).device
        self.model, self.optimizer = make_private(
            module=module,
            optimizer=optimizer,
            noise_multiplier=self.accountant.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
            grad_sample_mode=grad_sample_mode,
            generator=torch.Generator(device=device).manual_seed(secret_seed()),
        )
        return self.model, self.optimizer

    def sampler(self) -> PoissonKeys:
        return PoissonKeys(self.units, self.rates if self.rates is not None else self.accountant.sample_rate)

    # -- the step -------------------------------------------------------------------------------
    def check_budget(self, steps: int) -> None:
        """Raise ``PrivacyBudgetExhausted`` if ``steps`` more steps would exceed the budget."""
        self.accountant.check(steps=steps)

    def step(self, rows: torch.Tensor | None, *, after_noise: Callable[[], None]) -> None:
        """Clip per unit, add noise, count the step, call ``after_noise`` (e.g. FedProx), then step.

        ``rows``: the dataset index of each batch row (None for an empty Poisson batch). Call after
        ``backward()`` of the mean of per-sample losses.
        """
        if self.model is None or self.optimizer is None:
            raise RuntimeError("call make_private() before step()")
        if rows is None:
            mark_empty_batch(self.model)
        elif self.accountant.unit == "subject":
            sum_per_unit(self.model, torch.tensor([self._unit_of[int(i)] for i in rows.tolist()]))
        if self.optimizer.pre_step():
            self.accountant.step()  # counted before the weights change: an interrupt can only over-count
            after_noise()
            self.optimizer.original_optimizer.step()

    # -- results --------------------------------------------------------------------------------
    def epsilon(self) -> float:
        return self.accountant.get_epsilon()

    def ledger_row(self, *, site: str, round: int, steps: int) -> LedgerRow:
        return self.accountant.ledger_row(site=site, round=round, kind="update", steps=steps)
