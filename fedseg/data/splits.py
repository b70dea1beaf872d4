"""Deterministic, seeded, grouped splits of each centre, saved as a manifest JSON.

For every centre: ``train``/``val``/``test`` stems, and within ``train`` the ``labelled``
and ``unlabelled`` stems for a label fraction. Images without a mask are always
unlabelled training images. The split of a centre depends only on the seed, the
centre's name and its stems, so adding a centre never reshuffles another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedseg.data.errors import DataError
from fedseg.data.grouping import grouping_for
from fedseg.data.layout import ImageRecord
from fedseg.files import atomic_write_json
from fedseg.integrity import DamagedFileError, sealed, unsealed

MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """How to split each centre. Fractions are of labelled images (in groups)."""

    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.0
    label_fraction: float = 1.0
    group_patterns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction", "label_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must leave images to train on, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )


@dataclass(frozen=True)
class CentreSplit:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...]

    def stems(self, split: str) -> tuple[str, ...]:
        if split == "all":
            return tuple(sorted(self.train + self.val + self.test))
        if split not in SPLITS + ("labelled", "unlabelled"):
            raise ValueError(f"unknown split '{split}'; choose one of {SPLITS + ('labelled', 'unlabelled', 'all')}")
        return getattr(self, split)


@dataclass(frozen=True)
class Manifest:
    config: SplitConfig
    centres: Mapping[str, CentreSplit]

    def select(self, records: Sequence[ImageRecord], split: str) -> list[ImageRecord]:
        """The records of ``split`` (all of one centre's records must be in this manifest)."""
        chosen: list[ImageRecord] = []
        for record in records:
            if record.centre not in self.centres:
                raise DataError(f"centre '{record.centre}' is not in this manifest; make a new one with it.")
            if record.stem in set(self.centres[record.centre].stems(split)):
                chosen.append(record)
        return chosen

    def to_json(self) -> dict:
        """The manifest as JSON, with a checksum of its content (checked by ``load_manifest``)."""
        return sealed(
            {
                "version": MANIFEST_VERSION,
                "config": {**asdict(self.config), "group_patterns": dict(self.config.group_patterns)},
                "centres": {name: _lists(split) for name, split in self.centres.items()},
            }
        )

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())


def _lists(split: CentreSplit) -> dict[str, list[str]]:
    return {key: list(stems) for key, stems in asdict(split).items()}


def _take(groups: list[list[str]], fraction: float, total: int) -> tuple[list[str], list[list[str]]]:
    """Whole groups from the front of ``groups`` until ``fraction`` of ``total`` images are taken."""
    wanted = round(fraction * total)
    taken: list[str] = []
    while groups and len(taken) < wanted:
        taken.extend(groups.pop(0))
    return taken, groups


def _shuffled_groups(stems: Sequence[str], group_of, rng: random.Random) -> list[list[str]]:
    by_group: dict[str, list[str]] = {}
    for stem in sorted(stems):
        by_group.setdefault(group_of(stem), []).append(stem)
    groups = [by_group[name] for name in sorted(by_group)]
    rng.shuffle(groups)
    return groups


def split_centre(records: Sequence[ImageRecord], config: SplitConfig) -> CentreSplit:
    """Split one centre's records. Val and test take whole subject groups of labelled images."""
    if not records:
        raise DataError("cannot split a centre with no images")
    centre = records[0].centre
    group_of = grouping_for(centre, config.group_patterns)
    rng = random.Random(f"fedseg-split:{config.seed}:{centre}")
    labelled = [r.stem for r in records if r.labelled]
    groups = _shuffled_groups(labelled, group_of, rng)
    val, groups = _take(groups, config.val_fraction, len(labelled))
    test, groups = _take(groups, config.test_fraction, len(labelled))
    train_labelled_groups = groups
    n_train_labelled = sum(len(g) for g in train_labelled_groups)
    label_rng = random.Random(f"fedseg-labels:{config.seed}:{centre}")
    label_rng.shuffle(train_labelled_groups)
    wanted = round(config.label_fraction * n_train_labelled)
    if config.label_fraction > 0 and n_train_labelled > 0:
        wanted = max(wanted, 1)
    keep: list[str] = []
    while train_labelled_groups and len(keep) < wanted:
        keep.extend(train_labelled_groups.pop(0))
    dropped = [stem for group in train_labelled_groups for stem in group]
    no_mask = [r.stem for r in records if not r.labelled]
    return CentreSplit(
        train=tuple(sorted(keep + dropped + no_mask)),
        val=tuple(sorted(val)),
        test=tuple(sorted(test)),
        labelled=tuple(sorted(keep)),
        unlabelled=tuple(sorted(dropped + no_mask)),
    )


def make_manifest(records_by_centre: Mapping[str, Sequence[ImageRecord]], config: SplitConfig) -> Manifest:
    return Manifest(config=config, centres={c: split_centre(r, config) for c, r in records_by_centre.items()})


MANIFEST_FIX = "Re-create it: train into a new --out folder (or restore the file from a backup)."


def _manifest_from(payload: dict, path: Path) -> Manifest:
    content = unsealed(payload, path, what="manifest", keys={"version", "config", "centres"}, fix=MANIFEST_FIX)
    if content["version"] != MANIFEST_VERSION:
        raise DataError(f"{path}: manifest version {content['version']} is not {MANIFEST_VERSION}. {MANIFEST_FIX}")
    try:
        config = SplitConfig(**content["config"])
        centres = {
            str(name): CentreSplit(**{key: tuple(str(stem) for stem in value) for key, value in split.items()})
            for name, split in content["centres"].items()
        }
    except (TypeError, ValueError, AttributeError) as error:
        raise DamagedFileError(f"{path}: damaged or not a fedseg manifest ({error}). {MANIFEST_FIX}") from None
    return Manifest(config=config, centres=centres)


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest written by ``Manifest.save``; a damaged one raises ``DataError`` naming the file."""
    path = Path(path)
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found.") from None
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise DamagedFileError(f"{path}: cannot read manifest ({error}). {MANIFEST_FIX}") from None
    return _manifest_from(payload, path)


def manifest_differences(saved: Manifest, current: Manifest) -> list[str]:
    """What differs between a saved manifest and the one the current data and settings give."""
    differences = [
        f"split setting {key}: {value!r} in the manifest, {getattr(current.config, key)!r} now"
        for key, value in asdict(saved.config).items()
        if value != getattr(current.config, key)
    ]
    for centre in sorted(set(saved.centres) | set(current.centres)):
        if centre not in current.centres or centre not in saved.centres:
            differences.append(f"centre {centre}: {'not in the manifest' if centre in current.centres else 'gone'}")
            continue
        before, now = set(saved.centres[centre].stems("all")), set(current.centres[centre].stems("all"))
        added, removed = sorted(now - before), sorted(before - now)
        if added:
            differences.append(f"centre {centre}: {len(added)} image(s) added ({', '.join(added[:5])})")
        if removed:
            differences.append(f"centre {centre}: {len(removed)} image(s) removed ({', '.join(removed[:5])})")
        if not added and not removed and saved.centres[centre] != current.centres[centre]:
            differences.append(f"centre {centre}: masks were added or removed")
    return differences


def check_manifest(saved: Manifest, current: Manifest, path: Path) -> None:
    """Refuse a saved manifest that the current data and split settings would not give."""
    differences = manifest_differences(saved, current)
    if differences:
        raise DataError(
            f"{path} was made from other data or split settings: {'; '.join(differences)}. The run would "
            "silently use its old split. Train into a new --out folder, or restore the data and settings."
        )
