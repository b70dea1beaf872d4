"""Shared fixtures: small crops of the real multi-centre data, and synthetic centres."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
RETINA = SHARED_DATA / "retina"
POLYP = SHARED_DATA / "polyp"
RETINA_CENTRES = ("STARE", "AV-WIDE", "CHASE_DB1")

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def require_shared_data() -> None:
    if not RETINA.is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set FEDSEG_SHARED_DATA to the shared data folder")


def crop_centre_of(path: Path, size: int, *, mask: bool) -> np.ndarray:
    """A ``size`` x ``size`` crop around the image centre (real data, small so tests stay fast)."""
    image = Image.open(path)
    image = image.convert("L") if mask else image.convert("RGB")
    array = np.asarray(image)
    top = max(0, (array.shape[0] - size) // 2)
    left = max(0, (array.shape[1] - size) // 2)
    return array[top : top + size, left : left + size]


def write_real_crops(out: Path, source: Path, centres: tuple[str, ...], *, per_centre: int, size: int) -> Path:
    for centre in centres:
        images = sorted((source / centre / "images").iterdir())[:per_centre]
        for path in images:
            mask_path = next((source / centre / "masks").glob(path.stem + ".*"))
            (out / centre / "images").mkdir(parents=True, exist_ok=True)
            (out / centre / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop_centre_of(path, size, mask=False)).save(out / centre / "images" / f"{path.stem}.png")
            mask = crop_centre_of(mask_path, size, mask=True) > 127
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / centre / "masks" / f"{path.stem}.png")
    return out


@pytest.fixture(scope="session")
def retina_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real images per retinal centre, centre-cropped to 160 x 160 (with their masks)."""
    require_shared_data()
    return write_real_crops(tmp_path_factory.mktemp("retina"), RETINA, RETINA_CENTRES, per_centre=4, size=160)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic centres of six 96 x 96 images."""
    from fedseg.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate(SynthConfig(out=root, centres=3, images=6, size=96, seed=3), progress=False)
    return root
