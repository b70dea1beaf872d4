"""Which of a centre's images a site trains and evaluates on.

Every site derives its images from the seed, the centre's file names and its own spec, so
all sites of a federation agree on the centre's test split without talking to each other.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedseg.data.crops import CropDataset
from fedseg.data.errors import DataError
from fedseg.data.grouping import grouping_for
from fedseg.data.layout import ImageRecord, scan_centre
from fedseg.data.reading import read_mask
from fedseg.data.splits import SplitConfig, split_centre
from fedseg.federation.config import FederationConfig
from fedseg.federation.sites import Shard, SiteSpec
from fedseg.training.data import check_images, training_set
from fedseg.volumes.loading import is_volume_record


@dataclass(frozen=True)
class SiteRecords:
    """A site's training records (with the keys of those whose masks it may use) and evaluation records."""

    train: list[ImageRecord]
    labelled: frozenset[str]
    evaluation: list[ImageRecord]


@dataclass(frozen=True)
class SiteData:
    spec: SiteSpec
    train: CropDataset | None
    evaluation: list[ImageRecord]
    n_labelled: int
    n_unlabelled: int


def _test_stems(records: Sequence[ImageRecord], config: FederationConfig) -> set[str]:
    if config.test_fraction == 0:
        return set()
    split = split_centre(records, SplitConfig(seed=config.seed, val_fraction=0.0, test_fraction=config.test_fraction))
    return set(split.test)


def _groups(records: Sequence[ImageRecord]) -> list[list[ImageRecord]]:
    group_of = grouping_for(records[0].centre, {})
    by_group: dict[str, list[ImageRecord]] = {}
    for record in sorted(records, key=lambda r: r.stem):
        by_group.setdefault(group_of(record.stem), []).append(record)
    return [by_group[name] for name in sorted(by_group)]


def _foreground(group: list[ImageRecord]) -> float:
    fractions = [float(read_mask(r.mask).mean()) for r in group if r.mask is not None]
    return sum(fractions) / len(fractions) if fractions else 0.0


def shard_records(records: Sequence[ImageRecord], shard: Shard, *, seed: int) -> list[ImageRecord]:
    """Shard ``shard.index`` of ``shard.count``: subject groups dealt round-robin after a seeded shuffle
    (IID), or contiguous blocks of groups sorted by foreground fraction (``by_size``: non-IID)."""
    groups = _groups(records)
    if len(groups) < shard.count:
        raise DataError(f"centre '{records[0].centre}' has {len(groups)} subjects, too few for {shard.count} shards")
    if shard.by_size:
        groups.sort(key=lambda g: (_foreground(g), g[0].stem))
        size = len(groups) / shard.count
        chosen = groups[round((shard.index - 1) * size) : round(shard.index * size)]
    else:
        random.Random(f"fedseg-shard:{seed}:{records[0].centre}").shuffle(groups)
        chosen = groups[shard.index - 1 :: shard.count]
    return sorted((r for g in chosen for r in g), key=lambda r: r.stem)


def select_site_records(spec: SiteSpec, root: Path, config: FederationConfig) -> SiteRecords:
    records = list(scan_centre(root, spec.centre))
    test = _test_stems(records, config)
    if spec.test_split:
        if not test:
            raise DataError(
                f"site '{spec.name}' scores the test split of {spec.centre}, but run config "
                "'test-fraction' is 0; set it (e.g. 0.1)"
            )
        return SiteRecords([], frozenset(), [r for r in records if r.stem in test and r.labelled])
    pool = [r for r in records if r.stem not in test]
    if not spec.trains:
        return SiteRecords([], frozenset(), [r for r in pool if r.labelled])
    if spec.shard is not None:
        pool = shard_records(pool, spec.shard, seed=config.seed)
    split = split_centre(
        pool, SplitConfig(seed=config.seed, val_fraction=config.val_fraction, label_fraction=config.label_fraction)
    )
    by_stem = {r.stem: r for r in pool}
    labelled = frozenset(f"{spec.centre}/{s}" for s in split.labelled)
    return SiteRecords([by_stem[s] for s in split.train], labelled, [by_stem[s] for s in split.val])


def _check_kind(spec: SiteSpec, chosen: SiteRecords, config: FederationConfig) -> None:
    """The run config's 'volumes' must say what the site's files are (the server builds the model from it)."""
    records = chosen.train or chosen.evaluation
    first = records[0] if records else None
    if first is not None and is_volume_record(first) != config.volumes:
        kind = "volumes" if config.volumes else "2D images"
        raise DataError(
            f"site '{spec.name}': {first.image} is {'a volume' if not config.volumes else 'a 2D image'} but the run "
            f"config expects {kind}; set run config 'volumes' = {str(not config.volumes).lower()}"
        )


def load_site_data(spec: SiteSpec, root: Path, config: FederationConfig, *, progress: bool = False) -> SiteData:
    """Select and load a site's images (training crops only for training sites)."""
    chosen = select_site_records(spec, root, config)
    _check_kind(spec, chosen, config)
    if not spec.trains:
        return SiteData(spec, None, chosen.evaluation, 0, 0)
    if not chosen.labelled:
        raise DataError(f"site '{spec.name}' has no labelled training images; raise 'label-fraction' or add masks")
    data = config.data_config(root, (spec.centre,))
    spatial_dims = config.model_config.spatial_dims
    crops = training_set(
        chosen.train, data, spatial_dims=spatial_dims, labelled=set(chosen.labelled), progress=progress
    )
    check_images(chosen.evaluation, data, progress=progress)  # its validation images: fail now, not at round end
    n_labelled = int(crops.labelled.sum())
    return SiteData(spec, crops, chosen.evaluation, n_labelled, len(crops) - n_labelled)
