"""``fedseg export``: a checkpoint as an ONNX or TorchScript file that carries its preprocessing
contract, checked on real images before it is written.

The exported model runs the same sliding-window inference as PyTorch over the check images; the
export fails if any probability differs by more than ``tolerance`` (1e-4), or, for a model whose own
fp32 result is further than that from its float64 result (trained models at full resolution often
are, by a few 1e-3), by more than twice that rounding floor. A compressed export
(``prune:F`` or ``int8``) is instead judged by Dice on the labelled check images (use validation
images, never a held-out centre): it is refused when Dice drops by more than ``max_dice_drop``
(0.01), unless ``allow_dice_drop``, which writes it with a warning.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.reading import read_image
from fedseg.data.splits import load_manifest
from fedseg.evaluation.scoring import mean_dice, score_records
from fedseg.export.compress import Compression, calibration_tiles, prune_magnitude, quantize_int8, weight_sparsity
from fedseg.export.contract import ExportContract, ExportError
from fedseg.export.engines import OnnxRuntimeModel, export_onnx, export_torchscript, write_onnx_contract
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.inference.sliding_window import TilingConfig, prepare, tile_size_for
from fedseg.models.checkpoint import Checkpoint, load_checkpoint
from fedseg.outputs import check_planned_outputs

logger = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")
CPU = torch.device("cpu")
CALIBRATION_IMAGES = 16


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    out: Path
    format: str
    check_data: Path
    check_centres: tuple[str, ...]
    manifest: Path | None = None
    split: str = "all"
    parity_images: int = 3
    compression: str = "none"
    max_dice_drop: float = 0.01
    allow_dice_drop: bool = False
    tolerance: float = 1e-4
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {FORMATS}, got '{self.format}'")
        compression = Compression.parse(self.compression)
        if compression.kind == "int8" and self.format != "onnx":
            raise ExportError("int8 quantisation is done by ONNX Runtime: use --format onnx")
        if self.parity_images < 1:
            raise ExportError(f"parity_images must be >= 1, got {self.parity_images}")


@dataclass(frozen=True)
class ExportReport:
    path: Path
    contract: ExportContract
    parity_max_difference: float
    parity_images: int
    dice_reference: float | None = None
    dice_exported: float | None = None
    bytes: int = 0

    @property
    def dice_drop(self) -> float | None:
        if self.dice_reference is None or self.dice_exported is None:
            return None
        return self.dice_reference - self.dice_exported


def check_records(config: ExportConfig) -> list[ImageRecord]:
    """The check images: the named centres, optionally one split of a run's manifest."""
    by_centre = scan_dataset(config.check_data, config.check_centres)
    records = [r for centre in by_centre.values() for r in centre]
    if config.manifest is not None:
        records = load_manifest(config.manifest).select(records, config.split)
    if not records:
        raise ExportError(f"{config.check_data}: no check images in {list(config.check_centres)} ({config.split})")
    return records


def parity(reference: Predictor, exported: Predictor, images: Sequence[np.ndarray]) -> float:
    """Largest probability difference between two predictors over whole images."""
    worst = 0.0
    for image in images:
        difference = np.abs(reference.probabilities(image) - exported.probabilities(image))
        worst = max(worst, float(difference.max()))
    return worst


