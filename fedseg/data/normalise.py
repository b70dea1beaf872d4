"""Per-image intensity normalisation."""

from __future__ import annotations

import numpy as np

NORMALISATIONS = ("image", "none")


def standardise(image: np.ndarray, *, fov: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """Zero mean, unit variance per channel (statistics inside ``fov`` where given); float32 ``H x W x C``."""
    pixels = image.astype(np.float32)
    region = pixels[fov] if (fov is not None and fov.any()) else pixels.reshape(-1, pixels.shape[2])
    mean = region.mean(axis=0)
    std = region.std(axis=0)
    return (pixels - mean) / np.maximum(std, eps)


def normalise(image: np.ndarray, method: str, *, fov: np.ndarray | None = None) -> np.ndarray:
    """Apply a named normalisation: ``image`` (per-image standardisation) or ``none`` (scale to 0..1)."""
    if method == "image":
        return standardise(image, fov=fov)
    if method == "none":
        return image.astype(np.float32) / 255.0
    raise ValueError(f"unknown normalisation '{method}'; choose one of {NORMALISATIONS}")
