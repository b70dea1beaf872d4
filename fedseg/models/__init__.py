"""The model zoo. ``create_model(name, *, in_channels, classes, **options)`` builds any entry,
already converted for Opacus (GroupNorm, no in-place operations)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fedseg.models import doubleunet, smp_models, unet, unet3d, vnet  # noqa: F401  (registers the architectures)
from fedseg.models.dp_compat import make_dp_compatible
from fedseg.models.registry import available_models, model_spec, resolve_options


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model: architecture, channels, classes and full options."""

    name: str = "unet"
    in_channels: int = 3
    classes: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model_spec(self.name)
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.classes != 1:
            raise ValueError(f"fedseg segments one foreground class (classes=1), got classes={self.classes}")
        object.__setattr__(self, "options", resolve_options(self.name, self.options))

    @property
    def spatial_dims(self) -> int:
        """2 for image models (also 2.5D slice stacks), 3 for volume models."""
        return model_spec(self.name).spatial_dims

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "options": dict(self.options),
        }


def create_model(name: str, *, in_channels: int = 3, classes: int = 1, **options: Any) -> nn.Module:
    """Build a registered model with its default options updated by ``options``."""
    spec = model_spec(name)
    model = spec.builder(in_channels=in_channels, classes=classes, **resolve_options(name, options))
    return make_dp_compatible(model)


def build_model(config: ModelConfig) -> nn.Module:
    return create_model(config.name, in_channels=config.in_channels, classes=config.classes, **config.options)


def grad_sample_mode(config: ModelConfig) -> str:
    """Opacus' per-sample gradient mode for this model (``hooks`` where safe, else ``ew``)."""
    mode = model_spec(config.name).grad_sample_mode
    return smp_models.grad_sample_mode_for(dict(config.options)) if mode == "auto" else mode


__all__ = ["ModelConfig", "available_models", "build_model", "create_model", "grad_sample_mode", "model_spec"]