class _Float64(nn.Module):
    """The model in float64, for the fp32 rounding floor of the parity check."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.double()).float()


def dice_of(predictor: Predictor, records: Sequence[ImageRecord], threshold: float) -> float | None:
    by_centre: dict[str, list[ImageRecord]] = {}
    for record in records:
        if record.labelled:
            by_centre.setdefault(record.centre, []).append(record)
    results = [
        score_records(predictor, rs, threshold=threshold, with_hd95=False, progress=False) for rs in by_centre.values()
    ]
    return mean_dice(results) if results else None


def _write(model: nn.Module, contract: ExportContract, path: Path, format: str) -> Path:
    sample = torch.zeros(1, contract.preprocessing.channels, contract.tile_size, contract.tile_size)
    writer = export_onnx if format == "onnx" else export_torchscript
    return writer(model, contract, path, sample=sample)


def _engine(path: Path, format: str) -> nn.Module:
    return OnnxRuntimeModel(path) if format == "onnx" else torch.jit.load(str(path), map_location="cpu").eval()


class _Exporter:
    """One export: the float model, the written file and the checks, in order."""

    def __init__(self, config: ExportConfig) -> None:
        self.config = config
        self.checkpoint: Checkpoint = load_checkpoint(config.checkpoint)
        if self.checkpoint.model.spatial_dims != 2:
            raise ExportError(
                f"{config.checkpoint}: '{self.checkpoint.model.name}' is a volume model; fedseg export writes 2D "
                "image models only (use `fedseg predict` with the checkpoint for volumes)"
            )
        self.records = check_records(config)
        self.compression = Compression.parse(config.compression)
        self.model = self.checkpoint.build()
        requested = config.inference.tiling(self.checkpoint.meta)
        self.tiling = replace(requested, tile_size=tile_size_for(self.model, requested.tile_size))
        self.reference = self._predictor(self.model)
        self.contract = ExportContract(
            model=self.checkpoint.model.to_json(),
            preprocessing=self.checkpoint.preprocessing,
            tile_size=self.tiling.tile_size,
            overlap=self.tiling.overlap,
            threshold=config.inference.threshold,
            compression=str(self.compression),
        )

    def _predictor(self, model: nn.Module, tiling: TilingConfig | None = None) -> Predictor:
        return Predictor(model, self.checkpoint.preprocessing, tiling or self.tiling, tta=False, device=CPU)

    def run(self) -> ExportReport:
        out = Path(self.config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.tmp{out.suffix}")
        try:
            return self._run(staged, out)
        finally:
            staged.unlink(missing_ok=True)

    def _run(self, staged: Path, out: Path) -> ExportReport:
        config = self.config
        source = (
            prune_magnitude(copy.deepcopy(self.model), self.compression.amount)
            if self.compression.kind == "prune"
            else self.model
        )
        _write(source, self.contract, staged, config.format)
        channels = self.contract.preprocessing.channels
        images = [read_image(r.image, channels=channels) for r in self.records[: config.parity_images]]
        reference = self._predictor(source)
        worst = parity(reference, self._predictor(_engine(staged, config.format)), images)
        checks: dict[str, Any] = {"parity_max_difference": worst, "parity_images": len(images)}
        if worst > config.tolerance:
            floor = parity(reference, self._predictor(_Float64(source)), images)
            checks["parity_fp32_floor"] = floor
            if worst > 2 * floor:
                raise ExportError(
                    f"{out}: not written: the exported model's probabilities differ from PyTorch's by up to "
                    f"{worst:.2e} on {len(images)} check image(s): more than {config.tolerance:g} and more than "
                    f"twice PyTorch's own fp32 rounding ({floor:.2e} from float64)"
                )
        if self.compression.kind == "int8":
            quantize_int8(staged, staged, self._calibration_tiles())
        if self.compression.kind == "prune":
            checks["weight_sparsity"] = weight_sparsity(source)
        reference_dice = exported_dice = None
        if self.compression.kind != "none":
            reference_dice, exported_dice = self._dice_check(staged, out)
            checks.update({"dice_reference": reference_dice, "dice_exported": exported_dice})
        contract = replace(self.contract, checks=checks)
        if config.format == "onnx":
            write_onnx_contract(staged, contract)
        else:
            _write(source, contract, staged, config.format)
        os.replace(staged, out)
        return ExportReport(
            out, contract, worst, checks["parity_images"], reference_dice, exported_dice, out.stat().st_size
        )

    def _calibration_tiles(self) -> list[np.ndarray]:
        """Tiles of the first check images, prepared as the contract says, to calibrate int8 activations."""
        preprocessing = self.contract.preprocessing
        inputs = [
            prepare(read_image(r.image, channels=preprocessing.channels), preprocessing)
            for r in self.records[:CALIBRATION_IMAGES]
        ]
        return calibration_tiles(inputs, self.tiling.tile_size)

    def _dice_check(self, staged: Path, out: Path) -> tuple[float, float]:
        config = self.config
        reference = dice_of(self.reference, self.records, config.inference.threshold)
        exported = dice_of(self._predictor(_engine(staged, config.format)), self.records, config.inference.threshold)
        if reference is None or exported is None:
            raise ExportError(
                f"{config.check_data}: a compressed export is judged by Dice, but the check images have no masks"
            )
        if reference - exported > config.max_dice_drop:
            message = (
                f"{out}: {self.compression} drops Dice on the check images from {reference:.4f} to {exported:.4f} "
                f"(more than {config.max_dice_drop})"
            )
            if not config.allow_dice_drop:
                raise ExportError(message + "; not written (--allow-dice-drop writes it anyway)")
            logger.warning("%s; written because --allow-dice-drop", message)
        return reference, exported


def export(config: ExportConfig) -> ExportReport:
    """Export ``config.checkpoint``; raises ``ExportError`` (and writes nothing) when a check fails, and
    ``OutputConflict`` when ``out`` is one of its inputs (the checkpoint, the manifest)."""
    inputs = [p for p in (config.checkpoint, config.manifest) if p is not None]
    check_planned_outputs([(Path(config.out), Path(config.checkpoint))], inputs=inputs)
    return _Exporter(config).run()
