"""Choosing the decision threshold on the training centres' validation images.

Nothing is ever tuned on a held-out centre: the candidates are scored on the validation split
of a run's manifest, whose centres are the centres the model trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.loading import load_record
from fedseg.data.splits import load_manifest
from fedseg.inference.predictor import Predictor
from fedseg.metrics import score_image
from fedseg.volumes.inference import VolumePredictor
from fedseg.volumes.scoring import native_volume

CANDIDATES = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    mean_dice: dict[float, float]
    n_images: int
    centres: tuple[str, ...]


def validation_records(manifest_path: Path, data_root: Path) -> list[ImageRecord]:
    """The labelled validation images listed in a run's manifest."""
    manifest = load_manifest(manifest_path)
    records = scan_dataset(data_root, list(manifest.centres))
    chosen = [r for centre, rs in records.items() for r in manifest.select(rs, "val") if r.labelled]
    if not chosen:
        raise ValueError(f"{manifest_path}: the manifest has no labelled validation images to choose a threshold on")
    return chosen


def _probabilities(
    predictor: Predictor | VolumePredictor, record: ImageRecord
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Foreground probabilities of a record (image or volume), with its mask and field of view."""
    if isinstance(predictor, VolumePredictor):
        volume = native_volume(record, predictor)
        return predictor.probabilities(volume), volume.mask, volume.fov
    loaded = load_record(record, channels=predictor.preprocessing.channels)
    return predictor.probabilities(loaded.image, loaded.fov), loaded.mask, loaded.fov


def pick_threshold(
    predictor: Predictor | VolumePredictor,
    records: Sequence[ImageRecord],
    *,
    candidates: Sequence[float] = CANDIDATES,
    progress: bool = True,
) -> ThresholdChoice:
    """The candidate with the highest mean per-image Dice (ties go to the one closest to 0.5)."""
    dice = np.zeros((len(records), len(candidates)))
    for i, record in enumerate(
        tqdm(records, desc="threshold", unit="img", disable=None if progress else True, leave=False)
    ):
        probabilities, mask, fov = _probabilities(predictor, record)
        if mask is None:
            raise ValueError(f"{record.image}: threshold choice needs labelled images")
        for j, threshold in enumerate(candidates):
            dice[i, j] = score_image(probabilities > threshold, mask, fov=fov, with_hd95=False).dice
    means = dice.mean(axis=0)
    best = max(range(len(candidates)), key=lambda j: (round(means[j], 6), -abs(candidates[j] - 0.5)))
    return ThresholdChoice(
        threshold=float(candidates[best]),
        mean_dice={float(t): float(m) for t, m in zip(candidates, means)},
        n_images=len(records),
        centres=tuple(sorted({r.centre for r in records})),
    )
