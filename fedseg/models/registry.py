"""The model zoo's registry: ``create_model(name, *, in_channels, classes, **options)``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder, its options with defaults, how Opacus computes
    per-sample gradients for it (``hooks`` is fastest; ``ew`` copes with in-place residual adds),
    and its spatial dimensions (2: ``B,C,H,W`` images or 2.5D slice stacks; 3: ``B,C,X,Y,Z`` volumes)."""

    name: str
    builder: Builder
    default_options: Mapping[str, Any] = field(default_factory=dict)
    grad_sample_mode: str = "hooks"
    spatial_dims: int = 2


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, default_options: Mapping[str, Any], grad_sample_mode: str = "hooks", spatial_dims: int = 2
) -> Callable[[Builder], Builder]:
    def decorator(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, dict(default_options), grad_sample_mode, spatial_dims)
        return builder

    return decorator


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; available models: {', '.join(available_models())}")
    return _REGISTRY[name]


def resolve_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The model's full options: its defaults updated by ``options`` (unknown keys are an error)."""
    spec = model_spec(name)
    unknown = sorted(set(options) - set(spec.default_options))
    if unknown:
        allowed = ", ".join(sorted(spec.default_options))
        raise ValueError(f"model '{name}' has no option(s) {unknown}; its options are: {allowed}")
    return {**spec.default_options, **options}
