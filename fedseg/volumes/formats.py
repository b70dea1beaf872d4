"""Which files and folders are volumes, and the stem a volume is matched by.

NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) files,
and DICOM series as one folder per series (files ``*.dcm``, or extension-less files starting
with the DICOM preamble).
"""

from __future__ import annotations

from pathlib import Path

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICOM_MAGIC_OFFSET, _DICOM_MAGIC = 128, b"DICM"


def volume_suffix(path: Path) -> str | None:
    """The volume suffix of a file name (``.nii.gz`` counts as one), or None."""
    name = path.name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


def is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as handle:
        handle.seek(_DICOM_MAGIC_OFFSET)
        return handle.read(4) == _DICOM_MAGIC


def is_dicom_series(path: Path) -> bool:
    """A folder holding DICOM files (one series: the slices of one volume)."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    return any(is_dicom_file(child) for child in path.iterdir() if child.is_file())


def is_volume_path(path: Path) -> bool:
    """A volume file, or a DICOM series folder."""
    if path.name.startswith("."):
        return False
    if path.is_file():
        return volume_suffix(path) is not None
    return is_dicom_series(path)


def volume_stem(path: Path) -> str:
    """The name without its volume suffix: ``sub-01.nii.gz`` -> ``sub-01``; a DICOM folder keeps its name."""
    suffix = volume_suffix(path) if path.is_file() or volume_suffix(path) else None
    return path.name[: -len(suffix)] if suffix else path.name


def is_nnunet_dataset(root: Path) -> bool:
    """An nnU-Net raw dataset folder: ``dataset.json`` beside ``imagesTr/``."""
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()
