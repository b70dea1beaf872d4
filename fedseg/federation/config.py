"""The federation's settings, built once from Flower's run config (kebab-case keys, scalar values).

Every key of ``[tool.flwr.app.config]`` in pyproject.toml maps to one field here, or to a field of
one of the nested optimiser, loss and Mean Teacher configs (``fedseg.training.settings.SECTIONS``:
every field of those is a key; ``run_config_keys`` lists them all); a named experiment
(``simulations/<name>.toml``) overrides some of them. Zero means "off" or "default" where a setting is
optional (``dp-epsilon = 0`` trains without DP). The configs a site, the server and the pooled
reference use are derived here (``local_config``, ``site_training_config``, ``data_config``,
``preprocessing``, ``pooled_config``), never rebuilt elsewhere.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from fedseg.configuration import ConfigError, FlatSection, coerce
from fedseg.data.augment import AUGMENT_PRESETS, AugmentConfig
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.federation.site import SiteTrainingConfig
from fedseg.federation.sites import SiteSpec, parse_site_map
from fedseg.inference.predictor import InferenceConfig
from fedseg.inference.sliding_window import DEFAULT_OVERLAP, default_tile_size
from fedseg.losses import LossConfig
from fedseg.models import ModelConfig
from fedseg.models.checkpoint import Preprocessing
from fedseg.privacy.budget import UNITS, PrivacyConfig
from fedseg.tracking import DEFAULT_TRACKING, TrackingConfig
from fedseg.training.config import OptimConfig, TrainConfig
from fedseg.training.local import LocalConfig
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.training.settings import SECTIONS, supervised_perturbation
from fedseg.volumes.config import VolumeConfig

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
    "proximal_mu": NOT_NEGATIVE,
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
    "augment": AUGMENT_PRESETS,
    "channels": (1, 3),
    "privacy_unit": UNITS,
}
DEFAULT_FEDERATED_LR = 1e-3


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
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=DEFAULT_FEDERATED_LR))
    loss: LossConfig = field(default_factory=LossConfig)
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    mean_teacher: bool = False  # the switch; `teacher` holds its settings (used only when it is on)
    teacher: MeanTeacherConfig = field(default_factory=MeanTeacherConfig)
    perturb_inputs: bool = False  # supervised-only trains on the Mean Teacher student's perturbations
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
        """Build from Flower's run config. Unknown keys and badly typed values name the key and value."""
        hints = typing.get_type_hints(cls)
        plain, sections = _by_owner(run_config)
        values: dict[str, Any] = {}
        try:
            for name, (key, value) in plain.items():
                values[name] = coerce(value, hints[name], key)
            for section in SECTIONS:
                if section.attribute in sections:
                    values[section.attribute] = section.build(sections[section.attribute], _default(section.attribute))
        except ConfigError as error:
            raise ConfigError(f"run config {error}") from None
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
        return Preprocessing.of(
            self.data_config(Path("."), ("centre",)), self.model_config.spatial_dims, volumes=self.volumes
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
        """How every site trains: loss, optimiser, batch, Mean Teacher, DP (planned over the rounds), FedProx."""
        return replace(
            self.pooled_config(Path("."), ("centre",), Path(".")).local_config,
            privacy=self.privacy,
            fedprox_mu=self.proximal_mu if self.strategy == "fedprox" else 0.0,
        )

    def pooled_config(self, root: Path, centres: tuple[str, ...], out: Path) -> TrainConfig:
        """The pooled reference of this federation: the same data, model, loss, optimiser, Mean Teacher
        and privacy settings over ``centres`` pooled, for every planned round's local steps."""
        privacy = self.privacy
        return TrainConfig(
            data=self.data_config(root, centres),
            out=out,
            model=self.model_config,
            loss=self.loss,
            optim=self.optim,
            tiling=self.inference_config.tiling({"crop_size": self.crop_size}),
            mean_teacher=self.teacher if self.mean_teacher else None,
            perturb_inputs=supervised_perturbation(
                self.teacher, mean_teacher=self.mean_teacher, perturb_inputs=self.perturb_inputs
            ),
            privacy=None if privacy is None else replace(privacy, planned_rounds=1, planned_releases=0),
            steps=self.schedule_steps,
            batch_size=self.batch_size,
            seed=self.seed,
            device=self.device,
            init_checkpoint=Path(self.init_checkpoint) if self.init_checkpoint else None,
        )

    def site_training_config(self, *, seed: int, label: str, releases: bool = True) -> SiteTrainingConfig:
        """One round of a site's training; ``releases`` False: the site has no validation images to release."""
        local = self.local_config
        if local.privacy is not None and not releases:
            local = replace(local, privacy=replace(local.privacy, planned_releases=0))
        return SiteTrainingConfig(
            model=self.model_config,
            local=local,
            local_steps=self.local_steps,
            seed=seed,
            schedule_steps=self.schedule_steps if self.optim.schedule != "constant" else None,
            label=label,
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
        flat: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if is_dataclass(value):
                flat.update(_section(f.name).flatten(value))
            else:
                flat[_key(f.name)] = value
        return flat


@dataclass(frozen=True)
class RunConfigKey:
    """Where a flat run-config key lands: a field of FederationConfig, or a field of one of its SECTIONS."""

    name: str
    section: FlatSection | None = None


def run_config_keys() -> dict[str, RunConfigKey]:
    """Every run-config key (what ``[tool.flwr.app.config]`` must declare) and where it lands."""
    keys = {_key(f.name): RunConfigKey(f.name) for f in fields(FederationConfig) if f.name not in _SECTION_NAMES}
    for section in SECTIONS:
        for key, name in section.keys().items():
            if key in keys:
                raise RuntimeError(f"run config key '{key}' of {section.cls.__name__} is also a FederationConfig key")
            keys[key] = RunConfigKey(name, section)
    return keys


_SECTION_NAMES = {section.attribute for section in SECTIONS}


def _by_owner(run_config: Mapping[str, Any]) -> tuple[dict[str, tuple[str, Any]], dict[str, dict[str, Any]]]:
    """The run config's (key, value) per FederationConfig field, and each section's keys and values."""
    owners = run_config_keys()
    plain: dict[str, tuple[str, Any]] = {}
    sections: dict[str, dict[str, Any]] = {}
    for raw_key, value in run_config.items():
        key = str(raw_key).replace("_", "-")
        owner = owners.get(key)
        if owner is None:
            raise ConfigError(f"unknown run config key '{raw_key}'; known keys: {', '.join(sorted(owners))}")
        if owner.section is None:
            plain[owner.name] = (key, value)
        else:
            sections.setdefault(owner.section.attribute, {})[key] = value
    return plain, sections


def _default(name: str) -> Any:
    """The default of FederationConfig's field ``name`` (the base a run config's keys of a section change)."""
    factory = next(f for f in fields(FederationConfig) if f.name == name).default_factory
    if not callable(factory):
        raise TypeError(f"FederationConfig.{name} has no default factory")
    return factory()


def _section(attribute: str) -> FlatSection:
    return next(section for section in SECTIONS if section.attribute == attribute)


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
