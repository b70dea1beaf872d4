"""Slice montages for volume reports: for a few slices through the structure, the image, the expert's
mask and the model's result side by side, cropped around the expert's mask, in radiological view
(patient's right on the left, anterior at the top)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fedseg.evaluation.report import overlay_strip
from fedseg.volumes.slices import to_uint8

ROW_HEIGHT = 200
MARGIN_FRACTION, MIN_MARGIN = 0.75, 12


def radiological(plane: np.ndarray) -> np.ndarray:
    """A RAS+ axial slice ``X x Y`` as rows (anterior first) and columns (patient's right first)."""
    return plane.T[::-1, ::-1]


def montage_slices(truth: np.ndarray, prediction: np.ndarray, count: int = 4) -> list[int]:
    """Up to ``count`` slices evenly spread over those holding the truth (else the prediction, else the middle)."""
    for mask in (truth, prediction):
        slices = np.flatnonzero(mask.any(axis=(0, 1)))
        if slices.size:
            return sorted({int(slices[round(i)]) for i in np.linspace(0, slices.size - 1, min(count, slices.size))})
    return [truth.shape[2] // 2]


def crop_box(truth: np.ndarray, prediction: np.ndarray) -> tuple[slice, slice]:
    """In-plane box around the truth (else the prediction) with a margin; the whole slice when both are empty."""
    mask = truth if truth.any() else prediction
    if not mask.any():
        return slice(None), slice(None)
    where = np.argwhere(mask.any(axis=2))
    low, high = where.min(axis=0), where.max(axis=0) + 1
    margin = np.maximum(MIN_MARGIN, (MARGIN_FRACTION * (high - low)).astype(int))
    low, high = np.maximum(low - margin, 0), np.minimum(high + margin, mask.shape[:2])
    return slice(int(low[0]), int(high[0])), slice(int(low[1]), int(high[1]))


def montage(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """RGB uint8 picture: one row (image, expert, result) per chosen slice."""
    box = crop_box(truth, prediction)
    pixels = to_uint8(image)
    rows = []
    for z in montage_slices(truth, prediction):
        plane = [radiological(a[box[0], box[1], z]) for a in (pixels, truth, prediction)]
        strip = overlay_strip(plane[0][:, :, None], plane[1], plane[2])
        width = max(1, round(strip.shape[1] * ROW_HEIGHT / strip.shape[0]))
        row = Image.fromarray(strip).resize((width, ROW_HEIGHT), Image.Resampling.LANCZOS)
        ImageDraw.Draw(row).text((4, 4), f"slice {z}", fill=(255, 255, 255))
        rows.append(np.asarray(row))
    return np.concatenate(rows, axis=0)


def save_montage(path: Path, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, title: str) -> Path:
    picture = Image.fromarray(montage(image, truth, prediction))
    ImageDraw.Draw(picture).text((8, ROW_HEIGHT - 16), title, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
