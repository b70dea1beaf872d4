"""3D training patches: ``S x S x D`` windows of whole volumes, over-sampling the foreground.

Keys are ``(volume_index, sample_seed)`` as for 2D crops, so sampling, Mean Teacher and DP-SGD
(one volume is one privacy unit) work unchanged. Augmentation: left-right flips, intensity gain
and offset, Gaussian noise. Each volume is standardised over its whole extent, as at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, SampleKey
from fedseg.volumes.loading import LoadedVolume


def standardise_volume(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole volume (float32)."""
    std = float(image.std())
    return ((image - float(image.mean())) / max(std, 1e-6)).astype(np.float32)


def extract_patch(array: np.ndarray, origin: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[origin : origin + size]`` in every axis, zero-padded outside the array."""
    out = np.zeros(tuple(size), dtype=array.dtype)
    source, target = [], []
    for start, length, extent in zip(origin, size, array.shape):
        low, high = max(start, 0), min(start + length, extent)
        if high <= low:
            return out
        source.append(slice(low, high))
        target.append(slice(low - start, high - start))
    out[tuple(target)] = array[tuple(source)]
    return out


def _origin(centre: int, window: int, extent: int, rng: np.random.Generator) -> int:
    jitter = int(rng.integers(-(window // 4), window // 4 + 1))
    origin = centre - window // 2 + jitter
    return int(np.clip(origin, 0, extent - window)) if window <= extent else (extent - window) // 2


class VolumePatches(Dataset):
    """Augmented 3D patches; ``len`` is the number of volumes. Items: ``image`` float32 ``1 x S x S x D``,
    ``mask`` float32 ``1 x S x S x D`` (zeros when unlabelled), ``labelled``, ``index``."""

    def __init__(
        self, volumes: Sequence[LoadedVolume], *, crop: CropConfig, patch_slices: int, augment: AugmentConfig
    ) -> None:
        if not volumes:
            raise ValueError("VolumePatches needs at least one volume")
        self.images = [standardise_volume(v.image) for v in volumes]
        self.masks = [v.mask for v in volumes]
        self.size = (crop.size, crop.size, patch_slices)
        self.crop, self.augment = crop, augment
        self._foreground = [np.flatnonzero(m) if m is not None else np.empty(0, np.int64) for m in self.masks]
        self.labelled = np.array([v.labelled for v in volumes], dtype=bool)

    def __len__(self) -> int:
        return len(self.images)

    def _centre(self, index: int, rng: np.random.Generator) -> tuple[int, ...]:
        shape = self.images[index].shape
        foreground = self._foreground[index]
        if foreground.size and rng.random() < self.crop.foreground_probability:
            return tuple(int(c) for c in np.unravel_index(int(foreground[rng.integers(foreground.size)]), shape))
        return tuple(int(rng.integers(n)) for n in shape)

    def patch_arrays(self, index: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The (not yet augmented) image patch and uint8 mask patch of a key."""
        rng = np.random.default_rng(seed)
        image = self.images[index]
        origin = [_origin(c, s, n, rng) for c, s, n in zip(self._centre(index, rng), self.size, image.shape)]
        mask = self.masks[index]
        mask_patch = extract_patch(mask.astype(np.uint8), origin, self.size) if mask is not None else None
        return extract_patch(image, origin, self.size), (
            mask_patch if mask_patch is not None else np.zeros(self.size, np.uint8)
        )

    def _augment(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.augment.flips and rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        gain = 1.0 + self.augment.contrast * (2 * rng.random() - 1)
        offset = self.augment.brightness * (2 * rng.random() - 1)
        image = image * gain + offset
        if self.augment.noise_probability > 0 and rng.random() < self.augment.noise_probability:
            image = image + rng.normal(0.0, self.augment.noise_std_max * 4, image.shape)
        return image.astype(np.float32), mask

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | int | bool]:
        index, seed = key
        image, mask = self.patch_arrays(index, seed)
        image, mask = self._augment(image, mask, np.random.default_rng([seed, 3]))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)[None]),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)[None].astype(np.float32)),
            "labelled": bool(self.labelled[index]),
            "index": index,
        }
