"""``fedseg check`` on volumes: geometry per volume, problems with file and fix, the suggested mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.cli import main
from fedseg.volumes.check import check_volumes


def _edit_mask(path: Path, change) -> None:
    image = nib.load(path)
    data, affine = change(np.asanyarray(image.dataobj).copy(), image.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def test_check_reports_geometry_and_suggests_2_5d_for_thick_slices(spinal_crops: Path, capsys) -> None:
    reports, plan = check_volumes(spinal_crops, progress=False)
    assert len(reports) == 8 and sum(r.labelled for r in reports) == 4
    nwu = next(r for r in reports if r.stem == "sub-9584")
    assert nwu.shape == (48, 48, 6) and nwu.orientation == "LAS" and nwu.spacing[2] == pytest.approx(3.0)
    assert 0 < nwu.foreground < 0.1 and nwu.intensity[1] > nwu.intensity[0]
    assert plan is not None and plan.mode == "2.5d" and plan.model == "unet"
    assert main(["check", "--data", str(spinal_crops)]) == 0
    out = capsys.readouterr().out
    assert "suggested training: 2.5D" in out and "no problems found" in out


def test_check_names_each_bad_mask_and_the_fix(spinal_crops: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(spinal_crops, data)
    masks = data / "Milan" / "masks"
    _edit_mask(masks / "sub-9709Ses1.nii.gz", lambda d, a: (d[:40], a))  # another shape
    _edit_mask(masks / "sub-9709Ses2.nii.gz", lambda d, a: (d, a + np.pad(np.eye(3, 4, 3) * 4.0, ((0, 1), (0, 0)))))
    _edit_mask(data / "NWU" / "masks" / "sub-9584.nii.gz", lambda d, a: (d * 2 + (d > 0), a))  # labels 0 and 3
    _edit_mask(data / "UCL" / "masks" / "sub-9418.nii.gz", lambda d, a: (np.zeros_like(d), a))
    assert main(["check", "--data", str(data)]) == 1
    out = capsys.readouterr().out
    assert "Milan/masks/sub-9709Ses1.nii.gz: mask has shape (40, 48, 6) but its image" in out
    assert "Milan/masks/sub-9709Ses2.nii.gz: mask's affine differs from its image's by up to 4 mm" in out
    assert "Resample the mask onto the image" in out
    assert "NWU/masks/sub-9584.nii.gz: non-binary labels (0, 3)" in out
    assert "UCL/masks/sub-9418.nii.gz: the mask is empty" in out
    assert "2 error(s), 2 warning(s)" in out
