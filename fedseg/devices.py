"""Device selection and mixed precision."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present). Asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' asked for, but this machine has no CUDA GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got '{name}'")
    return device


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA, nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
