"""The nnU-Net raw layout, with a centre for every case from a small mapping file.

::

    <root>/dataset.json                 nnU-Net's description: "file_ending", one entry in "channel_names"
    <root>/imagesTr/<case>_0000.nii.gz  the image of each case (channel suffix _0000)
    <root>/labelsTr/<case>.nii.gz       its label map (foreground: label > 0); a case without one is unlabelled
    <root>/centres.csv                  "case,centre" per line (a header line is allowed)

nnU-Net's own tools read the same folder; ``imagesTs/`` is left alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord

CENTRE_MAP = "centres.csv"
CHANNEL = "_0000"


def _description(root: Path) -> dict:
    path = root / "dataset.json"
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # JSON and UTF-8 errors are ValueErrors
        raise DataError(f"{path}: cannot read nnU-Net's dataset.json ({error}). Fix or rewrite it.") from None
    if not isinstance(description, dict):
        description = {"channel_names": None}
    channels = description.get("channel_names", description.get("modality", {"0": "?"}))
    if not isinstance(channels, dict) or not isinstance(description.get("file_ending", ""), str):
        raise DataError(
            f"{path}: not an nnU-Net dataset description (a JSON object with 'channel_names' and "
            "'file_ending'). Fix or rewrite it."
        )
    if len(channels) != 1:
        raise DataError(
            f"{path}: {len(channels)} input channels ({', '.join(map(str, channels.values()))}); "
            "fedseg trains on one channel. Keep one channel's files (_0000) in a copy of the dataset."
        )
    return description


def _centre_map(root: Path) -> dict[str, str]:
    path = root / CENTRE_MAP
    if not path.is_file():
        raise DataError(
            f"{path}: missing. Write one 'case,centre' line per case of imagesTr/ (the hospital it came from)."
        )
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, ValueError, csv.Error) as error:
        raise DataError(f"{path}: unreadable ({error}). Write it again: one 'case,centre' line per case.") from None
    mapping: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (number == 1 and cells[:2] == ["case", "centre"]):
            continue
        if len(cells) != 2 or not all(cells):
            raise DataError(f"{path}, line {number}: expected 'case,centre', got {','.join(row)!r}.")
        mapping[cells[0]] = cells[1]
    return mapping


def _cases(root: Path, ending: str) -> dict[str, Path]:
    endings = f"(file names end in '{CHANNEL}{ending}' as file_ending in {root / 'dataset.json'} says)"
    images = sorted(p for p in (root / "imagesTr").iterdir() if p.name.endswith(ending) and not p.name.startswith("."))
    cases: dict[str, Path] = {}
    for path in images:
        stem = path.name[: -len(ending)]
        if not stem.endswith(CHANNEL):
            if stem[-5:-4] == "_" and stem[-4:].isdigit():
                continue  # another channel of a multi-channel case; dataset.json said one channel
            raise DataError(f"{path}: nnU-Net image names end in the channel suffix {CHANNEL} {endings}; rename it.")
        cases[stem[: -len(CHANNEL)]] = path
    return cases


def scan_nnunet(root: str | Path) -> dict[str, tuple[ImageRecord, ...]]:
    """Every case of ``imagesTr/`` as a record of its centre (from ``centres.csv``), centres sorted by name."""
    root = Path(root)
    ending = str(_description(root).get("file_ending", ".nii.gz"))
    centres = _centre_map(root)
    cases = _cases(root, ending)
    if not cases:
        raise DataError(
            f"{root / 'imagesTr'}: no '*{CHANNEL}{ending}' images found (file_ending in {root / 'dataset.json'})."
        )
    unmapped = sorted(set(cases) - set(centres))
    if unmapped:
        raise DataError(
            f"{root / CENTRE_MAP}: no centre for case(s) {unmapped[:5]}; add a 'case,centre' line for each."
        )
    records: dict[str, list[ImageRecord]] = {}
    for case, image in cases.items():
        label = root / "labelsTr" / f"{case}{ending}"
        record = ImageRecord(centre=centres[case], stem=case, image=image, mask=label if label.is_file() else None)
        records.setdefault(record.centre, []).append(record)
    return {centre: tuple(records[centre]) for centre in sorted(records)}
