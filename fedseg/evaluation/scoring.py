"""Score a model on whole images at native resolution, per centre, as sums and counts.

With a CRF, every image is scored twice (with and without it), so that the report can say
what the CRF did instead of assuming it helps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.data.loading import LoadedImage, load_record
from fedseg.inference.crf import CRFConfig, CRFPool
from fedseg.inference.predictor import Predictor

if TYPE_CHECKING:
    from fedseg.volumes.inference import VolumePredictor
from fedseg.metrics import ImageScores, SegmentationCounts, bootstrap_ci, score_image

logger = logging.getLogger(__name__)

SCORE_FIELDS = ("dice", "iou", "sensitivity", "precision", "hd95", "tp", "fp", "fn")


@dataclass
class CentreResult:
    """One centre's sums and counts (final, and without CRF when a CRF ran), per-image rows, failures."""

    centre: str
    counts: SegmentationCounts = field(default_factory=SegmentationCounts)
    counts_without_crf: SegmentationCounts | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unlabelled: int = 0


def _row(record: ImageRecord, loaded: LoadedImage, scores: ImageScores, plain: ImageScores | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "centre": record.centre,
        "image": record.stem,
        "height": loaded.image.shape[0],
        "width": loaded.image.shape[1],
        **{k: getattr(scores, k) for k in SCORE_FIELDS},
    }
    if plain is not None:
        row["dice_without_crf"] = plain.dice
    return row


def _labelled_images(records: Sequence[ImageRecord], channels: int, result: CentreResult, progress: bool):
    """Loaded labelled records; unreadable files are logged into ``result.failures`` and skipped."""
    for record in tqdm(
        records, desc=f"evaluate {result.centre}", unit="img", disable=None if progress else True, leave=False
    ):
        if not record.labelled:
            result.unlabelled += 1
            continue
        try:
            yield record, load_record(record, channels=channels)
        except DataError as error:
            logger.error("skipped: %s", error)
            result.failures.append(str(error))


def score_records(
    predictor: Predictor | VolumePredictor,
    records: Sequence[ImageRecord],
    *,
    threshold: float = 0.5,
    crf: CRFConfig | None = None,
    with_hd95: bool = True,
    progress: bool = True,
) -> CentreResult:
    """Predict and score every labelled record of one centre. Unreadable files are listed, not fatal.

    A ``VolumePredictor`` scores volumes (per volume, distances in mm; no CRF)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not isinstance(predictor, Predictor):
        from fedseg.volumes.scoring import score_volume_records

        if crf is not None:
            raise ValueError("dense CRF post-processing is for 2D images; drop --crf for volumes")
        return score_volume_records(predictor, records, threshold=threshold, with_hd95=with_hd95, progress=progress)
    result = CentreResult(centre=records[0].centre if records else "")
    if crf is not None:
        result.counts_without_crf = SegmentationCounts()

    def finish(tag: tuple, probabilities: np.ndarray) -> None:
        record, loaded, plain = tag
        scores = score_image(probabilities > threshold, loaded.mask, fov=loaded.fov, with_hd95=with_hd95)
        result.counts.add(scores)
        if plain is not None and result.counts_without_crf is not None:
            result.counts_without_crf.add(plain)
        result.rows.append(_row(record, loaded, scores, plain))

    pool = CRFPool(crf) if crf is not None else None
    try:
        for record, loaded in _labelled_images(records, predictor.preprocessing.channels, result, progress):
            probabilities = predictor.probabilities(loaded.image, loaded.fov)
            if pool is None:
                finish((record, loaded, None), probabilities)
                continue
            plain = score_image(probabilities > threshold, loaded.mask, fov=loaded.fov, with_hd95=with_hd95)
            for tag, refined in pool.submit((record, loaded, plain), loaded.image, probabilities):
                finish(tag, refined)
        for tag, refined in pool.drain() if pool is not None else ():
            finish(tag, refined)
    finally:
        if pool is not None:
            pool.close()
    return result


def _summary(counts: SegmentationCounts, dice_values: list[float]) -> dict[str, Any]:
    ci = bootstrap_ci(dice_values)
    return {**counts.summary(), "dice_ci95": list(ci) if ci else None}


def centre_metrics(result: CentreResult) -> dict[str, Any]:
    """The ``metrics.json`` entry of one centre: means, 95 % interval of Dice, pooled Dice, sums and counts."""
    entry = {
        **_summary(result.counts, [row["dice"] for row in result.rows]),
        "counts": result.counts.to_dict(),
        "unreadable": len(result.failures),
        "unlabelled_skipped": result.unlabelled,
    }
    if result.counts_without_crf is not None:
        entry["without_crf"] = _summary(result.counts_without_crf, [row["dice_without_crf"] for row in result.rows])
    return entry


def mean_dice(results: Sequence[CentreResult]) -> float | None:
    """Mean per-image Dice over the images of all the given centres."""
    total = SegmentationCounts()
    for result in results:
        total = total.merge(result.counts)
    value = total.summary()["dice"]
    return float(value) if value is not None else None
