"""Mean Teacher (Tarvainen and Valpola, 2017): an EMA teacher and a consistency loss.

The teacher is an exponential moving average of the student's weights; early steps follow
the student closely (decay ``min(1 - 1/(t+1), ema_decay)``). Student and teacher see
independently perturbed copies of each crop (Gaussian noise, flips; the student also a random
per-channel gain and offset); flips are undone on the logits before the two are compared, and
the consistency weight ramps up along a sigmoid.

In a federation the student restarts from the global model each round; ``teacher_follows`` says
where the teacher starts (``teacher_for_round``): ``reset`` from the global weights, ``site`` from
the site's own teacher of the last round, ``blend`` from an average of the two (an EMA over global
models, weight ``round_blend`` on the site's teacher).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedseg.models.state import unwrap

TEACHER_FOLLOWS = ("reset", "site", "blend")


@dataclass(frozen=True)
class PerturbationConfig:
    """The student's view of a crop: Gaussian noise, random flips and a per-channel gain and offset (jitter)."""

    noise_std: float = 0.15
    flips: bool = True
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.jitter < 0:
            raise ValueError(f"noise_std and jitter must be >= 0, got {self.noise_std}, {self.jitter}")


@dataclass(frozen=True)
class MeanTeacherConfig:
    """Mean Teacher's settings. ``teacher_follows`` and ``round_blend``: where a site's teacher starts each
    federated round (``teacher_for_round``). ``dp_balance``: under DP, labelled and unlabelled images are
    Poisson-sampled at separate rates so that an expected batch holds them in the ratio
    1 : ``unlabelled_ratio`` (without it, at the one rate of the whole pool); the accountant counts the
    larger rate."""

    ema_decay: float = 0.99
    consistency_weight: float = 1.0
    rampup_steps: int = 200
    noise_std: float = 0.15
    flips: bool = True
    student_jitter: float = 0.25
    unlabelled_ratio: float = 1.0
    teacher_follows: str = "reset"
    round_blend: float = 0.5
    dp_balance: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.consistency_weight < 0 or self.rampup_steps < 0 or self.noise_std < 0 or self.student_jitter < 0:
            raise ValueError("consistency_weight, rampup_steps, noise_std and student_jitter must be >= 0")
        if self.unlabelled_ratio < 0:
            raise ValueError(f"unlabelled_ratio must be >= 0, got {self.unlabelled_ratio}")
        if self.teacher_follows not in TEACHER_FOLLOWS:
            raise ValueError(f"teacher_follows must be one of {TEACHER_FOLLOWS}, got '{self.teacher_follows}'")
        if not 0.0 <= self.round_blend < 1.0:
            raise ValueError(f"round_blend must be in [0, 1), got {self.round_blend}")
        if self.dp_balance and self.unlabelled_ratio <= 0:
            raise ValueError(f"dp_balance needs unlabelled_ratio > 0, got {self.unlabelled_ratio}")

    @property
    def student_perturbation(self) -> PerturbationConfig:
        return PerturbationConfig(noise_std=self.noise_std, flips=self.flips, jitter=self.student_jitter)

    @property
    def teacher_perturbation(self) -> PerturbationConfig:
        return PerturbationConfig(noise_std=self.noise_std, flips=self.flips, jitter=0.0)


def teacher_for_round(
    teacher: Mapping[str, torch.Tensor] | None, global_weights: Mapping[str, torch.Tensor], config: MeanTeacherConfig
) -> OrderedDict[str, torch.Tensor] | None:
    """The weights a site's teacher starts a round from (None: a copy of the student, i.e. the global model)."""
    if teacher is None or config.teacher_follows == "reset":
        return None
    if config.teacher_follows == "site":
        return OrderedDict(teacher)
    blend = config.round_blend
    return OrderedDict(
        (name, blend * value + (1 - blend) * global_weights[name] if value.dtype.is_floating_point else value)
        for name, value in teacher.items()
    )


def consistency_weight(step: int, config: MeanTeacherConfig) -> float:
    """``w_max * exp(-5 (1 - t/T)^2)`` for t < T, then ``w_max``."""
    if config.rampup_steps == 0 or step >= config.rampup_steps:
        return config.consistency_weight
    phase = 1.0 - step / config.rampup_steps
    return config.consistency_weight * math.exp(-5.0 * phase * phase)


def make_teacher(student: nn.Module) -> nn.Module:
    """A detached copy of the (unwrapped) student that gets no gradients."""
    teacher = copy.deepcopy(unwrap(student))
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, *, step: int, decay: float) -> None:
    """teacher <- a * teacher + (1 - a) * student with ``a = min(1 - 1/(step + 1), decay)``."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    student_state = unwrap(student).state_dict()
    for name, value in teacher.state_dict().items():
        source = student_state[name]
        if value.dtype.is_floating_point:
            value.mul_(alpha).add_(source.detach(), alpha=1.0 - alpha)
        else:
            value.copy_(source)


class Perturbation:
    """Per-sample random flips, Gaussian noise and (for the student) a per-channel gain and offset.

    The gain and offset (``jitter``) change the crop's appearance as another scanner would; asking
    the student to agree with a teacher that saw the unjittered crop teaches the invariance that
    a held-out hospital needs. ``undo`` flips logits back to the input's frame.
    """

    def __init__(self, batch: int, config: PerturbationConfig, *, generator: torch.Generator) -> None:
        self.noise_std, self.jitter = config.noise_std, config.jitter
        draws = (
            torch.rand(2, batch, generator=generator) < 0.5 if config.flips else torch.zeros(2, batch, dtype=torch.bool)
        )
        self.flip_h, self.flip_v = draws[0], draws[1]
        self.generator = generator

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        """Flips of the last two axes (image rows and columns; for 3D patches the in-plane y and slices)."""
        per_sample = (-1,) + (1,) * (x.ndim - 1)
        h = self.flip_h.to(x.device).view(per_sample)
        v = self.flip_v.to(x.device).view(per_sample)
        x = torch.where(h, x.flip(-1), x)
        return torch.where(v, x.flip(-2), x)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter > 0:
            shape = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
            gain = 1 + self.jitter * (2 * torch.rand(shape, generator=self.generator) - 1)
            offset = self.jitter * (2 * torch.rand(shape, generator=self.generator) - 1)
            x = x * gain.to(x.device, x.dtype) + offset.to(x.device, x.dtype)
        if self.noise_std > 0:
            noise = torch.randn(x.shape, generator=self.generator).to(x.device, x.dtype)
            x = x + self.noise_std * noise
        return self._flip(x)

    def undo(self, logits: torch.Tensor) -> torch.Tensor:
        return self._flip(logits)  # each flip is its own inverse, and h and v commute
