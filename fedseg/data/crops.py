"""Training crops: random windows of the loaded images, rescaled, augmented and standardised.

An item is addressed by a key ``(image_index, sample_seed)`` so that the crop drawn for a
key is the same in any worker process and after a resume (see :mod:`fedseg.data.sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fedseg.data.augment import AugmentConfig, build_augmentation
from fedseg.data.loading import LoadedImage
from fedseg.data.normalise import normalise

SampleKey = tuple[int, int]


class CropDataset(Protocol):
    """What local training samples from: items addressed by ``(index, seed)`` keys, with a labelled flag
    per index (``TrainingCrops``; for volumes ``SliceCrops`` and ``VolumePatches``)."""

    labelled: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, key: SampleKey) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CropConfig:
    """Crop size in pixels, and the probability that a crop is drawn around a foreground pixel."""

    size: int = 256
    foreground_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"crop size must be at least 16 pixels, got {self.size}")
        if not 0.0 <= self.foreground_probability <= 1.0:
            raise ValueError(f"foreground_probability must be in [0, 1], got {self.foreground_probability}")


def _window_origin(centre: int, window: int, extent: int, rng: np.random.Generator) -> int:
    """Top-left coordinate of a window around ``centre`` (jittered), kept inside the image when it fits."""
    jitter = int(rng.integers(-(window // 4), window // 4 + 1))
    origin = centre - window // 2 + jitter
    if window <= extent:
        return int(np.clip(origin, 0, extent - window))
    return (extent - window) // 2


def extract_window(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """``array[top:top+height, left:left+width]`` with zero padding outside the image."""
    out = np.zeros((height, width) + array.shape[2:], dtype=array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + height, array.shape[0]), min(left + width, array.shape[1])
    if src_bottom > src_top and src_right > src_left:
        out[src_top - top : src_bottom - top, src_left - left : src_right - left] = array[
            src_top:src_bottom, src_left:src_right
        ]
    return out


class TrainingCrops(Dataset):
    """Augmented random crops of in-memory images; ``len`` is the number of images.

    Each item is a dict: ``image`` float32 ``C x S x S``, ``mask`` float32 ``1 x S x S`` (zeros
    for unlabelled images), ``labelled`` bool and ``index`` of the source image.
    """

    def __init__(
        self, images: Sequence[LoadedImage], *, crop: CropConfig, augment: AugmentConfig, normalisation: str = "image"
    ) -> None:
        if not images:
            raise ValueError("TrainingCrops needs at least one image")
        self.images = list(images)
        self.crop = crop
        self.augment = augment
        self.normalisation = normalisation
        self.channels = self.images[0].image.shape[2]
        self._pipeline = build_augmentation(augment, channels=self.channels)
        self._foreground = [
            np.flatnonzero(im.mask).astype(np.int64) if im.mask is not None else np.empty(0, np.int64)
            for im in self.images
        ]
        self.labelled = np.array([im.labelled for im in self.images], dtype=bool)

    def __len__(self) -> int:
        return len(self.images)

    def _choose_centre(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        image = self.images[index]
        height, width = image.image.shape[:2]
        foreground = self._foreground[index]
        if foreground.size and rng.random() < self.crop.foreground_probability:
            flat = int(foreground[rng.integers(foreground.size)])
            return divmod(flat, width)
        return int(rng.integers(height)), int(rng.integers(width))

    def crop_arrays(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The rescaled (not yet augmented) uint8 image crop and uint8 mask crop for a key."""
        rng = np.random.default_rng(seed)
        source = self.images[index]
        low, high = math.log(self.augment.scale_min), math.log(self.augment.scale_max)
        scale = math.exp(rng.uniform(low, high)) if high > low else self.augment.scale_min
        window = max(8, round(self.crop.size / scale))
        row, col = self._choose_centre(index, rng)
        top = _window_origin(row, window, source.image.shape[0], rng)
        left = _window_origin(col, window, source.image.shape[1], rng)
        image = extract_window(source.image, top, left, window, window)
        mask_source = source.mask if source.mask is not None else np.zeros(source.image.shape[:2], bool)
        mask = extract_window(mask_source.astype(np.uint8), top, left, window, window)
        if window != self.crop.size:
            size = (self.crop.size, self.crop.size)
            interpolation = cv2.INTER_AREA if window > self.crop.size else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation).reshape(self.crop.size, self.crop.size, -1)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        return image, mask

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | int | bool]:
        index, seed = key
        image, mask = self.crop_arrays(index, seed)
        self._pipeline.set_random_seed(seed)
        out = self._pipeline(image=image, mask=mask)
        pixels = normalise(out["image"], self.normalisation)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),
            "mask": torch.from_numpy(out["mask"][None].astype(np.float32)),
            "labelled": bool(self.labelled[index]),
            "index": index,
        }
