"""Compression for deployment: magnitude pruning (PyTorch) and int8 quantisation (ONNX Runtime).

Pruning zeroes the smallest-magnitude convolution and linear weights over the whole network
(global L1, unstructured): the dense file keeps its size but compresses (zip) by about the
pruned fraction; dense CPU kernels run no faster. Static int8 quantisation (QDQ, per-channel
weights, activations calibrated on tiles of real images) makes the file about 4x smaller.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from fedseg.export.contract import ExportError

logger = logging.getLogger(__name__)
_PRUNE = re.compile(r"^prune:(0?\.\d+)$")


@dataclass(frozen=True)
class Compression:
    """``none``, ``int8`` (ONNX only) or ``prune:F`` (fraction F of the weights set to zero)."""

    kind: str = "none"
    amount: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Compression:
        if text in ("none", "int8"):
            return cls(text)
        match = _PRUNE.match(text)
        if match and 0.0 < float(match.group(1)) < 1.0:
            return cls("prune", float(match.group(1)))
        raise ExportError(f"compression '{text}' is not understood: use none, int8 or prune:F with 0 < F < 1")

    def __str__(self) -> str:
        return f"prune:{self.amount:g}" if self.kind == "prune" else self.kind


def prune_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of convolution and linear weights with the smallest magnitude."""
    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for module, _ in targets:  # pruning flattens with view(): channels-last weights must be made contiguous
        module.weight.data = module.weight.data.contiguous()
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)
    return model


def weight_sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return float(sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1))


def zipped_size(path: Path) -> int:
    """Bytes of the file deflated in a zip: what storing or shipping it costs."""
    target = path.with_suffix(path.suffix + ".zip-size")
    try:
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, arcname=path.name)
        return target.stat().st_size
    finally:
        target.unlink(missing_ok=True)


class _Tiles:
    """ONNX Runtime's calibration reader over prepared tiles."""

    def __init__(self, tiles: Sequence[np.ndarray]) -> None:
        self._tiles: Iterator[np.ndarray] = iter(tiles)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._tiles, None)
        return None if tile is None else {"image": tile}


def calibration_tiles(inputs: Sequence[torch.Tensor], tile: int, per_image: int = 4) -> list[np.ndarray]:
    """Up to ``per_image`` tiles (1 x C x tile x tile) from each prepared image, on a regular grid."""
    tiles = []
    for x in inputs:
        height, width = x.shape[-2:]
        size_h, size_w = min(tile, height), min(tile, width)
        tops = np.linspace(0, height - size_h, 2).astype(int)
        lefts = np.linspace(0, width - size_w, 2).astype(int)
        corners = [(t, left) for t in tops for left in lefts][:per_image]
        tiles += [x[..., t : t + size_h, left : left + size_w].numpy().astype(np.float32) for t, left in corners]
    return tiles


def quantize_int8(source: Path, target: Path, tiles: Sequence[np.ndarray]) -> Path:
    """Static int8 quantisation of an ONNX file (QDQ, per-channel weights), calibrated on ``tiles``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tiles:
        raise ExportError("int8 quantisation needs calibration images; none could be read")
    prepared = target.with_suffix(".prep.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Tiles(tiles),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return target
