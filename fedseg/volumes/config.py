"""How volumes are prepared: resampling on request, intensity normalisation, 3D patch depth."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("2d", "2.5d", "3d")


@dataclass(frozen=True)
class VolumeConfig:
    """``spacing``: in-plane voxel size in mm to resample to (None: keep each volume's own; slices are
    never resampled). ``percentiles``: the intensity range of each volume mapped to 0..1.
    ``patch_slices``: depth of 3D training patches and inference windows, in slices."""

    spacing: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    patch_slices: int = 8

    def __post_init__(self) -> None:
        if self.spacing is not None and not 0.05 <= self.spacing <= 20:
            raise ValueError(f"volume spacing must be between 0.05 and 20 mm (or None), got {self.spacing}")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"volume percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.patch_slices < 1:
            raise ValueError(f"patch_slices must be >= 1, got {self.patch_slices}")
