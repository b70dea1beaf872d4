"""The images a run trains and validates on, loaded once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fedseg.data.config import DataConfig
from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.loading import LoadedImage, load_record
from fedseg.data.splits import Manifest, check_manifest, load_manifest, make_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    manifest: Manifest
    train: list[LoadedImage]
    val: list[ImageRecord]


def _raise_if_unusable(failures: list[str]) -> None:
    if failures:
        listed = "\n  ".join(failures)
        raise DataError(
            f"{len(failures)} file(s) of the run cannot be used; fix them or move them out of the dataset, then "
            f"start again (nothing was trained or written):\n  {listed}"
        )


def _load_each(
    records: Sequence[ImageRecord], load: Callable[[ImageRecord], LoadedImage], *, desc: str, progress: bool
) -> tuple[list[LoadedImage], list[str]]:
    """Every record tried, so that one error message can list every file that cannot be used."""
    loaded, failures = [], []
    for record in tqdm(records, desc=desc, unit="img", disable=None if progress else True, leave=False):
        try:
            loaded.append(load(record))
        except DataError as error:
            failures.append(str(error))
    return loaded, failures


def _training_loader(data: DataConfig, labelled: set[str] | None) -> Callable[[ImageRecord], LoadedImage]:
    def load(record: ImageRecord) -> LoadedImage:
        with_mask = labelled is None or record.key in labelled
        return load_record(record, channels=data.channels, resize=data.resize, with_mask=with_mask)

    return load


def _checker(data: DataConfig) -> Callable[[ImageRecord], LoadedImage]:
    """Reads a record as evaluation does (native size), to find the files it could not use."""
    return lambda record: load_record(record, channels=data.channels)


def load_images(
    records: Sequence[ImageRecord], data: DataConfig, *, labelled: set[str] | None = None, progress: bool = True
) -> list[LoadedImage]:
    """Load records into memory; masks only of records whose key is in ``labelled`` (all when None).
    A ``DataError`` lists every file that cannot be used."""
    loaded, failures = _load_each(records, _training_loader(data, labelled), desc="load images", progress=progress)
    _raise_if_unusable(failures)
    return loaded


def check_images(records: Sequence[ImageRecord], data: DataConfig, *, progress: bool = True) -> None:
    """Read every record (image, mask, field of view) once, so that a bad evaluation file stops the run
    before step 1 instead of at its first validation. A ``DataError`` lists every file that cannot be used."""
    _, failures = _load_each(records, _checker(data), desc="check images", progress=progress)
    _raise_if_unusable(failures)


def current_manifest(data: DataConfig, records: dict[str, tuple[ImageRecord, ...]], saved: Path | None) -> Manifest:
    """The split of the current data and settings; ``saved`` (a run's manifest.json) must agree with it."""
    manifest = make_manifest(records, data.split)
    if saved is not None:
        check_manifest(load_manifest(saved), manifest, saved)
    return manifest


def prepare_run_data(
    data: DataConfig, saved_manifest: Path | None = None, *, include_unlabelled: bool = False, progress: bool = True
) -> RunData:
    """Scan, split and load a run's training images (labelled only unless ``include_unlabelled``) and read
    its validation images once. Nothing is written: the caller saves ``manifest`` when training starts."""
    records = scan_dataset(data.root, data.centres)
    manifest = current_manifest(data, records, saved_manifest)
    every = [r for centre in data.centres for r in records[centre]]
    train = manifest.select(every, "train" if include_unlabelled else "labelled")
    if not train:
        raise DataError(f"no training images left in {', '.join(data.centres)} after the split; lower --val-fraction")
    labelled = {f"{c}/{s}" for c, split in manifest.centres.items() for s in split.labelled}
    val = manifest.select(every, "val")
    images, failures = _load_each(train, _training_loader(data, labelled), desc="load images", progress=progress)
    _, val_failures = _load_each(val, _checker(data), desc="check validation", progress=progress)
    _raise_if_unusable(failures + val_failures)
    n_labelled = sum(im.labelled for im in images)
    logger.info("training on %d images (%d labelled) from %s", len(images), n_labelled, ", ".join(data.centres))
    return RunData(manifest=manifest, train=images, val=val)
