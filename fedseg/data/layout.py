"""The on-disk layout of a multi-centre dataset.

::

    <root>/<centre>/images/<stem>.<ext>     required, one file per image
    <root>/<centre>/masks/<stem>.<ext>      optional; an image without a mask is unlabelled
    <root>/<centre>/fov/<stem>.<ext>        optional field-of-view masks

Images are 2D files or volumes (NIfTI, NRRD, MetaImage files, DICOM series folders; see
:mod:`fedseg.volumes.formats`). A folder with nnU-Net's raw layout (``dataset.json``,
``imagesTr/``) is read through :mod:`fedseg.volumes.nnunet`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedseg.data.errors import DataError
from fedseg.data.reading import IMAGE_SUFFIXES, is_image_file
from fedseg.volumes.formats import VOLUME_SUFFIXES, is_nnunet_dataset, is_volume_path, volume_stem

logger = logging.getLogger(__name__)

IMAGES_DIR, MASKS_DIR, FOV_DIR = "images", "masks", "fov"


@dataclass(frozen=True)
class ImageRecord:
    """One image of one centre, with its mask and field of view where they exist."""

    centre: str
    stem: str
    image: Path
    mask: Path | None = None
    fov: Path | None = None

    @property
    def labelled(self) -> bool:
        return self.mask is not None

    @property
    def key(self) -> str:
        return f"{self.centre}/{self.stem}"


def _stem(path: Path) -> str | None:
    """The stem an image (2D file) or volume (file or DICOM folder) is matched by; None for anything else."""
    if is_image_file(path):
        return path.stem
    return volume_stem(path) if is_volume_path(path) else None


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        stem = _stem(path)
        if stem is None:
            continue
        if stem in files:
            raise DataError(
                f"{folder}: two files share the stem '{stem}' ({files[stem].name}, {path.name}). "
                "Keep one of them: masks are matched to images by stem."
            )
        files[stem] = path
    return files


def _nnunet(root: Path) -> dict[str, tuple[ImageRecord, ...]]:
    from fedseg.volumes.nnunet import scan_nnunet

    return scan_nnunet(root)


def list_centres(root: str | Path) -> list[str]:
    """Names of the centre folders under ``root`` (folders that contain ``images/``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found. Point --data at a folder with one sub-folder per centre.")
    if is_nnunet_dataset(root):
        return list(_nnunet(root))
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / IMAGES_DIR).is_dir())


def scan_centre(root: str | Path, centre: str) -> tuple[ImageRecord, ...]:
    """Every image of one centre, sorted by stem, with its mask and field of view."""
    if is_nnunet_dataset(Path(root)):
        by_centre = _nnunet(Path(root))
        if centre not in by_centre:
            raise DataError(f"{root}: no case of centre '{centre}' in centres.csv. Centres: {', '.join(by_centre)}.")
        return by_centre[centre]
    folder = Path(root) / centre
    if not folder.is_dir():
        available = ", ".join(list_centres(root)) or "none"
        raise DataError(f"{folder}: centre '{centre}' not found. Centres under {root}: {available}.")
    images_dir = folder / IMAGES_DIR
    if not images_dir.is_dir():
        raise DataError(f"{folder}: missing '{IMAGES_DIR}/' folder. Put the centre's images in {images_dir}.")
    images = _files_by_stem(images_dir)
    if not images:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES) + list(VOLUME_SUFFIXES)) + ", DICOM series folders"
        raise DataError(f"{images_dir}: no images found (centre '{centre}' is empty). Supported files: {kinds}.")
    masks = _files_by_stem(folder / MASKS_DIR) if (folder / MASKS_DIR).is_dir() else {}
    fovs = _files_by_stem(folder / FOV_DIR) if (folder / FOV_DIR).is_dir() else {}
    orphans = sorted(set(masks) - set(images))
    if orphans:
        logger.warning(
            "%s: %d mask(s) have no image and are ignored: %s", folder / MASKS_DIR, len(orphans), orphans[:5]
        )
    return tuple(
        ImageRecord(centre=centre, stem=stem, image=path, mask=masks.get(stem), fov=fovs.get(stem))
        for stem, path in images.items()
    )


def data_folders(root: str | Path, centres: Sequence[str]) -> list[Path]:
    """The folders a dataset's centres are read from: the root, each centre and its sub-folders."""
    root = Path(root)
    return [root] + [root / c / sub for c in centres for sub in ("", IMAGES_DIR, MASKS_DIR, FOV_DIR)]


def scan_dataset(root: str | Path, centres: Sequence[str] | None = None) -> dict[str, tuple[ImageRecord, ...]]:
    """Records of the named centres (all centres under ``root`` when ``centres`` is None)."""
    names = list(centres) if centres else list_centres(root)
    if not names:
        raise DataError(f"{root}: no centre folders with an '{IMAGES_DIR}/' sub-folder found.")
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise DataError(f"centre(s) named more than once: {sorted(duplicates)}")
    return {name: scan_centre(root, name) for name in names}
