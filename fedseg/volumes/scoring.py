"""Scoring volumes: Dice per volume, HD95 and mean surface distance in millimetres, volume difference.

Each volume is predicted and scored on its own grid (a model that works on resampled slices is
resampled back first), with the voxel spacing of the file, so distances are in millimetres.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.evaluation.scoring import SCORE_FIELDS, CentreResult
from fedseg.metrics import ImageScores, score_image
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.inference import VolumePredictor
from fedseg.volumes.loading import LoadedVolume, load_volume

logger = logging.getLogger(__name__)

VOLUME_FIELDS = ("slices", "spacing_mm", "msd", "volume_difference", "volume_true_mm3", "volume_predicted_mm3")


def native_volume(record: ImageRecord, predictor: VolumePredictor) -> LoadedVolume:
    """A record loaded on its own grid (not resampled), normalised as the predictor's model expects."""
    return load_volume(record, VolumeConfig(percentiles=predictor.volume_config.percentiles))


def volume_row(loaded: LoadedVolume, scores: ImageScores) -> dict[str, Any]:
    voxel = float(np.prod(loaded.spacing))
    return {
        "centre": loaded.record.centre,
        "image": loaded.record.stem,
        "height": loaded.image.shape[0],
        "width": loaded.image.shape[1],
        "slices": loaded.image.shape[2],
        "spacing_mm": "x".join(f"{s:.4g}" for s in loaded.spacing),
        **{k: getattr(scores, k) for k in SCORE_FIELDS},
        "msd": scores.msd,
        "volume_difference": scores.volume_difference,
        "volume_true_mm3": (scores.tp + scores.fn) * voxel,
        "volume_predicted_mm3": (scores.tp + scores.fp) * voxel,
    }


def score_volume(
    predictor: VolumePredictor, loaded: LoadedVolume, *, threshold: float, with_distances: bool = True
) -> ImageScores:
    if loaded.mask is None:
        raise ValueError(f"{loaded.record.image}: scoring needs a mask")
    prediction = predictor.probabilities(loaded) > threshold
    return score_image(prediction, loaded.mask, fov=loaded.fov, with_hd95=with_distances, spacing=loaded.spacing)


def score_volume_records(
    predictor: VolumePredictor,
    records: Sequence[ImageRecord],
    *,
    threshold: float = 0.5,
    with_hd95: bool = True,
    progress: bool = True,
) -> CentreResult:
    """Predict and score every labelled volume of one centre; unreadable files are listed, not fatal."""
    result = CentreResult(centre=records[0].centre if records else "")
    for record in tqdm(records, desc=f"evaluate {result.centre}", unit="vol", disable=None if progress else True):
        if not record.labelled:
            result.unlabelled += 1
            continue
        try:
            loaded = native_volume(record, predictor)
        except DataError as error:
            logger.error("skipped: %s", error)
            result.failures.append(str(error))
            continue
        scores = score_volume(predictor, loaded, threshold=threshold, with_distances=with_hd95)
        result.counts.add(scores)
        result.rows.append(volume_row(loaded, scores))
    return result
