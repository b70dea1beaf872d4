"""``fedseg predict``: binary masks (and optionally probability maps) for a folder of images, or of
volumes with a volume checkpoint (NIfTI masks with each input's affine: :mod:`fedseg.volumes.predict`)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.reading import is_image_file, read_image
from fedseg.devices import resolve_device
from fedseg.files import atomic_write_bytes
from fedseg.inference.crf import refine
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.models.checkpoint import Checkpoint, load_checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictConfig:
    checkpoint: Path
    images: Path
    out: Path
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    probabilities: bool = False
    device: str = "auto"
    engine: str = "torch"  # or an exported file's: onnxruntime, torchscript (fedseg.export)


@dataclass(frozen=True)
class PredictReport:
    written: list[Path]
    failures: list[str]


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found.")
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise DataError(f"{folder}: no images found (PNG, JPEG, TIFF, GIF, PPM/PGM, BMP).")
    return files


def _predict_volumes(config: PredictConfig, checkpoint: Checkpoint, progress: bool) -> PredictReport:
    from fedseg.volumes.inference import VolumePredictor
    from fedseg.volumes.predict import predict_volumes

    if config.inference.crf is not None:
        raise ValueError("dense CRF post-processing is for 2D images; drop --crf for volumes")
    predictor = VolumePredictor.from_checkpoint(checkpoint, config.inference, resolve_device(config.device))
    written, failures = predict_volumes(
        predictor,
        config.images,
        config.out,
        threshold=config.inference.threshold,
        probabilities=config.probabilities,
        progress=progress,
    )
    return PredictReport(written=written, failures=failures)


def _exported_predictor(config: PredictConfig) -> Predictor:
    from fedseg.export.engines import exported_predictor  # onnxruntime is imported only when asked for

    return exported_predictor(config.checkpoint, config.engine, config.inference)


def predict_folder(config: PredictConfig, *, progress: bool = True) -> PredictReport:
    """Write ``<stem>.png`` masks (0/255) and, if asked, ``<stem>_prob.png`` (probability x 255) per image;
    for a volume checkpoint ``<stem>.nii.gz`` (0/1) and ``<stem>_prob.nii.gz`` per volume. With an
    exported model (``engine`` onnxruntime or torchscript) images only."""
    if config.engine != "torch":
        predictor = _exported_predictor(config)
    else:
        checkpoint = load_checkpoint(config.checkpoint)
        if checkpoint.preprocessing.volumes:
            return _predict_volumes(config, checkpoint, progress)
        predictor = Predictor.from_checkpoint(checkpoint, config.inference, resolve_device(config.device))
    written, failures = [], []
    for path in tqdm(image_files(config.images), desc="predict", unit="img", disable=None if progress else True):
        try:
            image = read_image(path, channels=predictor.preprocessing.channels)
        except DataError as error:
            logger.error("skipped: %s", error)
            failures.append(str(error))
            continue
        probabilities = predictor.probabilities(image)
        if config.inference.crf is not None:
            probabilities = refine(image, probabilities, config.inference.crf)
        mask = (probabilities > config.inference.threshold).astype(np.uint8) * 255
        written.append(atomic_write_bytes(config.out / f"{path.stem}.png", _png_bytes(mask)))
        if config.probabilities:
            scaled = np.round(np.clip(probabilities, 0, 1) * 255).astype(np.uint8)
            written.append(atomic_write_bytes(config.out / f"{path.stem}_prob.png", _png_bytes(scaled)))
    return PredictReport(written=written, failures=failures)
