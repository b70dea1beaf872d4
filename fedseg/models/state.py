"""Model state at boundaries: strip Opacus' ``_module.`` prefix, convert to and from NumPy."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

OPACUS_PREFIX = "_module."


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """A detached CPU copy of ``state`` with every ``_module.`` prefix (Opacus wrappers) removed."""
    cleaned: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        while key.startswith(OPACUS_PREFIX):
            key = key[len(OPACUS_PREFIX) :]
        cleaned[key] = value.detach().to("cpu", copy=True)
    return cleaned


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside Opacus' GradSampleModule (or the model itself)."""
    while hasattr(model, "_module") and isinstance(model._module, nn.Module):
        model = model._module
    return model


def model_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    return clean_state_dict(unwrap(model).state_dict())


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a (possibly Opacus-prefixed) state into a (possibly Opacus-wrapped) model, strictly."""
    unwrap(model).load_state_dict(clean_state_dict(state), strict=True)


def state_to_arrays(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((key, value.detach().cpu().numpy()) for key, value in clean_state_dict(state).items())


def arrays_to_state(arrays: Mapping[str, np.ndarray]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((key, torch.from_numpy(np.array(value, copy=True))) for key, value in arrays.items())
