"""Choosing how to train on a set of volumes from their voxel spacing, as nnU-Net does.

Scans whose slices are much thicker than their in-plane voxels (anisotropy above 3, e.g.
0.5 x 0.5 x 3 mm) are segmented slice by slice with neighbouring slices as context (2.5D, a 2D
model); near-isotropic scans with a 3D model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ANISOTROPY_THRESHOLD = 3.0
DEFAULT_MODELS = {"2.5d": "unet", "3d": "unet3d"}
DEFAULT_CHANNELS = {"2.5d": 3, "3d": 1}


@dataclass(frozen=True)
class VolumePlan:
    """The chosen mode, with the median spacing and anisotropy it was chosen from."""

    mode: str
    median_spacing: tuple[float, float, float]
    anisotropy: float
    volumes: int

    @property
    def model(self) -> str:
        return DEFAULT_MODELS[self.mode]

    @property
    def channels(self) -> int:
        return DEFAULT_CHANNELS[self.mode]

    def describe(self) -> str:
        spacing = " x ".join(f"{s:.3g}" for s in self.median_spacing)
        comparison = ">" if self.mode == "2.5d" else "<="
        what = "2.5D: slice stacks of 3 slices for a 2D model" if self.mode == "2.5d" else "3D patches for a 3D model"
        return (
            f"{what} (model '{self.model}'): median spacing {spacing} mm over {self.volumes} volume(s), "
            f"anisotropy {self.anisotropy:.1f} {comparison} {ANISOTROPY_THRESHOLD:g}"
        )


def plan_volumes(spacings: Sequence[tuple[float, float, float]]) -> VolumePlan:
    """2.5D when the median spacing's largest axis is more than 3 times its smallest, else 3D."""
    if not spacings:
        raise ValueError("no volumes to plan from")
    median = tuple(float(s) for s in np.median(np.asarray(spacings, dtype=np.float64), axis=0))
    anisotropy = max(median) / min(median)
    mode = "2.5d" if anisotropy > ANISOTROPY_THRESHOLD else "3d"
    return VolumePlan(mode, median, anisotropy, len(spacings))  # type: ignore[arg-type]


def volume_mode(spatial_dims: int) -> str:
    """Volumes are 2.5D slice stacks for a 2D model and 3D for a 3D one."""
    return "3d" if spatial_dims == 3 else "2.5d"


def plan_for_dataset(root: str | Path, centres: Sequence[str]) -> VolumePlan | None:
    """The plan for the volumes of ``centres`` (spacing from headers only); None for 2D images."""
    from fedseg.data.layout import scan_dataset
    from fedseg.volumes.io import header_spacing
    from fedseg.volumes.loading import is_volume_record

    records = [r for rs in scan_dataset(root, centres).values() for r in rs]
    if not records or not is_volume_record(records[0]):
        return None
    return plan_volumes([header_spacing(r.image) for r in records])
