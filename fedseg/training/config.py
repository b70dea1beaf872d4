"""Configuration of a training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedseg.configuration import check_finite, from_json, to_json
from fedseg.data.config import DataConfig
from fedseg.inference.sliding_window import TilingConfig
from fedseg.losses import LossConfig
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import Preprocessing
from fedseg.privacy.budget import PrivacyConfig
from fedseg.training.mean_teacher import MeanTeacherConfig, PerturbationConfig

if TYPE_CHECKING:
    from fedseg.training.local import LocalConfig

SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a learning-rate schedule over the run's steps."""

    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got '{self.schedule}'")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")


@dataclass(frozen=True)
class TrainConfig:
    """A pooled training run: data, model, loss, optimiser and the run's bookkeeping."""

    data: DataConfig
    out: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    mean_teacher: MeanTeacherConfig | None = None
    perturb_inputs: PerturbationConfig | None = None  # supervised-only: the student's perturbations (LocalConfig)
    privacy: PrivacyConfig | None = None
    steps: int = 2000
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    checkpoint_every: int = 250
    val_every: int = 250
    log_every: int = 10
    init_checkpoint: Path | None = None  # start from this checkpoint's weights (a new run; --resume ignores it)

    def __post_init__(self) -> None:
        check_finite(self)
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_every < 0 or self.workers < 0:
            raise ValueError(f"val_every and workers must be >= 0, got {self.val_every}, {self.workers}")
        if self.init_checkpoint is not None and Path(self.init_checkpoint).suffix != ".pt":
            raise ValueError(f"init_checkpoint must be a fedseg checkpoint (.pt), got '{self.init_checkpoint}'")
        if self.model.in_channels != self.data.channels:
            raise ValueError(
                f"model in_channels ({self.model.in_channels}) must equal data channels ({self.data.channels})"
            )

    @property
    def local_config(self) -> LocalConfig:
        """How the run trains: the one loop's settings (what a site's would be)."""
        from fedseg.training.local import LocalConfig  # local.py imports this module

        return LocalConfig(
            loss=self.loss,
            optim=self.optim,
            batch_size=self.batch_size,
            mean_teacher=self.mean_teacher,
            privacy=self.privacy,
            perturb_inputs=self.perturb_inputs,
        )

    def preprocessing(self, *, volumes: bool) -> Preprocessing:
        """How the run's inputs are prepared (``volumes``: the data are volumes, known once they are read)."""
        return Preprocessing.of(self.data, self.model.spatial_dims, volumes=volumes)

    def to_json(self) -> dict:
        return to_json(self)

    @classmethod
    def from_json(cls, values: dict) -> TrainConfig:
        return from_json(cls, values)
