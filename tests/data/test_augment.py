from __future__ import annotations

import numpy as np
import pytest

from fedseg.data.augment import AugmentConfig, build_augmentation


def test_presets_exist_and_none_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    pipeline = build_augmentation(AugmentConfig.preset("none"), channels=3)
    out = pipeline(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], image)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentConfig.preset("extreme")


def test_strong_preset_changes_appearance_more_than_basic() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, (48, 48, 3), dtype=np.uint8)
    mask = np.zeros((48, 48), np.uint8)

    def mean_colour_shift(preset: str) -> float:
        pipeline = build_augmentation(AugmentConfig.preset(preset), channels=3)
        shifts = []
        for seed in range(40):
            pipeline.set_random_seed(seed)
            out = pipeline(image=image, mask=mask)["image"].astype(float)
            shifts.append(np.abs(out.mean(axis=(0, 1)) - image.mean(axis=(0, 1))).mean())
        return float(np.mean(shifts))

    assert mean_colour_shift("strong") > 2 * mean_colour_shift("basic")


@pytest.mark.parametrize("field,value", [("grey_probability", 1.5), ("contrast", -0.1), ("scale_min", 0.0)])
def test_invalid_values_name_the_setting(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        AugmentConfig(**{field: value})
