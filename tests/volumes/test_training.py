"""Volumes as training sets (2.5D slice stacks by volume, 3D patches), pooled training and scoring in mm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.cli import main
from fedseg.data.augment import AugmentConfig
from fedseg.data.crops import CropConfig
from fedseg.data.layout import scan_centre
from fedseg.models import ModelConfig
from fedseg.privacy import PrivacyConfig
from fedseg.training.local import LocalConfig, LocalTrainer
from fedseg.training.mean_teacher import MeanTeacherConfig
from fedseg.volumes.config import VolumeConfig
from fedseg.volumes.loading import load_volume
from fedseg.volumes.patches import VolumePatches
from fedseg.volumes.slices import SliceCrops, slice_stack
from tests.models.test_contract import config_for


def test_slice_stacks_repeat_the_edge_slices() -> None:
    volume = np.arange(4)[None, None, :].repeat(2, axis=0).repeat(2, axis=1)
    assert slice_stack(volume, 0, 3)[0, 0].tolist() == [0, 0, 1]
    assert slice_stack(volume, 3, 5)[0, 0].tolist() == [1, 2, 3, 3, 3]


def test_volumes_load_on_a_resampled_grid_and_crops_index_volumes(spinal_crops: Path) -> None:
    record = scan_centre(spinal_crops, "NWU")[0]  # 0.417 mm in-plane
    native, resampled = load_volume(record), load_volume(record, VolumeConfig(spacing=0.5))
    assert resampled.image.shape == (40, 40, 6) and resampled.spacing[0] == pytest.approx(0.5)
    assert 0.0 <= native.image.min() and native.image.max() == 1.0
    ratio = resampled.mask.sum() / native.mask.sum()
    assert ratio == pytest.approx((0.417 / 0.5) ** 2, rel=0.25)
    crops = SliceCrops(
        [native, load_volume(scan_centre(spinal_crops, "NWU")[1])],
        channels=3,
        crop=CropConfig(size=32, foreground_probability=1.0),
        augment=AugmentConfig.preset("none"),
    )
    assert len(crops) == 2 and crops.labelled.tolist() == [True, False]  # one privacy unit per volume
    item = crops[(0, 11)]
    assert item["image"].shape == (3, 32, 32) and item["index"] == 0 and item["mask"].sum() > 0


def test_3d_patches_oversample_the_foreground(spinal_crops: Path) -> None:
    loaded = load_volume(scan_centre(spinal_crops, "UCL")[0])
    patches = VolumePatches(
        [loaded],
        crop=CropConfig(size=16, foreground_probability=1.0),
        patch_slices=4,
        augment=AugmentConfig.preset("none"),
    )
    items = [patches[(0, seed)] for seed in range(8)]
    assert all(i["image"].shape == (1, 16, 16, 4) and i["mask"].shape == (1, 16, 16, 4) for i in items)
    assert all(i["mask"].sum() > 0 for i in items)  # grey matter is < 1 % of the crop, yet in every patch
    assert abs(float(np.mean([i["image"].mean() for i in items]))) < 3


@pytest.mark.parametrize("name", ["unet3d", "vnet"])
def test_a_dp_mean_teacher_step_on_3d_patches(name: str, spinal_crops: Path) -> None:
    volumes = [load_volume(r) for r in scan_centre(spinal_crops, "Milan")]  # 2 labelled, 2 unlabelled
    patches = VolumePatches(volumes, crop=CropConfig(size=16), patch_slices=4, augment=AugmentConfig.preset("basic"))
    config = LocalConfig(batch_size=2, mean_teacher=MeanTeacherConfig(), privacy=PrivacyConfig(epsilon=8.0))
    model = config_for(name)
    trainer = LocalTrainer(
        model_config=ModelConfig(name=name, in_channels=1, options=dict(model.options)),
        config=config,
        dataset=patches,
        device=torch.device("cpu"),
        seed=0,
        planned_steps=1,
    )
    before = {k: v.clone() for k, v in trainer.weights().items()}
    stats = trainer.run(1)
    assert any(not torch.equal(before[k], v) for k, v in trainer.weights().items())
    assert stats.examples == 4 and 0 < stats.epsilon <= 8.0  # four volumes, four privacy units


@pytest.mark.parametrize("model", ["unet", "unet3d"])
def test_pooled_training_on_volumes_then_evaluation_in_millimetres(
    model: str, spinal_crops: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    extra = ["--model-option", "slice_pool_levels=0"] if model == "unet3d" else ["--volume-spacing", "0.5"]
    args = [
        "train",
        "--data",
        str(spinal_crops),
        "--centres",
        "UCL,NWU",
        "--out",
        str(run),
        "--model",
        model,
        "--model-option",
        "widths=[4,8]",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--crop-size",
        "32",
        "--patch-slices",
        "4",
        "--val-fraction",
        "0",
        "--device",
        "cpu",
        "--workers",
        "0",
        *extra,
    ]
    assert main(args) == 0
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run / "checkpoints" / "last.pt"),
                "--data",
                str(spinal_crops),
                "--centres",
                "Milan",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["mode"] == ("3d" if model == "unet3d" else "2.5d")
    assert metrics["settings"]["distance_unit"] == "mm"
    milan = metrics["centres"]["Milan"]
    assert milan["n_images"] == 2 and milan["unlabelled_skipped"] == 2 and 0 <= milan["dice"] <= 1
    assert "Mean surface distance (mm)" in (out / "report.md").read_text()
    header = (out / "per_image.csv").read_text().splitlines()[0]
    assert "slices" in header and "volume_difference" in header
    assert any(p.name.startswith("Milan_sub-9709") for p in (out / "overlays").iterdir())
