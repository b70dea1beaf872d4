"""``fedseg check``: read every file of a dataset and report what fedseg would see, problems included."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import list_centres, scan_centre
from fedseg.data.loading import load_record


@dataclass
class CentreReport:
    centre: str
    images: int = 0
    labelled: int = 0
    with_fov: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    foreground: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        heights = [h for h, _ in self.sizes] or [0]
        widths = [w for _, w in self.sizes] or [0]
        size = f"{min(widths)}-{max(widths)} x {min(heights)}-{max(heights)}"
        fg = f"{100 * sum(self.foreground) / len(self.foreground):.1f} %" if self.foreground else "-"
        return (
            f"{self.centre:<20} {self.images:>6} {self.labelled:>8} {self.images - self.labelled:>10} "
            f"{self.with_fov:>4} {size:>22} {fg:>10} {len(self.problems):>8}"
        )


HEADER = (
    f"{'centre':<20} {'images':>6} {'labelled':>8} {'unlabelled':>10} {'fov':>4} {'size (W x H)':>22} "
    f"{'foreground':>10} {'problems':>8}"
)


def check_centre(root: Path, centre: str, *, progress: bool = True) -> CentreReport:
    report = CentreReport(centre)
    try:
        records = scan_centre(root, centre)
    except DataError as error:
        report.problems.append(str(error))
        return report
    for record in tqdm(records, desc=f"check {centre}", unit="img", disable=None if progress else True, leave=False):
        report.images += 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                loaded = load_record(record)
            except DataError as error:
                report.problems.append(str(error))
                continue
        report.problems += [f"warning: {w.message}" for w in caught]
        report.sizes.add(loaded.image.shape[:2])
        report.with_fov += loaded.fov is not None
        if loaded.mask is not None:
            report.labelled += 1
            report.foreground.append(float(loaded.mask.mean()))
    return report


def check_dataset(
    root: str | Path, centres: Sequence[str] | None = None, *, progress: bool = True
) -> list[CentreReport]:
    root = Path(root)
    names = list(centres) if centres else list_centres(root)
    if not names:
        raise DataError(f"{root}: no centre folders with an 'images/' sub-folder found.")
    return [check_centre(root, name, progress=progress) for name in names]
