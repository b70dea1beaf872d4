"""Loading one record into memory, checked: image, mask and field of view of the same size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.data.reading import read_image, read_mask


@dataclass(frozen=True)
class LoadedImage:
    """Pixels of one record: ``image`` uint8 ``H x W x C``, ``mask`` and ``fov`` bool ``H x W``."""

    record: ImageRecord
    image: np.ndarray
    mask: np.ndarray | None
    fov: np.ndarray | None
    native_size: tuple[int, int]

    @property
    def labelled(self) -> bool:
        return self.mask is not None


def resized_shape(height: int, width: int, longer_side: int | None) -> tuple[int, int]:
    """Shape with the longer side scaled to ``longer_side`` (unchanged when None)."""
    if longer_side is None:
        return height, width
    scale = longer_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == shape:
        return image
    channels = [
        Image.fromarray(image[:, :, c]).resize(shape[::-1], Image.Resampling.BILINEAR) for c in range(image.shape[2])
    ]
    return np.stack([np.asarray(c) for c in channels], axis=2)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.Resampling.NEAREST))


def _check_same_size(
    record: ImageRecord, kind: str, path: object, expected: tuple[int, int], got: tuple[int, ...]
) -> None:
    if tuple(got[:2]) != expected:
        raise DataError(
            f"{path}: {kind} is {got[1]}x{got[0]} (WxH) but its image {record.image.name} is "
            f"{expected[1]}x{expected[0]}. Export the {kind} at the image's size."
        )


def load_record(
    record: ImageRecord, *, channels: int = 3, resize: int | None = None, with_mask: bool = True
) -> LoadedImage:
    """Read a record's files, check their sizes agree, and resize if ``resize`` is set."""
    image = read_image(record.image, channels=channels)
    native = (image.shape[0], image.shape[1])
    mask = read_mask(record.mask) if (with_mask and record.mask is not None) else None
    fov = read_mask(record.fov) if record.fov is not None else None
    if mask is not None:
        _check_same_size(record, "mask", record.mask, native, mask.shape)
    if fov is not None:
        _check_same_size(record, "field-of-view mask", record.fov, native, fov.shape)
    shape = resized_shape(*native, resize)
    return LoadedImage(
        record=record,
        image=resize_image(image, shape),
        mask=None if mask is None else resize_mask(mask, shape),
        fov=None if fov is None else resize_mask(fov, shape),
        native_size=native,
    )
