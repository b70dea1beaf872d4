"""Score a model on whole images at native resolution, per centre, as sums and counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.data.loading import load_record
from fedseg.inference.sliding_window import TilingConfig, predict_probabilities
from fedseg.metrics import SegmentationCounts, score_image
from fedseg.models.checkpoint import Preprocessing

logger = logging.getLogger(__name__)


@dataclass
class CentreResult:
    """One centre's sums and counts, the per-image rows, and the files that could not be read."""

    centre: str
    counts: SegmentationCounts = field(default_factory=SegmentationCounts)
    rows: list[dict[str, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unlabelled: int = 0


def score_records(
    model: nn.Module,
    preprocessing: Preprocessing,
    records: Sequence[ImageRecord],
    *,
    tiling: TilingConfig,
    device: torch.device,
    threshold: float = 0.5,
    with_hd95: bool = True,
    progress: bool = True,
) -> CentreResult:
    """Predict and score every labelled record of one centre. Unreadable files are listed, not fatal."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    result = CentreResult(centre=records[0].centre if records else "")
    for record in tqdm(records, desc=f"evaluate {result.centre}", unit="img", disable=not progress, leave=False):
        if not record.labelled:
            result.unlabelled += 1
            continue
        try:
            loaded = load_record(record, channels=preprocessing.channels)
        except DataError as error:
            logger.error("skipped: %s", error)
            result.failures.append(str(error))
            continue
        if loaded.mask is None:
            raise RuntimeError(f"{record.mask}: mask expected but not loaded")
        probabilities = predict_probabilities(model, loaded.image, preprocessing, tiling, device=device, fov=loaded.fov)
        scores = score_image(probabilities > threshold, loaded.mask, fov=loaded.fov, with_hd95=with_hd95)
        result.counts.add(scores)
        result.rows.append(
            {
                "centre": record.centre,
                "image": record.stem,
                "height": loaded.image.shape[0],
                "width": loaded.image.shape[1],
                **{
                    k: getattr(scores, k) for k in ("dice", "iou", "sensitivity", "precision", "hd95", "tp", "fp", "fn")
                },
            }
        )
    return result


def centre_metrics(result: CentreResult) -> dict[str, object]:
    """The ``metrics.json`` entry of one centre: means, pooled Dice, and the raw sums and counts."""
    return {
        **result.counts.summary(),
        "counts": result.counts.to_dict(),
        "unreadable": len(result.failures),
        "unlabelled_skipped": result.unlabelled,
    }


def mean_dice(results: Sequence[CentreResult]) -> float | None:
    """Mean per-image Dice over the images of all the given centres."""
    total = SegmentationCounts()
    for result in results:
        total = total.merge(result.counts)
    return total.summary()["dice"]  # type: ignore[return-value]
