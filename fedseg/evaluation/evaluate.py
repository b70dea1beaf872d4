"""``fedseg evaluate``: score a checkpoint on whole images of held-out (or any) centres.

Writes into the output folder: ``metrics.json`` (``{"centres": {"C": {"n_images", "dice",
"dice_ci95", "iou", ...}}}``), ``per_image.csv``, ``report.md``, ``dice_by_centre.png`` and
``overlays/`` with the best, median and worst image of each centre.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedseg import __version__
from fedseg.data.errors import DataError
from fedseg.data.layout import IMAGES_DIR, MASKS_DIR, ImageRecord, data_folders, scan_dataset
from fedseg.data.loading import load_record
from fedseg.data.splits import load_manifest
from fedseg.devices import resolve_device
from fedseg.evaluation.report import save_overlay, write_report
from fedseg.evaluation.scoring import CentreResult, centre_metrics, score_records
from fedseg.evaluation.threshold import pick_threshold, validation_records
from fedseg.files import atomic_write_json, atomic_write_text
from fedseg.inference.crf import refine
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.models.checkpoint import Checkpoint, load_checkpoint
from fedseg.outputs import check_output_folder, inputs_protected
from fedseg.volumes.inference import VolumePredictor, predictor_from_checkpoint
from fedseg.volumes.montage import save_montage
from fedseg.volumes.scoring import native_volume

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
    """What to score and how. ``pick_threshold`` chooses it on the training centres' validation images."""

    checkpoint: Path
    data: Path
    centres: tuple[str, ...]
    out: Path
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    pick_threshold: bool = False
    val_manifest: Path | None = None
    val_data: Path | None = None
    device: str = "auto"
    manifest: Path | None = None
    split: str = "all"
    examples: bool = True

    def __post_init__(self) -> None:
        if self.split != "all" and self.manifest is None:
            raise ValueError(f"--split {self.split} needs --manifest (the run's manifest.json)")


@dataclass(frozen=True)
class EvaluationReport:
    metrics: dict
    results: list[CentreResult]

    @property
    def failures(self) -> list[str]:
        return [failure for result in self.results for failure in result.failures]


def per_image_csv(results: list[CentreResult], with_crf: bool) -> str:
    buffer = io.StringIO()
    extra = [key for result in results for row in result.rows for key in row if key not in PER_IMAGE_COLUMNS]
    columns = PER_IMAGE_COLUMNS + tuple(dict.fromkeys(extra)) + (("dice_without_crf",) if with_crf else ())
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for result in results:
        writer.writerows(result.rows)
    return buffer.getvalue()


def _threshold(
    config: EvaluateConfig, checkpoint: Checkpoint, predictor: Predictor | VolumePredictor
) -> tuple[float, str]:
    if not config.pick_threshold:
        return config.inference.threshold, "fixed"
    manifest = config.val_manifest or checkpoint.meta.get("manifest")
    data = config.val_data or checkpoint.meta.get("data_root")
    if manifest is None or data is None:
        raise ValueError(
            "--pick-threshold needs the training run's validation images: pass --val-manifest "
            "RUN/manifest.json and --val-data ROOT"
        )
    records = validation_records(Path(manifest), Path(data))
    held_out = set(config.centres) - {r.centre for r in records}
    choice = pick_threshold(predictor, records)
    logger.info(
        "threshold %.2f chosen on %d validation images of %s (held-out centres not used: %s)",
        choice.threshold,
        choice.n_images,
        ", ".join(choice.centres),
        ", ".join(sorted(held_out)) or "none",
    )
    return choice.threshold, f"chosen on {choice.n_images} validation images of {', '.join(choice.centres)}"


