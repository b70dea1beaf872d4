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
SPINAL = SHARED_DATA / "spinal-cord-gm"
RETINA_CENTRES = ("STARE", "AV-WIDE", "CHASE_DB1")
SPINAL_CENTRES = ("CEITEC", "Juntendo", "Milan", "NWU", "Philips", "UCL")

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


def require_spinal_data() -> None:
    if not SPINAL.is_dir():
        pytest.fail(f"spinal-cord volumes not found at {SPINAL}; set FEDSEG_SHARED_DATA to the shared data folder")


def write_volume_crops(out: Path, centres: tuple[str, ...], *, size: int, slices: int) -> Path:
    """The real volumes of ``centres`` (images, masks, unlabelled ``_run-2`` scans) cut to ``size`` x ``size``
    voxels around the cord and ``slices`` slices, as NIfTI whose affines still place them in the scanner."""
    import nibabel as nib

    for centre in centres:
        for image_path in sorted((SPINAL / centre / "images").glob("*.nii.gz")):
            stem = image_path.name[: -len(".nii.gz")]
            cord = nib.load(SPINAL / centre / "cord-masks" / f"{stem.removesuffix('_run-2')}.nii.gz")
            middle = np.argwhere(np.asanyarray(cord.dataobj) > 0).mean(axis=0).astype(int)
            box = tuple(slice(max(0, c - size // 2), max(0, c - size // 2) + size) for c in middle[:2])
            box += (slice(0, slices),)
            folders = [("images", image_path)]
            if (SPINAL / centre / "masks" / image_path.name).exists():
                folders.append(("masks", SPINAL / centre / "masks" / image_path.name))
            for folder, path in folders:
                (out / centre / folder).mkdir(parents=True, exist_ok=True)
                nib.save(nib.load(path).slicer[box], out / centre / folder / path.name)
    return out


@pytest.fixture(scope="session")
def spinal_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real MRI sites (UCL, NWU, Milan), cut to 48 x 48 voxels around the cord and 6 slices."""
    require_spinal_data()
    return write_volume_crops(tmp_path_factory.mktemp("spinal"), ("UCL", "NWU", "Milan"), size=48, slices=6)
