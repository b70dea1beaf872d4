"""``fedseg check`` on volumes: per volume its shape, spacing, orientation and intensity range, and
every problem (mask on another grid, empty mask, non-binary labels, unreadable file) with the file
and the fix; then the training mode its spacing suggests."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord, list_centres, scan_centre
from fedseg.volumes.io import Volume, read_volume
from fedseg.volumes.loading import _check_grid, binary_mask, is_volume_record
from fedseg.volumes.plan import VolumePlan, plan_volumes

HEADER = (
    f"{'centre':<12} {'volume':<24} {'shape':>13} {'spacing (mm)':>18} {'orient':>6} "
    f"{'intensity':>17} {'foreground':>10}"
)


@dataclass
class VolumeReport:
    centre: str
    stem: str
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str = "-"
    intensity: tuple[float, float] | None = None
    foreground: float | None = None
    labelled: bool = False
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        shape = "x".join(map(str, self.shape)) if self.shape else "-"
        spacing = "x".join(f"{s:.3g}" for s in self.spacing) if self.spacing else "-"
        intensity = f"{self.intensity[0]:.4g}..{self.intensity[1]:.4g}" if self.intensity else "-"
        if self.foreground is not None:
            foreground = f"{100 * self.foreground:.3f} %"
        else:
            foreground = "unlabelled" if not self.labelled else "-"
        return (
            f"{self.centre:<12} {self.stem:<24} {shape:>13} {spacing:>18} {self.orientation:>6} "
            f"{intensity:>17} {foreground:>10}"
        )


def _mask_fraction(image: Volume, path: Path, kind: str, report: VolumeReport) -> float | None:
    try:
        mask = read_volume(path)
        _check_grid(image, mask, kind)
        foreground = binary_mask(mask.array, path)
    except DataError as error:
        report.problems.append(str(error))
        return None
    if not foreground.any():
        report.problems.append(
            f"warning: {path}: the {kind} is empty. Check the file, or move it out to leave the image unlabelled."
        )
    return float(foreground.mean())


def check_volume(record: ImageRecord) -> VolumeReport:
    """Read a volume record and report its geometry and every problem found (never raises DataError)."""
    report = VolumeReport(record.centre, record.stem, labelled=record.labelled)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = read_volume(record.image)
        except DataError as error:
            report.problems.append(str(error))
            return report
        report.shape, report.spacing = image.source_shape, image.spacing
        report.orientation = image.source_axcodes
        report.intensity = (float(np.min(image.array)), float(np.max(image.array)))
        if record.mask is not None:
            report.foreground = _mask_fraction(image, record.mask, "mask", report)
        if record.fov is not None:
            _mask_fraction(image, record.fov, "field-of-view mask", report)
    report.problems += [f"warning: {w.message}" for w in caught]
    return report


def _records(root: Path, centre: str, reports: list[VolumeReport]) -> Sequence[ImageRecord]:
    try:
        return scan_centre(root, centre)
    except DataError as error:
        reports.append(VolumeReport(centre, "-", problems=[str(error)]))
        return ()


def check_volumes(
    root: str | Path, centres: Sequence[str] | None = None, *, progress: bool = True
) -> tuple[list[VolumeReport], VolumePlan | None]:
    """Reports of every volume of the named centres, and the plan their spacing suggests."""
    root = Path(root)
    reports: list[VolumeReport] = []
    for centre in centres or list_centres(root):
        records = _records(root, centre, reports)
        for record in tqdm(
            records, desc=f"check {centre}", unit="vol", disable=None if progress else True, leave=False
        ):
            reports.append(check_volume(record))
    spacings = [r.spacing for r in reports if r.spacing is not None]
    return reports, plan_volumes(spacings) if spacings else None


def holds_volumes(root: str | Path, centres: Sequence[str] | None = None) -> bool:
    """Whether the dataset's first centre holds volumes (a dataset is all 2D or all volumes)."""
    root = Path(root)
    try:
        names = list(centres or list_centres(root))
        return bool(names) and is_volume_record(scan_centre(root, names[0])[0])
    except DataError:
        return False


def print_volume_check(root: Path, centres: Sequence[str] | None) -> int:
    """The ``fedseg check`` output for volumes; exit code 1 when there are errors (not only warnings)."""
    reports, plan = check_volumes(root, centres)
    print(HEADER)
    for report in reports:
        print(report.line())
    problems = [(r.centre, p) for r in reports for p in r.problems]
    for centre, problem in problems:
        print(f"  {centre}: {problem}")
    if plan is not None:
        print(f"suggested training: {plan.describe()}")
    errors = [p for _, p in problems if not p.startswith("warning:")]
    labelled = sum(r.labelled for r in reports)
    print(f"{len(reports)} volume(s), {labelled} labelled, {len(reports) - labelled} unlabelled")
    print("no problems found" if not problems else f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    return 1 if errors else 0
