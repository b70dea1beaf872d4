"""Loading one volume record into memory, checked: image, mask and field of view on one grid.

The image comes back in RAS+ voxel order, its intensities mapped per volume from the
``percentiles`` range to 0..1 (float32), resampled in-plane only when a spacing is asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.formats import is_volume_path
from fedseg.volumes.io import Volume, read_volume, spacing_of

# Headers that differ by less than this are the same grid; up to half a voxel, a warning; beyond, an error.
AFFINE_TOLERANCE_MM = 0.01
AFFINE_ERROR_VOXELS = 0.5
# Percentiles are estimated on an even subsample of at most this many voxels (exact enough, 10x faster).
PERCENTILE_SAMPLE = 262_144


class LabelWarning(UserWarning):
    """A mask holds more than the values 0 and 1."""


class GridWarning(UserWarning):
    """A mask's header differs slightly (less than half a voxel) from its image's."""


@dataclass(frozen=True)
class LoadedVolume:
    """``image`` float32 ``X x Y x Z`` in 0..1; ``mask``/``fov`` bool on the same grid; ``spacing`` of that grid."""

    record: ImageRecord
    volume: Volume
    image: np.ndarray
    mask: np.ndarray | None
    fov: np.ndarray | None
    spacing: tuple[float, float, float]

    @property
    def labelled(self) -> bool:
        return self.mask is not None


def is_volume_record(record: ImageRecord) -> bool:
    return is_volume_path(record.image)


def normalise_intensity(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """The volume clipped to its own percentile range and mapped to 0..1 (float32)."""
    values = array.astype(np.float32)
    flat = values.reshape(-1)
    low, high = np.percentile(flat[:: max(1, flat.size // PERCENTILE_SAMPLE)], percentiles)
    if high <= low:
        return np.zeros(values.shape, np.float32)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def in_plane_shape(
    shape: tuple[int, ...], spacing: tuple[float, float, float], target: float | None
) -> tuple[int, int]:
    if target is None:
        return int(shape[0]), int(shape[1])
    return max(1, round(shape[0] * spacing[0] / target)), max(1, round(shape[1] * spacing[1] / target))


def resample_in_plane(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``X x Y x Z`` float array resampled (bilinear) to ``shape`` in-plane; slices untouched."""
    if array.shape[:2] == tuple(shape):
        return array.astype(np.float32, copy=False)
    slices = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))[:, None]
    resized = F.interpolate(slices, size=tuple(shape), mode="bilinear", align_corners=False)
    return np.ascontiguousarray(resized[:, 0].numpy().transpose(1, 2, 0))


def binary_mask(array: np.ndarray, path: object) -> np.ndarray:
    """Foreground of a mask volume: > 0.5 for 0..1 masks, > 0 for label maps (with a warning for several labels)."""
    values = np.unique(array)
    if values.size > 2 or not set(values.tolist()) <= {0, 1}:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        warnings.warn(
            f"{path}: non-binary labels ({shown}); fedseg takes "
            f"{'values above 0.5' if values.max() <= 1 else 'every label above 0'} as foreground. "
            "Save the mask with 0 and 1 only to be sure.",
            LabelWarning,
            stacklevel=2,
        )
    return array > (0.5 if values.max() <= 1 else 0)


def _check_grid(image: Volume, other: Volume, kind: str) -> None:
    if other.array.shape != image.array.shape:
        raise DataError(
            f"{other.path}: {kind} has shape {other.source_shape} but its image {image.path.name} has "
            f"{image.source_shape}. Export the {kind} on the image's grid."
        )
    difference = float(np.abs(other.affine[:3] - image.affine[:3]).max())
    if difference <= AFFINE_TOLERANCE_MM:
        return
    message = (
        f"{other.path}: {kind}'s affine differs from its image's by up to {difference:.3g} mm "
        f"(spacing {_mm(other.affine)} against {_mm(image.affine)}). Resample the {kind} onto the image "
        "(same shape, spacing, origin and orientation), or copy the image's header into it."
    )
    if difference > AFFINE_ERROR_VOXELS * min(image.spacing):
        raise DataError(message)
    warnings.warn(message + " Used as it is (less than half a voxel).", GridWarning, stacklevel=3)


def _mm(affine: np.ndarray) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing_of(affine)) + " mm"


def _read_label(path: object, image: Volume, kind: str) -> np.ndarray:
    volume = read_volume(path)  # type: ignore[arg-type]
    _check_grid(image, volume, kind)
    return binary_mask(volume.array, path)


def _resampled_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return resample_in_plane(mask.astype(np.float32), shape) > 0.5 if mask.shape[:2] != shape else mask


def load_volume(record: ImageRecord, config: VolumeConfig | None = None, *, with_mask: bool = True) -> LoadedVolume:
    """Read a volume record, check its mask and field of view lie on its grid, normalise and resample."""
    config = config or VolumeConfig()
    volume = read_volume(record.image)
    mask = _read_label(record.mask, volume, "mask") if (with_mask and record.mask is not None) else None
    fov = _read_label(record.fov, volume, "field-of-view mask") if record.fov is not None else None
    shape = in_plane_shape(volume.array.shape, volume.spacing, config.spacing)
    image = resample_in_plane(normalise_intensity(volume.array, config.percentiles), shape)
    spacing = volume.spacing
    if config.spacing is not None:
        spacing = (
            spacing[0] * volume.array.shape[0] / shape[0],
            spacing[1] * volume.array.shape[1] / shape[1],
            spacing[2],
        )
    return LoadedVolume(
        record=record,
        volume=volume,
        image=image,
        mask=None if mask is None else _resampled_mask(mask, shape),
        fov=None if fov is None else _resampled_mask(fov, shape),
        spacing=spacing,
    )