def _picks(result: CentreResult) -> dict[str, dict[str, Any]]:
    rows = sorted(result.rows, key=lambda row: row["dice"])
    return {"worst": rows[0], "median": rows[len(rows) // 2], "best": rows[-1]} if rows else {}


def _volume_example(
    config: EvaluateConfig, predictor: VolumePredictor, record: ImageRecord, row: dict[str, Any], threshold: float
) -> str:
    """A slice montage of one volume (image, expert, model) in ``overlays/``; returns its file name."""
    loaded = native_volume(record, predictor)
    prediction = predictor.probabilities(loaded) > threshold
    file_name = f"{record.centre}_{row['image']}.png"
    title = f"{record.centre} {row['image']}  Dice {row['dice']:.3f}"
    save_montage(config.out / "overlays" / file_name, loaded.image, np.asarray(loaded.mask), prediction, title)
    return file_name


def _examples(
    config: EvaluateConfig,
    predictor: Predictor | VolumePredictor,
    records: dict[str, list[ImageRecord]],
    results: list[CentreResult],
    threshold: float,
) -> list[tuple[str, str, str, float]]:
    """Overlay PNGs of the best, median and worst image of each centre (slice montages for volumes)."""
    examples = []
    montages: dict[tuple[str, str], str] = {}
    for result in results:
        by_stem = {r.stem: r for r in records[result.centre]}
        for rank, row in _picks(result).items():
            if isinstance(predictor, VolumePredictor):
                key = (result.centre, row["image"])
                if key not in montages:
                    montages[key] = _volume_example(config, predictor, by_stem[row["image"]], row, threshold)
                examples.append((result.centre, rank, montages[key], float(row["dice"])))
                continue
            loaded = load_record(by_stem[row["image"]], channels=predictor.preprocessing.channels)
            probabilities = predictor.probabilities(loaded.image, loaded.fov)
            if config.inference.crf is not None:
                probabilities = refine(loaded.image, probabilities, config.inference.crf)
            prediction = probabilities > threshold
            if loaded.fov is not None:
                prediction &= loaded.fov
            file_name = f"{result.centre}_{rank}_{row['image']}.png"
            save_overlay(
                config.out / "overlays" / file_name,
                loaded.image,
                np.asarray(loaded.mask),
                prediction,
                f"{result.centre} {row['image']}  Dice {row['dice']:.3f}",
            )
            examples.append((result.centre, rank, file_name, float(row["dice"])))
    return examples


def _records_to_score(config: EvaluateConfig) -> dict[str, list[ImageRecord]]:
    """The records of each named centre (one split with ``--manifest``); every centre needs masks."""
    records = {c: list(r) for c, r in scan_dataset(config.data, config.centres).items()}
    if config.manifest is not None:
        manifest = load_manifest(config.manifest)
        records = {c: manifest.select(r, config.split) for c, r in records.items()}
    for centre, chosen in records.items():
        if any(r.labelled for r in chosen):
            continue
        if config.manifest is not None:
            raise DataError(
                f"centre '{centre}': the '{config.split}' split of {config.manifest} holds no image with a mask "
                f"({len(chosen)} image(s)). "
                "Choose another --split, or evaluate every image (drop --manifest)."
            )
        images = config.data / centre / IMAGES_DIR
        raise DataError(
            f"{config.data / centre}: no masks ({len(chosen)} image(s), none with a mask in {MASKS_DIR}/), so there "
            f"is nothing to score. To segment these images without scoring, use: fedseg predict --checkpoint "
            f"{config.checkpoint} --images {images} --out DIR"
        )
    return records


def evaluate(config: EvaluateConfig, *, progress: bool = True) -> EvaluationReport:
    """Score ``config.checkpoint`` on the named centres; refused before any output when a centre has no masks
    or ``config.out`` is one of the data's folders. Nothing is ever written into the data's folders."""
    records = _records_to_score(config)
    folders = data_folders(config.data, config.centres)
    check_output_folder(config.out, folders)
    inputs = [config.checkpoint, config.manifest, config.val_manifest]
    with inputs_protected(files=inputs, folders=folders):
        return _evaluate(config, records, progress)


def _evaluate(config: EvaluateConfig, records: dict[str, list[ImageRecord]], progress: bool) -> EvaluationReport:
    checkpoint = load_checkpoint(config.checkpoint)
    predictor = predictor_from_checkpoint(checkpoint, config.inference, resolve_device(config.device))
    threshold, source = _threshold(config, checkpoint, predictor)
    results = [
        score_records(predictor, r, threshold=threshold, crf=config.inference.crf, progress=progress)
        for r in records.values()
        if r
    ]
    metrics: dict[str, Any] = {
        "checkpoint": str(config.checkpoint),
        "fedseg_version": __version__,
        "model": checkpoint.model.to_json(),
        "settings": {
            "threshold": threshold,
            "threshold_source": source,
            "tta": config.inference.tta,
            "crf": None if config.inference.crf is None else vars(config.inference.crf),
            "tile_size": predictor.tiling.tile_size,
            "overlap": predictor.tiling.overlap,
            "mode": checkpoint.preprocessing.mode,
            "distance_unit": "mm" if checkpoint.preprocessing.volumes else "px",
        },
        "centres": {result.centre: centre_metrics(result) for result in results},
    }
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config.out / "metrics.json", metrics)
    atomic_write_text(config.out / "per_image.csv", per_image_csv(results, config.inference.crf is not None))
    examples = _examples(config, predictor, records, results, threshold) if config.examples else []
    write_report(config.out, metrics, examples)
    return EvaluationReport(metrics=metrics, results=results)
