"""One round of local training at one site: ``train_site``.

The site starts from the global model and its own persistent ``LocalState`` (EMA teacher,
privacy accountant, step count), trains ``local_steps`` steps with Mean Teacher and DP-SGD as
configured, and returns the new weights, its number of examples, metrics and the new state.
The teacher starts each round from the global model, from the site's teacher of the last round,
or from a blend of both (``MeanTeacherConfig.teacher_follows``). Before a round that would exceed
the site's privacy budget it raises ``PrivacyBudgetExhausted`` and trains nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedseg.data.crops import CropDataset
from fedseg.models import ModelConfig
from fedseg.training.local import LocalConfig, LocalState, LocalTrainer
from fedseg.training.mean_teacher import teacher_for_round
from fedseg.training.progress import StepProgress


@dataclass(frozen=True)
class SiteTrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    local_steps: int = 50
    seed: int = 0
    schedule_steps: int | None = None  # steps the learning-rate schedule spans (None: constant lr)
    label: str = "site"  # how progress lines name this site and round

    def __post_init__(self) -> None:
        if self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1, got {self.local_steps}")

    @property
    def planned_steps(self) -> int:
        """Steps the privacy noise is calibrated for: every planned round's local steps."""
        rounds = self.local.privacy.planned_rounds if self.local.privacy is not None else 1
        return rounds * self.local_steps


@dataclass(frozen=True)
class SiteUpdate:
    weights: OrderedDict[str, torch.Tensor]
    num_examples: int
    metrics: dict[str, Any]
    state: LocalState


def train_site(
    global_weights: Mapping[str, torch.Tensor],
    state: LocalState | None,
    dataset: CropDataset,
    config: SiteTrainingConfig,
    *,
    device: torch.device,
    workers: int = 0,
) -> SiteUpdate:
    """Train one round locally. Raises ``PrivacyBudgetExhausted`` (before any step) if over budget."""
    mean_teacher = config.local.mean_teacher
    if state is not None and mean_teacher is not None:
        state = replace(state, teacher=teacher_for_round(state.teacher, global_weights, mean_teacher))
    trainer = LocalTrainer(
        model_config=config.model,
        config=config.local,
        dataset=dataset,
        device=device,
        seed=config.seed,
        planned_steps=config.planned_steps,
        initial_weights=global_weights,
        state=state,
        schedule_steps=config.schedule_steps,
        workers=workers,
    )
    stats = trainer.run(config.local_steps, on_step=StepProgress(config.label, config.local_steps))
    return SiteUpdate(
        weights=trainer.weights(), num_examples=stats.examples, metrics=stats.to_dict(), state=trainer.export_state()
    )
