"""``fedseg predict``: binary masks (and optionally probability maps) for a folder of images, or of
volumes with a volume checkpoint (NIfTI masks with each input's affine: :mod:`fedseg.volumes.predict`)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.reading import is_image_file, read_image
from fedseg.devices import resolve_device
from fedseg.files import atomic_write_bytes
from fedseg.inference.crf import refine
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.models.checkpoint import Checkpoint, load_checkpoint
from fedseg.outputs import OutputConflict, check_output_folder, check_planned_outputs, inputs_protected

logger = logging.getLogger(__name__)
OUTPUT_TAG = "fedseg"  # a PNG text chunk in every file predict writes


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
    """A PNG that says it was written by ``fedseg predict`` (a later run may replace it, nothing else)."""
    info = PngInfo()
    info.add_text(OUTPUT_TAG, "predict")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _written_by_predict(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.info.get(OUTPUT_TAG) == "predict"
    except Exception:  # anything unreadable is not ours
        return False


def check_replaceable(
    planned: list[tuple[Path, Path]], written_by_predict: Callable[[Path], bool] = _written_by_predict
) -> None:
    """Refuse outputs that exist and were not written by ``fedseg predict`` (e.g. ground-truth masks)."""
    foreign = sorted(out.name for out, _ in planned if out.exists() and not written_by_predict(out))
    if foreign:
        raise OutputConflict(
            f"{planned[0][0].parent} holds {len(foreign)} file(s) that fedseg predict did not write and would "
            f"replace ({', '.join(foreign[:5])}). Choose an empty or new --out; nothing was written."
        )


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found.")
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise DataError(f"{folder}: no images found (PNG, JPEG, TIFF, GIF, PPM/PGM, BMP).")
    return files


def planned_outputs(config: PredictConfig, files: list[Path]) -> list[tuple[Path, Path]]:
    """(output, image) pairs: ``<stem>.png`` and, with probabilities, ``<stem>_prob.png`` per image."""
    planned = [(config.out / f"{path.stem}.png", path) for path in files]
    if config.probabilities:
        planned += [(config.out / f"{path.stem}_prob.png", path) for path in files]
    return planned


def _predict_volumes(config: PredictConfig, checkpoint: Checkpoint, progress: bool) -> PredictReport:
    from fedseg.volumes.inference import VolumePredictor
    from fedseg.volumes.predict import planned_volume_outputs, predict_volumes, volume_inputs, written_by_predict

    if config.inference.crf is not None:
        raise ValueError("dense CRF post-processing is for 2D images; drop --crf for volumes")
    volumes = volume_inputs(config.images)
    planned = planned_volume_outputs(volumes, config.out, config.probabilities)
    check_planned_outputs(planned, inputs=volumes)
    check_replaceable(planned, written_by_predict)
    predictor = VolumePredictor.from_checkpoint(checkpoint, config.inference, resolve_device(config.device))
    with inputs_protected(files=[*volumes, config.checkpoint], folders=[config.images]):
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
    exported model (``engine`` onnxruntime or torchscript) images only.

    Refused before anything is written: an output folder that is the image folder, and outputs that
    would collide (``a.png`` and ``a.jpg``), replace an input, or replace a file predict did not write.
    """
    check_output_folder(config.out, [config.images])
    if config.engine != "torch":
        predictor = _exported_predictor(config)
    else:
        checkpoint = load_checkpoint(config.checkpoint)
        if checkpoint.preprocessing.volumes:
            return _predict_volumes(config, checkpoint, progress)
        predictor = Predictor.from_checkpoint(checkpoint, config.inference, resolve_device(config.device))
    files = image_files(config.images)
    planned = planned_outputs(config, files)
    check_planned_outputs(planned, inputs=[*files, config.checkpoint])
    check_replaceable(planned)
    written, failures = [], []
    with inputs_protected(files=[*files, config.checkpoint], folders=[config.images]):
        for path in tqdm(files, desc="predict", unit="img", disable=None if progress else True):
            try:
                image = read_image(path, channels=predictor.preprocessing.channels)
            except DataError as error:
                logger.error("skipped: %s", error)
                failures.append(str(error))
                continue
            written += _predict_one(config, predictor, path, image)
    return PredictReport(written=written, failures=failures)


def _predict_one(config: PredictConfig, predictor: Predictor, path: Path, image: np.ndarray) -> list[Path]:
    probabilities = predictor.probabilities(image)
    if config.inference.crf is not None:
        probabilities = refine(image, probabilities, config.inference.crf)
    mask = (probabilities > config.inference.threshold).astype(np.uint8) * 255
    written = [atomic_write_bytes(config.out / f"{path.stem}.png", _png_bytes(mask))]
    if config.probabilities:
        scaled = np.round(np.clip(probabilities, 0, 1) * 255).astype(np.uint8)
        written.append(atomic_write_bytes(config.out / f"{path.stem}_prob.png", _png_bytes(scaled)))
    return written
