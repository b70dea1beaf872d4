"""In-memory synthetic crops for benchmarks that time training steps (no disk, no real data)."""

from __future__ import annotations

import numpy as np

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.layout import ImageRecord
from fedseg.data.loading import LoadedImage
from fedseg.data.synth import centre_appearance, synth_image


def synthetic_crops(
    *, images: int, size: int, crop: int, labelled_fraction: float = 1.0, seed: int = 0
) -> TrainingCrops:
    appearance = centre_appearance(0, 1, seed)
    loaded = []
    for index in range(images):
        image, mask, _ = synth_image(size, np.random.default_rng([seed, index]), appearance)
        record = ImageRecord("bench", f"img-{index:04d}", image=__file__)  # type: ignore[arg-type]
        keep_mask = index < max(1, round(labelled_fraction * images))
        loaded.append(LoadedImage(record, image, mask if keep_mask else None, None, image.shape[:2]))
    return TrainingCrops(loaded, crop=CropConfig(size=crop), augment=AugmentConfig.preset("strong"))
