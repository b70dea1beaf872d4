"""The federation's settings, built once from Flower's run config (kebab-case keys, scalar values).

Every key of ``[tool.flwr.app.config]`` in pyproject.toml maps to one field here; a named
experiment (``simulations/<name>.toml``) overrides some of them. Zero means "off" or
"default" where a setting is optional (``dp-epsilon = 0`` trains without DP).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedseg.configuration import ConfigError
from fedseg.data.augment import AugmentConfig
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.federation.sites import SiteSpec, parse_site_map
from fedseg.inference.predictor import InferenceConfig
from fedseg.inference.sliding_window import DEFAULT_OVERLAP, default_tile_size
from fedseg.losses import LossConfig
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import Preprocessing
from fedseg.privacy.budget import PrivacyConfig
from fedseg.tracking import DEFAULT_TRACKING, TrackingConfig
from fedseg.training.config import SCHEDULES, OptimConfig
from fedseg.training.local import LocalConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.plan import volume_mode

STRATEGIES = ("fedavg", "fedprox")


@dataclass(frozen=True)
class FederationConfig:
    experiment: str = "custom"
    site_map: str = ""
    data_root: str = ""
    out: str = "runs/federated"
    resume: bool = True
    num_server_rounds: int = 5
    min_train_sites: int = 1
    round_timeout: float = 3600.0
    evaluate_every: int = 1
    seed: int = 0
    device: str = "auto"
    channels: int = 3
    resize: int = 0
    crop_size: int = 256
    foreground_probability: float = 0.5
    normalisation: str = "image"
    volumes: bool = False
    volume_spacing: float = 0.0
    patch_slices: int = 8
    augment: str = "strong"
    val_fraction: float = 0.15
    test_fraction: float = 0.0
    label_fraction: float = 1.0
    model: str = "unet"
    model_options: str = "{}"
    local_steps: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "onecycle"
    weight_decay: float = 1e-4
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    mean_teacher: bool = False
    ema_decay: float = 0.99
    consistency_weight: float = 1.0
    consistency_rampup: int = 200
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    max_grad_norm: float = 1.0
    tile_size: int = 0
    overlap: float = DEFAULT_OVERLAP
    threshold: float = 0.5
    he: bool = False
    he_keys: str = ""
    tracking: str = DEFAULT_TRACKING
    registry: str = ""
    node_keys: str = ""

    def __post_init__(self) -> None:
        positive = ("num_server_rounds", "min_train_sites", "evaluate_every", "local_steps", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"run config '{_key(name)}' must be >= 1, got {getattr(self, name)}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"run config 'strategy' must be one of {STRATEGIES}, got '{self.strategy}'")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"run config 'lr-schedule' must be one of {SCHEDULES}, got '{self.lr_schedule}'")
        if self.round_timeout <= 0:
            raise ConfigError(f"run config 'round-timeout' must be > 0, got {self.round_timeout}")
        if self.dp_epsilon < 0 or self.dp_delta < 0:
            raise ConfigError("run config 'dp-epsilon' and 'dp-delta' must be >= 0 (0: off / default)")
        TrackingConfig.parse(self.tracking)
        self.sites  # noqa: B018  (parse the site map now, so a bad one fails at start)
        self.model_config  # noqa: B018
        try:
            self.data_config(Path("."), ("check",))
        except ValueError as error:
            raise ConfigError(f"run config: {error}") from None
        if self.model_config.spatial_dims == 3 and not self.volumes:
            raise ConfigError(f"run config 'model' = '{self.model}' is a 3D model; set 'volumes' = true")

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FederationConfig:
        """Build from Flower's run config. Unknown keys and badly typed values name the key."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(
                    f"unknown run config key '{key}'; known keys: {', '.join(sorted(_key(n) for n in known))}"
                )
            values[name] = _coerce(key, value, hints[name])
        return cls(**values)

    # -- derived settings -----------------------------------------------------------------------
    @property
    def sites(self) -> list[SiteSpec]:
        if not self.site_map:
            return []
        try:
            return parse_site_map(self.site_map)
        except ValueError as error:
            raise ConfigError(f"run config 'site-map': {error}") from None

    @property
    def training_sites(self) -> list[SiteSpec]:
        return [s for s in self.sites if s.trains]

    @property
    def heldout_sites(self) -> list[SiteSpec]:
        return [s for s in self.sites if not s.trains]

    @property
    def model_config(self) -> ModelConfig:
        try:
            options = json.loads(self.model_options or "{}")
        except json.JSONDecodeError as error:
            raise ConfigError(f"run config 'model-options' is not JSON ({error}): {self.model_options!r}") from None
        try:
            return ModelConfig(name=self.model, in_channels=self.channels, options=options)
        except ValueError as error:
            raise ConfigError(f"run config 'model'/'model-options': {error}") from None

    def data_config(self, root: Path, centres: tuple[str, ...]) -> DataConfig:
        return DataConfig(
            root=root,
            centres=centres,
            channels=self.channels,
            resize=self.resize or None,
            normalisation=self.normalisation,
            crop=CropConfig(size=self.crop_size, foreground_probability=self.foreground_probability),
            augment=AugmentConfig.preset(self.augment),
            split=SplitConfig(
                seed=self.seed,
                val_fraction=self.val_fraction,
                test_fraction=self.test_fraction,
                label_fraction=self.label_fraction,
            ),
            volume=VolumeConfig(spacing=self.volume_spacing or None, patch_slices=self.patch_slices),
        )

    @property
    def preprocessing(self) -> Preprocessing:
        """How the global model's inputs are prepared (written into its checkpoints)."""
        return Preprocessing(
            channels=self.channels,
            resize=self.resize or None,
            normalisation=self.normalisation,
            mode=volume_mode(self.model_config.spatial_dims) if self.volumes else "2d",
            spacing=self.volume_spacing or None,
        )

    @property
    def privacy(self) -> PrivacyConfig | None:
        if self.dp_epsilon == 0:
            return None
        return PrivacyConfig(
            epsilon=self.dp_epsilon,
            delta=self.dp_delta or None,
            max_grad_norm=self.max_grad_norm,
            planned_rounds=self.num_server_rounds,
        )

    @property
    def local_config(self) -> LocalConfig:
        teacher = None
        if self.mean_teacher:
            teacher = MeanTeacherConfig(
                ema_decay=self.ema_decay,
                consistency_weight=self.consistency_weight,
                rampup_steps=self.consistency_rampup,
            )
        return LocalConfig(
            loss=LossConfig(),
            optim=OptimConfig(lr=self.lr, weight_decay=self.weight_decay, schedule=self.lr_schedule),
            batch_size=self.batch_size,
            mean_teacher=teacher,
            privacy=self.privacy,
            fedprox_mu=self.proximal_mu if self.strategy == "fedprox" else 0.0,
        )

    @property
    def schedule_steps(self) -> int:
        """Steps a site's learning-rate schedule spans: every planned round's local steps."""
        return self.num_server_rounds * self.local_steps

    @property
    def inference_config(self) -> InferenceConfig:
        return InferenceConfig(
            tile_size=self.tile_size or default_tile_size(self.crop_size),
            overlap=self.overlap,
            threshold=self.threshold,
        )

    def to_run_config(self) -> dict[str, Any]:
        """The kebab-case mapping this config came from (for logs and for resuming)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"run config '{key}' must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"run config '{key}' must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"run config '{key}' must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"run config '{key}' must be a string, got {value!r}")
    return value
