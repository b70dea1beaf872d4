"""The images a run trains and validates on, loaded once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fedseg.data.config import DataConfig
from fedseg.data.layout import ImageRecord, scan_dataset
from fedseg.data.loading import LoadedImage, load_record
from fedseg.data.splits import Manifest, load_manifest, make_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    manifest: Manifest
    train: list[LoadedImage]
    val: list[ImageRecord]


def load_images(
    records: Sequence[ImageRecord], data: DataConfig, *, labelled: set[str] | None = None, progress: bool = True
) -> list[LoadedImage]:
    """Load records into memory; masks only of records whose key is in ``labelled`` (all when None)."""
    loaded = []
    for record in tqdm(records, desc="load images", unit="img", disable=None if progress else True, leave=False):
        with_mask = labelled is None or record.key in labelled
        loaded.append(load_record(record, channels=data.channels, resize=data.resize, with_mask=with_mask))
    return loaded


def manifest_for(data: DataConfig, records: dict[str, tuple[ImageRecord, ...]], path: Path) -> Manifest:
    """The run's manifest: read from ``path`` when it exists (a resumed run), else made and saved there."""
    if path.exists():
        return load_manifest(path)
    manifest = make_manifest(records, data.split)
    manifest.save(path)
    return manifest


def prepare_run_data(
    data: DataConfig, manifest_path: Path, *, include_unlabelled: bool = False, progress: bool = True
) -> RunData:
    """Scan, split and load a run's training images (labelled only unless ``include_unlabelled``)."""
    records = scan_dataset(data.root, data.centres)
    manifest = manifest_for(data, records, manifest_path)
    every = [r for centre in data.centres for r in records[centre]]
    train = manifest.select(every, "train" if include_unlabelled else "labelled")
    if not train:
        raise ValueError(f"no training images left in {', '.join(data.centres)} after the split; lower --val-fraction")
    labelled = {f"{c}/{s}" for c, split in manifest.centres.items() for s in split.labelled}
    images = load_images(train, data, labelled=labelled, progress=progress)
    n_labelled = sum(im.labelled for im in images)
    logger.info("training on %d images (%d labelled) from %s", len(images), n_labelled, ", ".join(data.centres))
    return RunData(manifest=manifest, train=images, val=manifest.select(every, "val"))
