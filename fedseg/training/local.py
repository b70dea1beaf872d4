"""Local training: the loop every site runs in a round, and that pooled training runs too.

One ``LocalTrainer`` trains a student from given weights on one dataset of crops, with
optional Mean Teacher (an EMA teacher and a consistency loss on every sampled image) and
optional DP-SGD, which ``fedseg.privacy.engine.PrivateTraining`` owns (secret Poisson sampling
over privacy units, per-unit clipping, Gaussian noise, the accountant). What must outlive a run
(the teacher, the privacy accountant, the step count) is ``LocalState``, which round-trips through
bytes so that a site can keep it between rounds.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedseg.data.crops import CropDataset
from fedseg.data.grouping import subject_ids
from fedseg.data.sampling import KeySampler, StratifiedKeys, UniformKeys, step_loader
from fedseg.devices import autocast, fast_layout, to_fast_layout
from fedseg.losses import ConsistencyLoss, FocalDiceLoss, LossConfig
from fedseg.models import ModelConfig, build_model, grad_sample_mode
from fedseg.models.state import clean_state_dict, load_model_state, model_state
from fedseg.privacy.accountant import SiteAccountant
from fedseg.privacy.budget import PrivacyConfig
from fedseg.privacy.engine import PrivateTraining, privacy_units, secret_seed
from fedseg.training.config import OptimConfig
from fedseg.training.mean_teacher import (
    MeanTeacherConfig,
    Perturbation,
    PerturbationConfig,
    consistency_weight,
    ema_update,
    make_teacher,
)
from fedseg.training.schedule import build_optimizer, lr_factor

logger = logging.getLogger(__name__)
# Opacus' backward hooks on the first layer see inputs that need no gradient: expected, not a problem.
HOOK_WARNING = "Full backward hook is firing when gradients are computed with respect"


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``, images in the memory layout the model was put in (``fast_layout``)."""
    moved = {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }
    moved["image"] = fast_layout(moved["image"], device)
    return moved


@dataclass(frozen=True)
class LocalConfig:
    """How a site (or the pooled reference) trains: loss, optimiser, batch, Mean Teacher, DP, FedProx.

    ``grad_sample_mode`` overrides the model's Opacus per-sample-gradient mode (None: the zoo's choice).
    ``perturb_inputs``: without Mean Teacher, the student still trains on inputs perturbed this way
    (noise, flips, jitter), so that supervised-only and Mean Teacher compare on the same inputs; with
    Mean Teacher it must be None or the Mean Teacher student's own perturbation.
    """

    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 8
    mean_teacher: MeanTeacherConfig | None = None
    privacy: PrivacyConfig | None = None
    fedprox_mu: float = 0.0
    grad_sample_mode: str | None = None
    perturb_inputs: PerturbationConfig | None = None

    def __post_init__(self) -> None:
        if self.grad_sample_mode not in (None, "hooks", "ew", "functorch"):
            raise ValueError(f"grad_sample_mode must be hooks, ew or functorch, got '{self.grad_sample_mode}'")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.fedprox_mu < 0:
            raise ValueError(f"fedprox_mu must be >= 0, got {self.fedprox_mu}")
        mean_teacher = self.mean_teacher
        if mean_teacher and self.perturb_inputs not in (None, mean_teacher.student_perturbation):
            raise ValueError(
                f"perturb_inputs ({self.perturb_inputs}) differs from Mean Teacher's student perturbation "
                f"({mean_teacher.student_perturbation}): set noise_std, flips and student_jitter instead"
            )

    @property
    def student_perturbation(self) -> PerturbationConfig | None:
        """How the student's inputs are perturbed (None: not at all)."""
        return self.mean_teacher.student_perturbation if self.mean_teacher else self.perturb_inputs


def balanced_rates(
    units: Sequence[Sequence[int]], labelled: set[int], batch_size: int, unlabelled_ratio: float
) -> list[float]:
    """Poisson rates per privacy unit for an expected batch of ``batch_size`` images, labelled and unlabelled
    in the ratio 1 : ``unlabelled_ratio`` (a unit with any labelled image is sampled as labelled)."""
    is_labelled = [any(index in labelled for index in unit) for unit in units]
    images = [sum(len(unit) for unit, flag in zip(units, is_labelled) if flag == side) for side in (True, False)]
    shares = (1 / (1 + unlabelled_ratio), unlabelled_ratio / (1 + unlabelled_ratio))
    rates = [min(1.0, batch_size * share / max(n, 1)) for share, n in zip(shares, images)]
    return [rates[0] if flag else rates[1] for flag in is_labelled]


