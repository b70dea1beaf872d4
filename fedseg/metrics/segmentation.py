"""Segmentation metrics as sums and counts, so that sites and batches combine exactly.

Per image: Dice, IoU, sensitivity (recall), precision and HD95 (MONAI's Hausdorff distance
at the 95th percentile, in pixels). Per volume (``spacing`` given): HD95 and the mean (symmetric)
surface distance in millimetres, and the relative volume difference (predicted - true) / true.
Conventions for empty masks: Dice and IoU are 1 when both
prediction and truth are empty; sensitivity is undefined without foreground in the truth,
precision without foreground in the prediction, HD95 when either is empty. Undefined values
are left out of their mean and counted in ``*_count`` fields.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance


@dataclass(frozen=True)
class ImageScores:
    dice: float
    iou: float
    sensitivity: float | None
    precision: float | None
    hd95: float | None
    tp: int
    fp: int
    fn: int
    tn: int
    msd: float | None = None
    volume_difference: float | None = None


def _around_both(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to the box around their union plus one voxel (surface distances do not change)."""
    where = np.argwhere(prediction | target)
    low = np.maximum(where.min(axis=0) - 1, 0)
    high = where.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(low, high))
    return prediction[box], target[box]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]


def hd95(prediction: np.ndarray, target: np.ndarray, *, spacing: tuple[float, ...] | None = None) -> float | None:
    """95th-percentile symmetric Hausdorff distance, in pixels or, with ``spacing``, in millimetres
    (None when either mask is empty)."""
    if not prediction.any() or not target.any():
        return None
    prediction, target = _around_both(prediction, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            _tensor(prediction), _tensor(target), include_background=True, percentile=95, spacing=spacing
        )
    return float(value.item())


def mean_surface_distance(
    prediction: np.ndarray, target: np.ndarray, *, spacing: tuple[float, ...] | None = None
) -> float | None:
    """Mean symmetric surface distance (pixels, or millimetres with ``spacing``); None when either is empty."""
    if not prediction.any() or not target.any():
        return None
    prediction, target = _around_both(prediction, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_average_surface_distance(
            _tensor(prediction), _tensor(target), include_background=True, symmetric=True, spacing=spacing
        )
    return float(value.item())


def score_image(
    prediction: np.ndarray,
    target: np.ndarray,
    *,
    fov: np.ndarray | None = None,
    with_hd95: bool = True,
    spacing: tuple[float, ...] | None = None,
) -> ImageScores:
    """Scores of one binary prediction against its truth (both ``H x W``, or ``X x Y x Z`` volumes with
    their voxel ``spacing`` in mm: distances in mm, mean surface distance and volume difference too),
    inside ``fov`` if given."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    prediction, target = prediction.astype(bool), target.astype(bool)
    if fov is not None:
        prediction, target = prediction & fov, target & fov
    inside = int(fov.sum()) if fov is not None else prediction.size
    tp = int(np.count_nonzero(prediction & target))
    fp = int(np.count_nonzero(prediction & ~target))
    fn = int(np.count_nonzero(~prediction & target))
    tn = inside - tp - fp - fn
    empty = tp + fp + fn == 0
    return ImageScores(
        dice=1.0 if empty else 2 * tp / (2 * tp + fp + fn),
        iou=1.0 if empty else tp / (tp + fp + fn),
        sensitivity=tp / (tp + fn) if tp + fn else None,
        precision=tp / (tp + fp) if tp + fp else None,
        hd95=hd95(prediction, target, spacing=spacing) if with_hd95 else None,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        msd=mean_surface_distance(prediction, target, spacing=spacing) if (with_hd95 and spacing) else None,
        volume_difference=(tp + fp - (tp + fn)) / (tp + fn) if (spacing and tp + fn) else None,
    )


@dataclass
class SegmentationCounts:
    """Sums and counts over images. ``merge`` combines two sets exactly; ``summary`` gives means."""

    n_images: int = 0
    dice_sum: float = 0.0
    iou_sum: float = 0.0
    sensitivity_sum: float = 0.0
    sensitivity_count: int = 0
    precision_sum: float = 0.0
    precision_count: int = 0
    hd95_sum: float = 0.0
    hd95_count: int = 0
    msd_sum: float = 0.0
    msd_count: int = 0
    volume_difference_sum: float = 0.0
    volume_difference_count: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, scores: ImageScores) -> None:
        self.n_images += 1
        self.dice_sum += scores.dice
        self.iou_sum += scores.iou
        if scores.sensitivity is not None:
            self.sensitivity_sum += scores.sensitivity
            self.sensitivity_count += 1
        if scores.precision is not None:
            self.precision_sum += scores.precision
            self.precision_count += 1
        if scores.hd95 is not None and math.isfinite(scores.hd95):
            self.hd95_sum += scores.hd95
            self.hd95_count += 1
        if scores.msd is not None and math.isfinite(scores.msd):
            self.msd_sum += scores.msd
            self.msd_count += 1
        if scores.volume_difference is not None:
            self.volume_difference_sum += scores.volume_difference
            self.volume_difference_count += 1
        self.tp += scores.tp
        self.fp += scores.fp
        self.fn += scores.fn
        self.tn += scores.tn

    def merge(self, other: SegmentationCounts) -> SegmentationCounts:
        return SegmentationCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float | int]) -> SegmentationCounts:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})  # type: ignore[arg-type]

    def summary(self) -> dict[str, float | int | None]:
        """Means over images (``dice``, ``iou``, ...), pixel-pooled Dice, and the image count."""

        def mean(total: float, count: int) -> float | None:
            return total / count if count else None

        pooled = 2 * self.tp + self.fp + self.fn
        return {
            "n_images": self.n_images,
            "dice": mean(self.dice_sum, self.n_images),
            "iou": mean(self.iou_sum, self.n_images),
            "sensitivity": mean(self.sensitivity_sum, self.sensitivity_count),
            "precision": mean(self.precision_sum, self.precision_count),
            "hd95": mean(self.hd95_sum, self.hd95_count),
            "msd": mean(self.msd_sum, self.msd_count),
            "volume_difference": mean(self.volume_difference_sum, self.volume_difference_count),
            "dice_pooled": 2 * self.tp / pooled if pooled else None,
        }
