"""Volume checkpoints predict NIfTI masks on each input's own grid, with its affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fedseg.cli import main
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from tests.conftest import SPINAL, require_spinal_data


def volume_checkpoint(path: Path, *, mode: str, spacing: float | None) -> Path:
    torch.manual_seed(0)
    three_d = mode == "3d"
    config = ModelConfig(
        name="unet3d" if three_d else "unet", in_channels=1 if three_d else 3, options={"widths": [4, 8]}
    )
    preprocessing = Preprocessing(channels=config.in_channels, normalisation="none", mode=mode, spacing=spacing)
    meta = {"crop_size": 64, "patch_slices": 4}
    return save_checkpoint(path, model=build_model(config), model_config=config, preprocessing=preprocessing, meta=meta)


@pytest.mark.parametrize(("mode", "spacing"), [("2.5d", 0.5), ("3d", None)])
def test_predicted_nifti_keeps_the_input_affine_and_spacing(mode: str, spacing: float | None, tmp_path: Path) -> None:
    require_spinal_data()
    scan = tmp_path / "sub-9604.nii.gz"  # a corner of the real scan: LPS on disk, 0.6 mm in-plane, 3 mm slices
    nib.save(nib.load(SPINAL / "Philips" / "images" / "sub-9604.nii.gz").slicer[100:164, 60:124, 4:10], scan)
    source = nib.load(scan)
    checkpoint = volume_checkpoint(tmp_path / "model.pt", mode=mode, spacing=spacing)
    out = tmp_path / "predictions"
    code = main(["predict", "--checkpoint", str(checkpoint), "--images", str(scan), "--out", str(out)])
    assert code == 0, "prediction failed"
    mask = nib.load(out / "sub-9604.nii.gz")
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert mask.header.get_zooms() == pytest.approx(source.header.get_zooms())
    assert nib.aff2axcodes(mask.affine) == ("L", "P", "S")
    assert set(np.unique(np.asanyarray(mask.dataobj)).tolist()) <= {0, 1}


def test_predict_writes_probabilities_for_every_volume_of_a_folder(spinal_crops: Path, tmp_path: Path) -> None:
    checkpoint = volume_checkpoint(tmp_path / "model.pt", mode="2.5d", spacing=None)
    out = tmp_path / "out"
    images = spinal_crops / "UCL" / "images"
    assert (
        main(
            ["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), "--probabilities"]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["sub-9418.nii.gz", "sub-9418_prob.nii.gz", "sub-9418_run-2.nii.gz", "sub-9418_run-2_prob.nii.gz"]
    probabilities = np.asanyarray(nib.load(out / "sub-9418_prob.nii.gz").dataobj)
    assert probabilities.dtype == np.float32 and 0 <= probabilities.min() <= probabilities.max() <= 1
