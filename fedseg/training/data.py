"""The images (or volumes) a run trains and validates on, loaded once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropDataset, TrainingCrops
from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.loading import LoadedImage, load_record
from fedseg.data.splits import Manifest, load_manifest, make_manifest
from fedseg.volumes.loading import is_volume_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    manifest: Manifest
    train: CropDataset
    val: list[ImageRecord]
    volumes: bool = False


def load_images(
    records: Sequence[ImageRecord], data: DataConfig, *, labelled: set[str] | None = None, progress: bool = True
) -> list[LoadedImage]:
    """Load records into memory; masks only of records whose key is in ``labelled`` (all when None)."""
    loaded = []
    for record in tqdm(records, desc="load images", unit="img", disable=None if progress else True, leave=False):
        with_mask = labelled is None or record.key in labelled
        loaded.append(load_record(record, channels=data.channels, resize=data.resize, with_mask=with_mask))
    return loaded


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


def manifest_for(data: DataConfig, records: dict[str, tuple[ImageRecord, ...]], path: Path) -> Manifest:
    """The run's manifest: read from ``path`` when it exists (a resumed run), else made and saved there."""
    if path.exists():
        return load_manifest(path)
    manifest = make_manifest(records, data.split)
    manifest.save(path)
    return manifest


def prepare_run_data(
    data: DataConfig,
    manifest_path: Path,
    *,
    include_unlabelled: bool = False,
    spatial_dims: int = 2,
    progress: bool = True,
) -> RunData:
    """Scan, split and load a run's training images (labelled only unless ``include_unlabelled``)."""
    records = scan_dataset(data.root, data.centres)
    manifest = manifest_for(data, records, manifest_path)
    every = [r for centre in data.centres for r in records[centre]]
    train = manifest.select(every, "train" if include_unlabelled else "labelled")
    if not train:
        raise ValueError(f"no training images left in {', '.join(data.centres)} after the split; lower --val-fraction")
    labelled = {f"{c}/{s}" for c, split in manifest.centres.items() for s in split.labelled}
    dataset = training_set(train, data, spatial_dims=spatial_dims, labelled=labelled, progress=progress)
    n_labelled = int(dataset.labelled.sum())
    logger.info("training on %d images (%d labelled) from %s", len(dataset), n_labelled, ", ".join(data.centres))
    volumes = is_volume_record(train[0])
    return RunData(manifest=manifest, train=dataset, val=manifest.select(every, "val"), volumes=volumes)
