"""Where a run's data comes from and how it is prepared."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig
from fedseg.data.normalise import NORMALISATIONS
from fedseg.data.splits import SplitConfig
from fedseg.volumes.config import VolumeConfig


@dataclass(frozen=True)
class DataConfig:
    """Dataset root, centres, and preprocessing. ``resize`` scales each image's longer side at load;
    ``volume`` says how volumes (NIfTI, DICOM, ...) are prepared and is ignored for 2D images."""

    root: Path
    centres: tuple[str, ...]
    channels: int = 3
    resize: int | None = None
    normalisation: str = "image"
    crop: CropConfig = field(default_factory=CropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)

    def __post_init__(self) -> None:
        if not self.centres:
            raise ValueError("name at least one centre (--centres A,B)")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.resize is not None and self.resize < 16:
            raise ValueError(f"resize must be at least 16 pixels, got {self.resize}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got '{self.normalisation}'")
