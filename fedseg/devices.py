"""Device selection, memory layout and mixed precision."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch
from torch import nn


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


def prefers_channels_last(device: torch.device) -> bool:
    """oneDNN's convolutions on the CPU are much faster on NHWC tensors (measured: 1.7x a training step)."""
    return device.type == "cpu"


def to_fast_layout(module: nn.Module, device: torch.device) -> nn.Module:
    """Store the 4-D (2-D convolution) weights of ``module`` channels-last where that is faster; in place."""
    if prefers_channels_last(device):
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() == 4:  # a copy: ``contiguous()`` keeps 1x1 kernels' ambiguous NCHW strides
                tensor.data = torch.empty_like(tensor.data, memory_format=torch.channels_last).copy_(tensor.data)
    return module


def fast_layout(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A ``B x C x H x W`` batch in the layout ``to_fast_layout`` chose (other ranks unchanged)."""
    if batch.dim() == 4 and prefers_channels_last(device):
        return batch.contiguous(memory_format=torch.channels_last)
    return batch


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA, nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
