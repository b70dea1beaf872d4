from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedseg.data.errors import DataError
from fedseg.data.reading import AmbiguousMaskWarning, read_image, read_mask
from tests.conftest import POLYP, RETINA, RETINA_CENTRES, require_shared_data

GRADIENT = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (24, 1))  # 24 x 32


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".ppm", ".gif"])
def test_lossless_formats_round_trip_rgb(tmp_path: Path, suffix: str) -> None:
    rgb = np.stack([GRADIENT, GRADIENT[::-1], np.full_like(GRADIENT, 77)], axis=2)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(rgb).save(path)
    image = read_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    if suffix != ".gif":  # GIF is palette-based: colours are quantised
        np.testing.assert_array_equal(image, rgb)


def test_grey_pgm_is_repeated_to_three_channels(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT).save(tmp_path / "g.pgm")
    image = read_image(tmp_path / "g.pgm")
    assert image.shape == (24, 32, 3)
    np.testing.assert_array_equal(image[:, :, 0], GRADIENT)
    np.testing.assert_array_equal(image[:, :, 2], GRADIENT)


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    rgb = np.stack([GRADIENT] * 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "x.jpg").astype(int) - rgb).mean() < 3


def test_16_bit_tiff_is_stretched_to_8_bit(tmp_path: Path) -> None:
    values = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "x.tif")
    image = read_image(tmp_path / "x.tif", channels=1)
    assert image.shape == (24, 32, 1)
    assert image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[:, :, 0].ravel().astype(int)) >= 0)


def test_mask_binarised_above_127_and_01_masks_accepted(tmp_path: Path) -> None:
    mask = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    with pytest.warns(AmbiguousMaskWarning):  # half its pixels are mid-grey
        np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), [[False, False, True, True]])
    Image.fromarray(np.array([[0, 1, 1, 0]], dtype=np.uint8)).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), [[False, True, True, False]])


def test_colour_mask_uses_any_channel(tmp_path: Path) -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[:2, :, 0] = 255
    Image.fromarray(red).save(tmp_path / "r.png")
    assert read_mask(tmp_path / "r.png").sum() == 8


def test_ambiguous_mask_warns_with_file_name(tmp_path: Path) -> None:
    grey = np.full((10, 10), 255, np.uint8)
    grey[:5] = 100
    Image.fromarray(grey).save(tmp_path / "soft.png")
    with pytest.warns(AmbiguousMaskWarning, match="soft.png"):
        mask = read_mask(tmp_path / "soft.png")
    assert mask.sum() == 50


def test_truncated_image_error_names_file_and_fix(tmp_path: Path) -> None:
    Image.fromarray(np.stack([GRADIENT] * 3, axis=2)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*(unreadable|truncated).*Re-export"):
        read_image(tmp_path / "cut.png")


def test_not_an_image_error(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match="notes.png"):
        read_mask(tmp_path / "notes.png")


@pytest.mark.parametrize("centre", RETINA_CENTRES)
def test_real_retina_pairs_read_with_plausible_vessel_fraction(centre: str) -> None:
    require_shared_data()
    image_path = sorted((RETINA / centre / "images").iterdir())[0]
    mask_path = next((RETINA / centre / "masks").glob(image_path.stem + ".*"))
    image, mask = read_image(image_path), read_mask(mask_path)
    assert image.shape[:2] == mask.shape and image.shape[2] == 3
    assert 0.03 < mask.mean() < 0.15  # the README gives ~6.5-7.6 % vessel pixels


def test_real_kvasir_jpeg_masks_binarise_without_warning() -> None:
    require_shared_data()
    masks = sorted((POLYP / "Kvasir-SEG" / "masks").iterdir())[:5]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AmbiguousMaskWarning)
        fractions = [read_mask(path).mean() for path in masks]
    assert all(0.005 < f < 0.85 for f in fractions)
