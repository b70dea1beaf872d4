from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig, TrainingCrops, extract_window
from fedseg.data.layout import scan_centre
from fedseg.data.loading import load_record


@pytest.fixture(scope="module")
def stare(retina_crops: Path) -> list:
    return [load_record(r) for r in scan_centre(retina_crops, "STARE")]


def test_item_shapes_types_and_standardisation(stare: list) -> None:
    crops = TrainingCrops(stare, crop=CropConfig(size=64), augment=AugmentConfig.preset("strong"))
    item = crops[(0, 123)]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (1, 64, 64) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["labelled"] is True and item["index"] == 0
    channel_means = item["image"].mean(dim=(1, 2))
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-4)


def test_same_key_gives_same_crop_other_key_another(stare: list) -> None:
    crops = TrainingCrops(stare, crop=CropConfig(size=48), augment=AugmentConfig.preset("strong"))
    a, b, c = crops[(1, 7)], crops[(1, 7)], crops[(1, 8)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_foreground_oversampling_raises_the_vessel_fraction_of_real_crops(stare: list) -> None:
    def vessel_fraction(probability: float) -> float:
        crops = TrainingCrops(
            stare, crop=CropConfig(size=24, foreground_probability=probability), augment=AugmentConfig.preset("none")
        )
        return float(np.mean([crops[(i % len(stare), i)]["mask"].mean() for i in range(300)]))

    assert vessel_fraction(1.0) > 1.5 * vessel_fraction(0.0)


def test_flips_and_rotations_keep_mask_aligned_with_image(stare: list) -> None:
    # A "scanner" whose image is its own mask: every geometric augmentation must keep them equal.
    mask_images = [
        type(im)(im.record, np.repeat(im.mask[:, :, None].astype(np.uint8) * 255, 3, 2), im.mask, None, im.native_size)
        for im in stare
    ]
    crops = TrainingCrops(
        mask_images, crop=CropConfig(size=64), augment=AugmentConfig.preset("basic"), normalisation="none"
    )
    for seed in range(20):
        item = crops[(seed % len(stare), seed)]
        image_fg = item["image"][0] > 0.5
        agreement = (image_fg == item["mask"][0].bool()).float().mean()
        assert agreement > 0.97  # brightness jitter may move a few boundary pixels


def test_random_rescaling_changes_the_field_of_view(stare: list) -> None:
    augment = AugmentConfig(
        scale_min=0.5,
        scale_max=0.5,
        flips=False,
        rotate90=False,
        channel_scale=0,
        brightness=0,
        contrast=0,
        blur_probability=0,
        noise_probability=0,
        grey_probability=0,
    )
    crops = TrainingCrops(stare, crop=CropConfig(size=32), augment=augment)
    image, mask = crops.crop_arrays(0, 5)
    assert image.shape == (32, 32, 3) and mask.shape == (32, 32)


def test_unlabelled_images_give_empty_masks(stare: list) -> None:
    unlabelled = [type(stare[0])(stare[0].record, stare[0].image, None, None, stare[0].native_size)]
    item = TrainingCrops(unlabelled, crop=CropConfig(size=32), augment=AugmentConfig())[(0, 1)]
    assert item["labelled"] is False and item["mask"].sum() == 0


def test_extract_window_pads_outside_the_image() -> None:
    array = np.arange(12).reshape(3, 4)
    window = extract_window(array, -1, 2, 3, 4)
    np.testing.assert_array_equal(window, [[0, 0, 0, 0], [2, 3, 0, 0], [6, 7, 0, 0]])


def test_bad_crop_config_is_refused() -> None:
    with pytest.raises(ValueError, match="crop size"):
        CropConfig(size=4)
    with pytest.raises(ValueError, match="foreground_probability"):
        CropConfig(foreground_probability=2)