@dataclass
class LocalState:
    """What persists between runs of local training at one site. Never leaves the site."""

    step: int = 0
    teacher: OrderedDict[str, torch.Tensor] | None = None
    privacy: SiteAccountant | None = None
    optimizer: dict[str, Any] | None = None  # AdamW's moments: a site's next round continues them

    def to_bytes(self) -> bytes:
        payload: dict[str, Any] = {
            "step": self.step,
            "teacher": self.teacher,
            "privacy": None if self.privacy is None else self.privacy.state_dict(),
            "optimizer": self.optimizer,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalState:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        privacy = payload["privacy"]
        accountant = SiteAccountant.from_state_dict(privacy) if privacy is not None else None
        return cls(
            step=int(payload["step"]),
            teacher=payload["teacher"],
            privacy=accountant,
            optimizer=payload.get("optimizer"),
        )


@dataclass(frozen=True)
class LocalStats:
    """Means over a run's steps, and the privacy spent so far."""

    steps: int
    supervised_loss: float
    consistency_loss: float
    seconds: float
    examples: int
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


class LocalTrainer:
    """Student (+ EMA teacher) (+ DP-SGD) on one dataset, continuing from a ``LocalState``.

    ``subjects`` names the subject of each dataset image (for ``privacy unit = subject``); by
    default the known groupings of ``fedseg.data.grouping`` (e.g. CHASE_DB1's two eyes per child).
    """

    def __init__(
        self,
        *,
        model_config: ModelConfig,
        config: LocalConfig,
        dataset: CropDataset,
        device: torch.device,
        seed: int,
        planned_steps: int,
        initial_weights: Mapping[str, torch.Tensor] | None = None,
        state: LocalState | None = None,
        schedule_steps: int | None = None,
        workers: int = 0,
        subjects: Sequence[str] | None = None,
    ) -> None:
        self.config, self.dataset, self.device, self.seed, self.workers = config, dataset, device, seed, workers
        self.state = state or LocalState()
        self.schedule_steps = schedule_steps
        self.student: nn.Module = to_fast_layout(build_model(model_config).to(device), device)
        if initial_weights is not None:
            load_model_state(self.student, initial_weights)
        self.anchor = [p.detach().clone() for p in self.student.parameters()] if config.fedprox_mu > 0 else None
        self.teacher = self._build_teacher() if config.mean_teacher is not None else None
        self.optimizer = build_optimizer(self.student, config.optim)
        if self.state.optimizer is not None:
            self.optimizer.load_state_dict(self.state.optimizer)
        self.private: PrivateTraining | None = None
        self.keys = self._build_sampler(planned_steps, model_config, subjects)
        self.loss_fn = FocalDiceLoss.from_config(config.loss, reduction="none")
        self.consistency = ConsistencyLoss(reduction="none")
        # The student's (and teacher's) perturbations: seeded per step without DP (a resumed run repeats
        # them); under DP from OS entropy, like everything random in a private step.
        self.noise_generator = torch.Generator()
        if self.private is not None:
            self.noise_generator.manual_seed(secret_seed())

    # -- construction ---------------------------------------------------------------------------
    def _build_teacher(self) -> nn.Module:
        teacher = make_teacher(self.student)
        if self.state.teacher is not None:
            load_model_state(teacher, self.state.teacher)
        return teacher.to(self.device)

    def _pools(self) -> tuple[list[int], list[int]]:
        labelled = [i for i, flag in enumerate(self.dataset.labelled) if flag]
        unlabelled = [i for i, flag in enumerate(self.dataset.labelled) if not flag]
        if not labelled:
            raise ValueError("this site has no labelled training images; local training needs at least one")
        return labelled, unlabelled

    @property
    def pool_size(self) -> int:
        labelled, unlabelled = self._pools()
        return len(labelled) + (len(unlabelled) if self.config.mean_teacher is not None else 0)

    def _subjects(self, subjects: Sequence[str] | None) -> list[str]:
        """The subject of each dataset index: given, or the known groupings of the images' file names."""
        return list(subjects) if subjects is not None else subject_ids(self.dataset.sources, {})

    def _build_sampler(
        self, planned_steps: int, model_config: ModelConfig, subjects: Sequence[str] | None
    ) -> KeySampler:
        labelled, unlabelled = self._pools()
        privacy = self.config.privacy
        if privacy is None:
            if self.config.mean_teacher is not None:
                return StratifiedKeys(
                    labelled,
                    unlabelled,
                    self.config.batch_size,
                    unlabelled_ratio=self.config.mean_teacher.unlabelled_ratio,
                    seed=self.seed,
                )
            return UniformKeys(labelled, self.config.batch_size, seed=self.seed)
        mean_teacher = self.config.mean_teacher
        pool = labelled + unlabelled if mean_teacher is not None else labelled
        units = privacy_units(pool, privacy.unit, self._subjects(subjects))
        rates = None
        if mean_teacher is not None and mean_teacher.dp_balance:
            rates = balanced_rates(units, set(labelled), self.config.batch_size, mean_teacher.unlabelled_ratio)
        self.private = PrivateTraining.start(
            privacy,
            units=units,
            batch_size=self.config.batch_size,
            planned_steps=planned_steps,
            accountant=self.state.privacy,
            rates=rates,
        )
        self.state.privacy = self.private.accountant
        self.student, self.optimizer = self.private.make_private(
            module=self.student,
            optimizer=self.optimizer,
            grad_sample_mode=self.config.grad_sample_mode or grad_sample_mode(model_config),
        )
        return self.private.sampler()

    # -- training -------------------------------------------------------------------------------
    def check_budget(self, steps: int) -> None:
        """Raise ``PrivacyBudgetExhausted`` if ``steps`` more steps would exceed the budget."""
        if self.private is not None:
            self.private.check_budget(steps)

    def _lr(self) -> float:
        if self.schedule_steps is None:
            return self.config.optim.lr
        return self.config.optim.lr * lr_factor(self.state.step, self.schedule_steps, self.config.optim)

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample supervised loss (0 without a mask) and per-sample consistency loss (0 without a teacher)."""
        images = batch["image"]
        mean_teacher, perturbation = self.config.mean_teacher, self.config.student_perturbation
        student_view = None
        if perturbation is not None:
            student_view = Perturbation(len(images), perturbation, generator=self.noise_generator)
            images = student_view.apply(images)
        with autocast(self.device):
            logits = self.student(images).float()
        if student_view is not None:
            logits = student_view.undo(logits)
        supervised = self.loss_fn(logits, batch["mask"]) * batch["labelled"].to(logits.dtype)
        if mean_teacher is None or self.teacher is None:
            return supervised, torch.zeros_like(supervised)
        teacher_view = Perturbation(len(images), mean_teacher.teacher_perturbation, generator=self.noise_generator)
        with torch.no_grad(), autocast(self.device):
            teacher_logits = teacher_view.undo(self.teacher(teacher_view.apply(batch["image"])).float())
        return supervised, self.consistency(logits, teacher_logits)

    def _proximal_gradient(self) -> None:
        """FedProx: add ``mu (w - w_global)`` to each gradient (after DP noise: data-independent)."""
        if self.anchor is None:
            return
        for parameter, anchor in zip(self.student.parameters(), self.anchor):
            if parameter.grad is not None:
                parameter.grad.add_(parameter.detach() - anchor, alpha=self.config.fedprox_mu)

    def train_step(self, batch: dict[str, torch.Tensor] | None) -> tuple[float, float, int]:
        """One optimisation step; returns (supervised loss, consistency loss, labelled count) of the batch."""
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        if self.private is None:
            self.noise_generator.manual_seed(self.seed * 1_000_003 + self.state.step)  # same perturbations on resume
        self.optimizer.zero_grad(set_to_none=True)
        sup_mean, cons_mean, n_labelled = 0.0, 0.0, 0
        if batch is not None:
            batch = to_device(batch, self.device)
            supervised, consistency = self._losses(batch)
            weight = consistency_weight(self.state.step, self.config.mean_teacher) if self.config.mean_teacher else 0.0
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=HOOK_WARNING)
                (supervised + weight * consistency).mean().backward()
            n_labelled = int(batch["labelled"].sum())
            sup_mean = float(supervised.detach().sum()) / max(n_labelled, 1)
            cons_mean = float(consistency.detach().mean())
        if self.private is not None:
            self.private.step(None if batch is None else batch["index"], after_noise=self._proximal_gradient)
        else:
            self._proximal_gradient()
            self.optimizer.step()
        if self.teacher is not None and self.config.mean_teacher is not None:
            ema_update(self.teacher, self.student, step=self.state.step, decay=self.config.mean_teacher.ema_decay)
        self.state.step += 1
        return sup_mean, cons_mean, n_labelled

    def run(self, steps: int, *, on_step: Any = None) -> LocalStats:
        """Train ``steps`` steps (refusing first if the privacy budget would be exceeded)."""
        self.check_budget(steps)
        self.student.train()
        started = time.perf_counter()
        totals = [0.0, 0.0, 0]
        loader = step_loader(
            self.dataset,
            self.keys,
            start=self.state.step,
            stop=self.state.step + steps,
            workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )
        for batch in loader:
            supervised, consistency, n_labelled = self.train_step(batch)
            totals[0] += supervised * n_labelled
            totals[1] += consistency
            totals[2] += n_labelled
            if on_step is not None:
                on_step(self, supervised, consistency)
        accountant = self.private.accountant if self.private is not None else None
        return LocalStats(
            steps=steps,
            supervised_loss=totals[0] / max(totals[2], 1),
            consistency_loss=totals[1] / max(steps, 1),
            seconds=time.perf_counter() - started,
            examples=self.pool_size,
            epsilon=accountant.get_epsilon() if accountant else None,
            delta=accountant.delta if accountant else None,
            noise_multiplier=accountant.noise_multiplier if accountant else None,
            sample_rate=accountant.sample_rate if accountant else None,
        )

    # -- results --------------------------------------------------------------------------------
    def weights(self) -> OrderedDict[str, torch.Tensor]:
        return model_state(self.student)

    def export_state(self) -> LocalState:
        teacher = clean_state_dict(self.teacher.state_dict()) if self.teacher is not None else None
        return LocalState(
            step=self.state.step, teacher=teacher, privacy=self.state.privacy, optimizer=self.optimizer.state_dict()
        )
