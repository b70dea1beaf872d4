"""The images (or volumes) a run trains and validates on, loaded once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropDataset, TrainingCrops
from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.loading import LoadedImage, load_record
from fedseg.data.splits import Manifest, check_manifest, load_manifest, make_manifest
from fedseg.volumes.loading import is_volume_record, load_volume

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RunData:
    manifest: Manifest
    train: CropDataset
    val: list[ImageRecord]
    volumes: bool = False


def _raise_if_unusable(failures: list[str]) -> None:
    if failures:
        listed = "\n  ".join(failures)
        raise DataError(
            f"{len(failures)} file(s) of the run cannot be used; fix them or move them out of the dataset, then "
            f"start again (nothing was trained or written):\n  {listed}"
        )


def _load_each(
    records: Sequence[ImageRecord], load: Callable[[ImageRecord], T], *, desc: str, progress: bool
) -> tuple[list[T], list[str]]:
    """Every record tried, so that one error message can list every file that cannot be used."""
    loaded: list[T] = []
    failures: list[str] = []
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


def _checker(data: DataConfig) -> Callable[[ImageRecord], object]:
    """Reads a record as evaluation does (native size), to find the files it could not use."""

    def check(record: ImageRecord) -> object:
        if is_volume_record(record):
            return load_volume(record, data.volume)
        return load_record(record, channels=data.channels)

    return check


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


def training_set(
    records: Sequence[ImageRecord],
    data: DataConfig,
    *,
    spatial_dims: int = 2,
    labelled: set[str] | None = None,
    progress: bool = True,
) -> CropDataset:
    """Load records into the crops a run samples from: 2D crops of images, or for volumes 2.5D slice
    stacks (2D models) or 3D patches (3D models)."""
    kinds = {is_volume_record(r) for r in records}
    if len(kinds) > 1:
        volume = next(r for r in records if is_volume_record(r))
        image = next(r for r in records if not is_volume_record(r))
        raise DataError(
            f"{volume.image} is a volume but {image.image} is a 2D image; train on one kind at a time "
            "(move the other into a dataset of its own)."
        )
    if kinds == {True}:
        from fedseg.volumes.training import load_volumes, volume_training_set

        volumes = load_volumes(records, data.volume, labelled=labelled, progress=progress)
        return volume_training_set(
            volumes,
            spatial_dims=spatial_dims,
            channels=data.channels,
            crop=data.crop,
            augment=data.augment,
            normalisation=data.normalisation,
            config=data.volume,
        )
    if spatial_dims != 2 and records:
        raise ValueError(f"a {spatial_dims}D model needs volumes; {records[0].image} is a 2D image")
    images = load_images(records, data, labelled=labelled, progress=progress)
    return TrainingCrops(images, crop=data.crop, augment=data.augment, normalisation=data.normalisation)


def current_manifest(data: DataConfig, records: dict[str, tuple[ImageRecord, ...]], saved: Path | None) -> Manifest:
    """The split of the current data and settings; ``saved`` (a run's manifest.json) must agree with it."""
    manifest = make_manifest(records, data.split)
    if saved is not None:
        check_manifest(load_manifest(saved), manifest, saved)
    return manifest


def prepare_run_data(
    data: DataConfig,
    saved_manifest: Path | None = None,
    *,
    include_unlabelled: bool = False,
    spatial_dims: int = 2,
    progress: bool = True,
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
    check_images(val, data, progress=progress)
    dataset = training_set(train, data, spatial_dims=spatial_dims, labelled=labelled, progress=progress)
    n_labelled = int(dataset.labelled.sum())
    logger.info("training on %d images (%d labelled) from %s", len(dataset), n_labelled, ", ".join(data.centres))
    volumes = is_volume_record(train[0])
    return RunData(manifest=manifest, train=dataset, val=val, volumes=volumes)
