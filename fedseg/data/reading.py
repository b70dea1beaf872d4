"""Reading images, masks and field-of-view masks from disk.

Images come back as ``uint8`` arrays ``H x W x C``; masks as ``bool`` arrays ``H x W``.
Supported formats: PNG, JPEG, TIFF, GIF, PPM/PGM, BMP.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedseg.data.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".bmp"})
MASK_THRESHOLD = 127
# Pixels of a mask between these values are neither background nor foreground. JPEG masks
# (Kvasir-SEG) ring a few levels around 0 and 255, which this band leaves alone.
_AMBIGUOUS_LOW, _AMBIGUOUS_HIGH = 32, 223
AMBIGUOUS_MASK_FRACTION = 0.005

logger = logging.getLogger(__name__)


class AmbiguousMaskWarning(UserWarning):
    """A mask holds many values that are neither background (0) nor foreground (255)."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{path}: unreadable or truncated image ({error}). Re-export it as PNG, or move it out of the folder."
        ) from None
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Map any integer or float pixel array to uint8, stretching its own range when it is wider."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255 and np.issubdtype(array.dtype, np.integer):
        return values.astype(np.uint8)
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def read_image(path: str | Path, *, channels: int = 3) -> np.ndarray:
    """Read an image as ``uint8`` ``H x W x channels`` (``channels`` is 1 or 3).

    Grey images are repeated to three channels, colour images are converted to grey for
    one channel, and 16-bit or float images are stretched to 0..255 over their own range.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    image = _open(path)
    if image.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGB")
    array = _to_uint8(np.asarray(image))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1 and channels == 3:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 3 and channels == 1:
        array = np.asarray(Image.fromarray(array).convert("L"))[:, :, None]
    return np.ascontiguousarray(array)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask: foreground where the value is above 127 (any channel for colour masks).

    Masks stored as 0/1 (maximum value 1) are accepted as they are. A mask with more than
    0.5 % of its pixels strictly between background and foreground triggers an
    ``AmbiguousMaskWarning`` naming the file.
    """
    path = Path(path)
    array = np.asarray(_open(path))
    if array.dtype == bool:
        return np.asarray(array if array.ndim == 2 else array.any(axis=2), dtype=bool)
    array = _to_uint8(array)
    if array.ndim == 3:
        array = array.max(axis=2)
    if int(array.max(initial=0)) == 1:
        return array == 1
    ambiguous = float(np.mean((array >= _AMBIGUOUS_LOW) & (array <= _AMBIGUOUS_HIGH)))
    if ambiguous > AMBIGUOUS_MASK_FRACTION:
        warnings.warn(
            f"{path}: {ambiguous:.1%} of the mask's pixels are neither background (0) nor foreground (255); "
            f"binarised at > {MASK_THRESHOLD}. Check that this file is a binary mask.",
            AmbiguousMaskWarning,
            stacklevel=2,
        )
    return array > MASK_THRESHOLD


def image_size(path: str | Path) -> tuple[int, int]:
    """Height and width of an image file, read from its header only."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: unreadable image ({error}). Re-export it as PNG, or move it out.") from None
    return height, width
