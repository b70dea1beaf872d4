"""The zoo at a glance: parameters, CPU inference cost and DP-SGD compatibility of every model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from opacus.validators import ModuleValidator

from fedseg.models import available_models, create_model, model_spec
from fedseg.models.registry import resolve_options
from fedseg.models.smp_models import grad_sample_mode_for


@dataclass(frozen=True)
class ZooEntry:
    name: str
    parameters: int
    dp_compatible: bool
    grad_sample_mode: str
    cpu_ms_per_megapixel: float | None


def cpu_ms_per_megapixel(model: torch.nn.Module, *, size: int, repeats: int) -> float:
    """Median milliseconds of one forward pass on a ``size`` x ``size`` RGB image, per megapixel."""
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2] / (size * size / 1e6)


def describe(name: str, *, timing: bool = True, size: int = 256, repeats: int = 3) -> ZooEntry:
    """One model with its default options (smp models with their default encoder)."""
    torch.manual_seed(0)
    model = create_model(name)
    dp_compatible = ModuleValidator.validate(model, strict=False) == []  # Opacus checks a model in training mode
    model.eval()
    mode = model_spec(name).grad_sample_mode
    if mode == "auto":
        mode = grad_sample_mode_for(resolve_options(name, {}))
    return ZooEntry(
        name=name,
        parameters=sum(p.numel() for p in model.parameters()),
        dp_compatible=dp_compatible,
        grad_sample_mode=mode,
        cpu_ms_per_megapixel=cpu_ms_per_megapixel(model, size=size, repeats=repeats) if timing else None,
    )


def catalogue(names: Sequence[str] | None = None, *, timing: bool = True, size: int = 256) -> list[ZooEntry]:
    return [describe(name, timing=timing, size=size) for name in (names or available_models())]
