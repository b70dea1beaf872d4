from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedseg.data.errors import DataError
from fedseg.data.layout import list_centres, scan_centre, scan_dataset
from fedseg.data.loading import load_record


def _png(path: Path, shape: tuple[int, ...], value: int = 200) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def test_images_without_masks_are_unlabelled(tmp_path: Path) -> None:
    _png(tmp_path / "A" / "images" / "a1.png", (8, 8, 3))
    _png(tmp_path / "A" / "images" / "a2.jpg", (8, 8, 3))
    _png(tmp_path / "A" / "masks" / "a1.png", (8, 8), 255)
    records = scan_centre(tmp_path, "A")
    assert [(r.stem, r.labelled) for r in records] == [("a1", True), ("a2", False)]


def test_missing_images_folder_names_folder_and_fix(tmp_path: Path) -> None:
    (tmp_path / "A" / "masks").mkdir(parents=True)
    with pytest.raises(DataError, match=r"A: missing 'images/' folder.*Put the centre's images"):
        scan_centre(tmp_path, "A")


def test_empty_centre_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "A" / "images").mkdir(parents=True)
    (tmp_path / "A" / "images" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no images found.*'A' is empty"):
        scan_centre(tmp_path, "A")


def test_unknown_centre_lists_available_ones(tmp_path: Path) -> None:
    _png(tmp_path / "B" / "images" / "b.png", (8, 8, 3))
    with pytest.raises(DataError, match="centre 'A' not found.*Centres under .*: B"):
        scan_dataset(tmp_path, ["A"])
    assert list_centres(tmp_path) == ["B"]


def test_two_files_with_one_stem_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "A" / "images" / "x.png", (8, 8, 3))
    _png(tmp_path / "A" / "images" / "x.jpg", (8, 8, 3))
    with pytest.raises(DataError, match="share the stem 'x'"):
        scan_centre(tmp_path, "A")


def test_mask_size_mismatch_names_both_files(tmp_path: Path) -> None:
    _png(tmp_path / "A" / "images" / "x.png", (8, 10, 3))
    _png(tmp_path / "A" / "masks" / "x.png", (8, 9), 255)
    (record,) = scan_centre(tmp_path, "A")
    with pytest.raises(DataError, match=r"masks/x.png: mask is 9x8 .* image x.png is 10x8"):
        load_record(record)


def test_resize_scales_longer_side_and_keeps_mask_binary(retina_crops: Path) -> None:
    record = scan_centre(retina_crops, "STARE")[0]
    loaded = load_record(record, resize=80)
    assert loaded.image.shape == (80, 80, 3) and loaded.mask.shape == (80, 80)
    assert loaded.mask.dtype == bool and loaded.native_size == (160, 160)
