"""``fedseg evaluate``: score a checkpoint on whole images of held-out (or any) centres.

Writes ``metrics.json`` shaped ``{"centres": {"C": {"n_images", "dice", "iou", ...}}}`` and
``per_image.csv`` into the output folder.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseg.data.layout import scan_dataset
from fedseg.data.splits import load_manifest
from fedseg.devices import resolve_device
from fedseg.evaluation.scoring import CentreResult, centre_metrics, score_records
from fedseg.files import atomic_write_json, atomic_write_text
from fedseg.inference.sliding_window import TilingConfig
from fedseg.models.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = (
    "centre",
    "image",
    "height",
    "width",
    "dice",
    "iou",
    "sensitivity",
    "precision",
    "hd95",
    "tp",
    "fp",
    "fn",
)


@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: Path
    data: Path
    centres: tuple[str, ...]
    out: Path
    tile_size: int | None = None
    overlap: float = 0.5
    tile_batch: int = 8
    threshold: float = 0.5
    device: str = "auto"
    manifest: Path | None = None
    split: str = "all"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        TilingConfig(tile_size=self.tile_size or 256, overlap=self.overlap, batch_size=self.tile_batch)
        if self.split != "all" and self.manifest is None:
            raise ValueError(f"--split {self.split} needs --manifest (the run's manifest.json)")


@dataclass(frozen=True)
class EvaluationReport:
    metrics: dict
    results: list[CentreResult]

    @property
    def failures(self) -> list[str]:
        return [failure for result in self.results for failure in result.failures]


def tiling_for(config: EvaluateConfig, meta: Mapping[str, Any]) -> TilingConfig:
    """Tiles of ``--tile-size``, else twice the checkpoint's training crop (more context, same scale)."""
    tile = config.tile_size or 2 * int(meta.get("crop_size", 128))
    return TilingConfig(tile_size=tile, overlap=config.overlap, batch_size=config.tile_batch)


def per_image_csv(results: list[CentreResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PER_IMAGE_COLUMNS)
    writer.writeheader()
    for result in results:
        writer.writerows(result.rows)
    return buffer.getvalue()


def evaluate(config: EvaluateConfig, *, progress: bool = True) -> EvaluationReport:
    checkpoint = load_checkpoint(config.checkpoint)
    device = resolve_device(config.device)
    model = checkpoint.build().to(device)
    tiling = tiling_for(config, checkpoint.meta)
    records = scan_dataset(config.data, config.centres)
    if config.manifest is not None:
        manifest = load_manifest(config.manifest)
        records = {c: tuple(manifest.select(r, config.split)) for c, r in records.items()}
    results = [
        score_records(
            model,
            checkpoint.preprocessing,
            list(r),
            tiling=tiling,
            device=device,
            threshold=config.threshold,
            progress=progress,
        )
        for r in records.values()
        if r
    ]
    metrics = {
        "checkpoint": str(config.checkpoint),
        "model": checkpoint.model.to_json(),
        "threshold": config.threshold,
        "tiling": {"tile_size": tiling.tile_size, "overlap": tiling.overlap},
        "centres": {result.centre: centre_metrics(result) for result in results},
    }
    atomic_write_json(config.out / "metrics.json", metrics)
    atomic_write_text(config.out / "per_image.csv", per_image_csv(results))
    return EvaluationReport(metrics=metrics, results=results)
