"""2.5D: each axial slice with its neighbours as channels, fed to the 2D model zoo and 2D pipeline.

A slice stack of ``channels`` slices (the slice in the middle, ``(channels - 1) / 2`` neighbours on
each side, edges repeated) becomes a uint8 ``H x W x channels`` image, so ``TrainingCrops``,
augmentation, Mean Teacher, DP-SGD and the 2D sliding window work on it unchanged.
``SliceCrops`` indexes *volumes*: a sampled key picks one slice of its volume, so DP-SGD's
Poisson sampling, per-sample clipping and the accountant treat one volume (one scan of one
patient) as the privacy unit, not one slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, SampleKey, TrainingCrops
from fedseg.data.loading import LoadedImage
from fedseg.volumes.loading import LoadedVolume


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A 0..1 float volume as uint8 0..255."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def slice_stack(volume: np.ndarray, index: int, channels: int) -> np.ndarray:
    """Slices ``index - k .. index + k`` (k = (channels - 1) / 2, edges repeated) as ``H x W x channels``."""
    if channels < 1 or channels % 2 == 0:
        raise ValueError(f"a slice stack needs an odd number of channels, got {channels}")
    half = channels // 2
    picks = np.clip(np.arange(index - half, index + half + 1), 0, volume.shape[2] - 1)
    return np.ascontiguousarray(volume[:, :, picks])


def volume_slices(loaded: LoadedVolume, channels: int) -> list[LoadedImage]:
    """Every slice of a volume as a 2D ``LoadedImage`` (uint8 stack, its mask and field of view)."""
    pixels = to_uint8(loaded.image)
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    return [
        LoadedImage(
            record=loaded.record,
            image=slice_stack(pixels, z, channels),
            mask=None if loaded.mask is None else loaded.mask[:, :, z],
            fov=None if loaded.fov is None else loaded.fov[:, :, z],
            native_size=shape,
        )
        for z in range(pixels.shape[2])
    ]


class SliceCrops(Dataset):
    """Training crops of slice stacks; one item per *volume* (``len`` is the number of volumes).

    The key ``(volume_index, seed)`` picks a slice of that volume (slices with foreground with
    probability ``foreground_probability`` when the volume has a mask) and crops it like
    ``TrainingCrops``. Items carry ``index`` = the volume's index.
    """

    def __init__(
        self,
        volumes: Sequence[LoadedVolume],
        *,
        channels: int,
        crop: CropConfig,
        augment: AugmentConfig,
        normalisation: str = "image",
    ) -> None:
        if not volumes:
            raise ValueError("SliceCrops needs at least one volume")
        slices: list[LoadedImage] = []
        self._slices: list[np.ndarray] = []
        self._foreground: list[np.ndarray] = []
        for loaded in volumes:
            first = len(slices)
            slices += volume_slices(loaded, channels)
            self._slices.append(np.arange(first, len(slices)))
            with_foreground = loaded.mask.any(axis=(0, 1)) if loaded.mask is not None else np.zeros(0, bool)
            self._foreground.append(first + np.flatnonzero(with_foreground))
        self.crops = TrainingCrops(slices, crop=crop, augment=augment, normalisation=normalisation)
        self.channels = channels
        self.labelled = np.array([v.labelled for v in volumes], dtype=bool)

    def __len__(self) -> int:
        return len(self._slices)

    def slice_for(self, index: int, rng: np.random.Generator) -> int:
        foreground = self._foreground[index]
        if foreground.size and rng.random() < self.crops.crop.foreground_probability:
            return int(foreground[rng.integers(foreground.size)])
        return int(self._slices[index][rng.integers(self._slices[index].size)])

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor | int | bool]:
        index, seed = key
        rng = np.random.default_rng([seed, 25])
        item = self.crops[(self.slice_for(index, rng), seed)]
        return {**item, "index": index, "labelled": bool(self.labelled[index])}
