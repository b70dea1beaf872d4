"""Volumes as training sets: slice stacks for 2D models (2.5D), patches for 3D models."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tqdm.auto import tqdm

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig
from fedseg.data.layout import ImageRecord
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.loading import LoadedVolume, load_volume
from fedseg.volumes.patches import VolumePatches
from fedseg.volumes.slices import SliceCrops

logger = logging.getLogger(__name__)


def load_volumes(
    records: Sequence[ImageRecord], config: VolumeConfig, *, labelled: set[str] | None = None, progress: bool = True
) -> list[LoadedVolume]:
    """Load volume records; masks only of records whose key is in ``labelled`` (all when None)."""
    return [
        load_volume(record, config, with_mask=labelled is None or record.key in labelled)
        for record in tqdm(records, desc="load volumes", unit="vol", disable=None if progress else True, leave=False)
    ]


def volume_training_set(
    volumes: Sequence[LoadedVolume],
    *,
    spatial_dims: int,
    channels: int,
    crop: CropConfig,
    augment: AugmentConfig,
    normalisation: str,
    config: VolumeConfig,
) -> SliceCrops | VolumePatches:
    """2D models train on slice stacks of ``channels`` slices (2.5D); 3D models on 3D patches."""
    if spatial_dims == 3:
        return VolumePatches(volumes, crop=crop, patch_slices=config.patch_slices, augment=augment)
    return SliceCrops(volumes, channels=channels, crop=crop, augment=augment, normalisation=normalisation)
