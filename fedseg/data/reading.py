"""Reading images, masks and field-of-view masks from disk.

Images come back as ``uint8`` arrays ``H x W x C``; masks as ``bool`` arrays ``H x W``.
Supported formats: PNG, JPEG, TIFF, GIF, PPM/PGM, BMP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from fedseg.data.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".bmp"})
MASK_THRESHOLD = 127
# Pixels of a mask between these values are neither background nor foreground. JPEG masks
# (Kvasir-SEG) ring a few levels around 0 and 255, which this band leaves alone.
_AMBIGUOUS_LOW, _AMBIGUOUS_HIGH = 32, 223
AMBIGUOUS_MASK_FRACTION = 0.005
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS_VARIABLE = "FEDSEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit (about 13,000 x 13,000)

logger = logging.getLogger(__name__)


class AmbiguousMaskWarning(UserWarning):
    """A mask holds many values that are neither background (0) nor foreground (255)."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def max_image_pixels() -> int:
    """The largest image fedseg opens, in pixels (``FEDSEG_MAX_IMAGE_PIXELS``, default about 179 megapixels)."""
    value = os.environ.get(MAX_PIXELS_VARIABLE, "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise DataError(f"{MAX_PIXELS_VARIABLE}={value!r} must be a whole number of pixels") from None


def _unreadable(path: Path, error: BaseException) -> DataError:
    return DataError(
        f"{path}: unreadable or truncated image ({type(error).__name__}: {str(error)[:200]}). "
        "Re-export it as PNG, or move it out of the folder."
    )


def _check_pixels(path: Path, width: int, height: int) -> None:
    limit = max_image_pixels()
    if width * height > limit:
        raise DataError(
            f"{path}: {width} x {height} pixels is more than fedseg opens ({limit:,} pixels; a file this "
            f"large is often a decompression bomb). Downscale it, move it out of the folder, or raise "
            f"{MAX_PIXELS_VARIABLE} if it is a genuine image."
        )


@contextlib.contextmanager
def _pil_limit(limit: int) -> Iterator[None]:
    """Let PIL open images up to ``limit`` pixels (its own bomb check stops at twice MAX_IMAGE_PIXELS)."""
    default = Image.MAX_IMAGE_PIXELS
    if default is None or limit <= 2 * default:
        yield
        return
    Image.MAX_IMAGE_PIXELS = limit // 2 + 1
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = default


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """Open an image file (header only); every failure is a ``DataError`` naming the file.

    The size is checked against ``max_image_pixels`` before any pixel is decoded.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings(), _pil_limit(limit):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"{path}: {error} Downscale it, move it out of the folder, or raise {MAX_PIXELS_VARIABLE} "
            "if it is a genuine image."
        ) from None
    except Exception as error:  # PIL raises many types for damaged files
        raise _unreadable(path, error) from None
    with image:
        _check_pixels(path, *image.size)
        yield image


def _check_png(path: Path) -> None:
    """Check every chunk's CRC, up to IEND: PIL skips the CRCs of the image data, so a flipped bit there
    would otherwise decode to wrong pixels without any error. (Data cut short PIL reports itself.)"""
    data = memoryview(path.read_bytes())
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = bytes(data[position + 4 : position + 8])
        body = data[position + 8 : position + 8 + length]
        crc = data[position + 8 + length : position + 12 + length]
        if len(body) != length or len(crc) != 4 or zlib.crc32(body, zlib.crc32(kind)) != int.from_bytes(crc, "big"):
            raise ValueError(f"damaged PNG chunk {kind!r} at byte {position} (its CRC does not match)")
        if kind == b"IEND":
            return
        position += 12 + length
    raise ValueError("PNG data ends before its IEND chunk")


def _decoded(path: Path, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Open, check the size, decode and convert; any decoding failure names the file."""
    with _opened(path) as image:
        try:
            if image.format == "PNG":
                _check_png(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                return convert(image)
        except DataError:
            raise
        except Exception as error:  # truncated data, bad chunks, unsupported modes, memory
            raise _unreadable(path, error) from None


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


def _pixels(image: Image.Image, *, colour: bool) -> np.ndarray:
    """An opened image's pixels; with ``colour``, palette, alpha and colour-space modes become RGB."""
    if colour and image.mode not in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or array.size == 0:
        raise ValueError(f"pixel array of shape {array.shape}; fedseg reads grey or colour images")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("some pixel values are NaN or infinite")
    return array


def _mask_pixels(image: Image.Image, path: Path) -> np.ndarray:
    """A mask's pixels without its alpha channel, which must then be fully opaque (else it is ambiguous)."""
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    array = _pixels(image, colour=False)
    if "A" not in image.mode and "a" not in image.mode:
        return array
    if array[..., -1].min() != array[..., -1].max():
        raise DataError(
            f"{path}: the mask has a transparency channel that varies. Export it as a grey PNG "
            "(0 background, 255 foreground)."
        )
    return array[..., :-1]


def read_image(path: str | Path, *, channels: int = 3) -> np.ndarray:
    """Read an image as ``uint8`` ``H x W x channels`` (``channels`` is 1 or 3).

    Grey images are repeated to three channels, colour images are converted to grey for
    one channel, and 16-bit or float images are stretched to 0..255 over their own range.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    array = _to_uint8(_decoded(path, lambda image: _pixels(image, colour=True)))
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
    array = _decoded(path, lambda image: _mask_pixels(image, path))
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
    """Height and width of an image file, read from its header only (too large a file is an error)."""
    with _opened(Path(path)) as image:
        width, height = image.size
    return height, width
