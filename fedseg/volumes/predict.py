"""``fedseg predict`` on volumes: a NIfTI mask per volume, in the voxel order and with the affine of its
input, so it opens in a viewer on top of the scan."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord
from fedseg.volumes.formats import is_volume_path, volume_stem
from fedseg.volumes.inference import VolumePredictor
from fedseg.volumes.io import nifti_description, write_like
from fedseg.volumes.scoring import native_volume

logger = logging.getLogger(__name__)
PREDICT_DESCRIPTION = "fedseg predict"  # in the header of every volume predict writes


def written_by_predict(path: Path) -> bool:
    return nifti_description(path) == PREDICT_DESCRIPTION


def volume_inputs(path: Path) -> list[Path]:
    """``path`` itself when it is a volume (file or DICOM series folder), else the volumes inside it."""
    if not path.exists():
        raise DataError(f"{path}: not found.")
    if is_volume_path(path):
        return [path]
    volumes = sorted(p for p in path.iterdir() if is_volume_path(p))
    if not volumes:
        raise DataError(f"{path}: no volumes found (NIfTI, NRRD, MetaImage files or DICOM series folders).")
    return volumes


def planned_volume_outputs(volumes: list[Path], out: Path, probabilities: bool) -> list[tuple[Path, Path]]:
    """(output, volume) pairs: ``<stem>.nii.gz`` and, with probabilities, ``<stem>_prob.nii.gz`` per volume."""
    planned = [(out / f"{volume_stem(path)}.nii.gz", path) for path in volumes]
    if probabilities:
        planned += [(out / f"{volume_stem(path)}_prob.nii.gz", path) for path in volumes]
    return planned


def predict_volume(predictor: VolumePredictor, path: Path, out: Path, *, threshold: float, probabilities: bool):
    """Write ``<stem>.nii.gz`` (uint8 0/1) and, if asked, ``<stem>_prob.nii.gz`` (float32) for one volume."""
    loaded = native_volume(ImageRecord(centre="", stem=volume_stem(path), image=path), predictor)
    foreground = predictor.probabilities(loaded)
    stem = loaded.record.stem
    mask = (foreground > threshold).astype(np.uint8)
    written = [write_like(out / f"{stem}.nii.gz", mask, loaded.volume, description=PREDICT_DESCRIPTION)]
    if probabilities:
        probability = foreground.astype(np.float32)
        written.append(
            write_like(out / f"{stem}_prob.nii.gz", probability, loaded.volume, description=PREDICT_DESCRIPTION)
        )
    return written


def predict_volumes(
    predictor: VolumePredictor, images: Path, out: Path, *, threshold: float, probabilities: bool, progress: bool
) -> tuple[list[Path], list[str]]:
    """Predict every volume of ``images``; unreadable ones are listed, not fatal. Returns (written, failures)."""
    written: list[Path] = []
    failures: list[str] = []
    for path in tqdm(volume_inputs(images), desc="predict", unit="vol", disable=None if progress else True):
        try:
            written += predict_volume(predictor, path, out, threshold=threshold, probabilities=probabilities)
        except DataError as error:
            logger.error("skipped: %s", error)
            failures.append(str(error))
    return written, failures
