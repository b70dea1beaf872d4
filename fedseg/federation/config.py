"""The federation's settings, built once from Flower's run config (kebab-case keys, scalar values).

Every key of ``[tool.flwr.app.config]`` in pyproject.toml maps to one field here; a named
experiment (``simulations/<name>.toml``) overrides some of them. Zero means "off" or
"default" where a setting is optional (``dp-epsilon = 0`` trains without DP).
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from fedseg.configuration import ConfigError
from fedseg.data.augment import AUGMENT_PRESETS, AugmentConfig
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.federation.sites import SiteSpec, parse_site_map
from fedseg.inference.predictor import InferenceConfig
from fedseg.inference.sliding_window import DEFAULT_OVERLAP, default_tile_size
from fedseg.losses import LossConfig
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import Preprocessing
from fedseg.privacy.budget import UNITS, PrivacyConfig
from fedseg.tracking import DEFAULT_TRACKING, TrackingConfig
from fedseg.training.config import SCHEDULES, OptimConfig
from fedseg.training.local import LocalConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.plan import volume_mode

STRATEGIES = ("fedavg", "fedprox")
# Noise multiplier of a training site's validation score released under DP (sensitivity 1: one unit's Dice);
# 0: the score stays at the site (small validation sets gain little from a noised score; see docs/privacy.md).
DEFAULT_VALIDATION_NOISE = 0.0
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: ``low``/``high`` bounds, each open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)
POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1)
RANGES = {
    "num_server_rounds": AT_LEAST_ONE,
    "min_train_sites": AT_LEAST_ONE,
    "round_timeout": POSITIVE,
    "evaluate_every": AT_LEAST_ONE,
    "seed": NOT_NEGATIVE,
    "resize": NOT_NEGATIVE,
    "volume_spacing": NOT_NEGATIVE,
    "patch_slices": AT_LEAST_ONE,
    "crop_size": Range(16),
    "foreground_probability": FRACTION,
    "val_fraction": Range(0, 1, high_open=True),
    "test_fraction": Range(0, 1, high_open=True),
    "label_fraction": FRACTION,
    "local_steps": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "lr": POSITIVE,
    "weight_decay": NOT_NEGATIVE,
    "proximal_mu": NOT_NEGATIVE,
    "ema_decay": Range(0, 1, low_open=True, high_open=True),
    "consistency_weight": NOT_NEGATIVE,
    "consistency_rampup": NOT_NEGATIVE,
    "dp_epsilon": NOT_NEGATIVE,
    "dp_delta": Range(0, 1, high_open=True),
    "dp_validation_noise": NOT_NEGATIVE,
    "max_grad_norm": POSITIVE,
    "tile_size": NOT_NEGATIVE,
    "overlap": Range(0, 1, high_open=True),
    "threshold": Range(0, 1, low_open=True, high_open=True),
}
CHOICES = {
    "strategy": STRATEGIES,
    "lr_schedule": SCHEDULES,
    "augment": AUGMENT_PRESETS,
    "channels": (1, 3),
    "privacy_unit": UNITS,
}


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
    init_checkpoint: str = ""  # the server's initial global model (e.g. `fedseg prior`); "": seeded random
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
    privacy_unit: str = "image"
    dp_validation_noise: float = DEFAULT_VALIDATION_NOISE
    tile_size: int = 0
    overlap: float = DEFAULT_OVERLAP
    threshold: float = 0.5
    he: bool = False
    he_keys: str = ""
    tracking: str = DEFAULT_TRACKING
    registry: str = ""
    node_keys: str = ""

    def __post_init__(self) -> None:
        """Validate every setting now, so that a bad run config fails on the server before round 1
        (and not later at every site). Errors name the key, the value and what is allowed."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"run config '{_key(f.name)}' must be a finite number, got {value}")
            if f.name in RANGES and not RANGES[f.name].contains(value):
                raise ConfigError(f"run config '{_key(f.name)}' must be {RANGES[f.name]}, got {value!r}")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                choices = ", ".join(map(str, allowed))
                raise ConfigError(f"run config '{_key(name)}' must be one of {choices}, got {value!r}")
        if self.resize and self.resize < 16:
            raise ConfigError(f"run config 'resize' must be 0 (off) or >= 16 pixels, got {self.resize}")
        if self.tile_size and self.tile_size < 16:
            raise ConfigError(f"run config 'tile-size' must be 0 (4 x crop-size) or >= 16, got {self.tile_size}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"run config 'val-fraction' + 'test-fraction' must be < 1 (images must be left to train on), "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"run config 'device' must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        training = len(self.training_sites)  # parses the site map now, so a bad one fails at start
        if training and self.min_train_sites > training:
            raise ConfigError(
                f"run config 'min-train-sites' is {self.min_train_sites}, but 'site-map' names {training} training "
                f"site(s); lower it to at most {training}"
            )
        try:
            TrackingConfig.parse(self.tracking)
        except ConfigError as error:
            raise ConfigError(f"run config '{_key('tracking')}': {error}") from None
        if self.init_checkpoint and not self.init_checkpoint.endswith(".pt"):
            raise ConfigError(
                f"run config 'init-checkpoint' must be a fedseg checkpoint (.pt) or empty, got {self.init_checkpoint!r}"
            )
        if self.model_config.spatial_dims == 3 and not self.volumes:
            raise ConfigError(f"run config 'model' = '{self.model}' is a 3D model; set 'volumes' = true")
        self._derived_configs()

    def _derived_configs(self) -> None:
        """Build every config the sites build from this one; any error names the run config."""
        try:
            self.data_config(Path("."), ("centre",))
            self.local_config  # noqa: B018
            self.inference_config  # noqa: B018
        except ConfigError:
            raise
        except (TypeError, ValueError) as error:
            raise ConfigError(f"run config: {error}") from None

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
            unit=self.privacy_unit,
            release_noise=self.dp_validation_noise,
            planned_releases=self.evaluation_rounds if self.val_fraction > 0 else 0,
        )

    @property
    def evaluation_rounds(self) -> int:
        """Rounds after which the server asks every site to score the global model."""
        rounds = range(1, self.num_server_rounds + 1)
        return sum(1 for r in rounds if r % self.evaluate_every == 0 or r == self.num_server_rounds)

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


def read_run_config(path: Path) -> dict[str, Any]:
    """A run config TOML file (e.g. a named experiment, ``simulations/<name>.toml``); errors name the file."""
    try:
        return tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: run config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not a valid TOML run config ({error}). Fix the line it names.") from None


def override_value(item: str) -> Any:
    """The value of a ``KEY=VALUE`` override, VALUE in TOML syntax (empty: the empty string)."""
    key, separator, value = item.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set num-server-rounds=3")
    try:
        return tomllib.loads(f"v = {value}")["v"] if value else ""
    except tomllib.TOMLDecodeError:
        raise ConfigError(
            f"--set {item!r}: the value must be written in TOML: a number, true/false, or a quoted string "
            f"such as {key.strip()}='\"STARE,AV-WIDE\"'"
        ) from None


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
