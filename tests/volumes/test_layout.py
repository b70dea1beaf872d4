"""Volumes in fedseg's centre folders and in nnU-Net's raw layout with a centre map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedseg.data.config import DataConfig
from fedseg.data.errors import DataError
from fedseg.data.layout import list_centres, scan_centre, scan_dataset
from fedseg.training.data import training_set
from fedseg.volumes.slices import SliceCrops
from tests.conftest import SPINAL, SPINAL_CENTRES, require_spinal_data


def test_centre_folders_of_volumes_pair_masks_and_leave_repeat_scans_unlabelled() -> None:
    require_spinal_data()
    records = scan_dataset(SPINAL)
    assert tuple(records) == SPINAL_CENTRES
    milan = {r.stem: r for r in records["Milan"]}
    assert set(milan) == {"sub-9709Ses1", "sub-9709Ses1_run-2", "sub-9709Ses2", "sub-9709Ses2_run-2"}
    assert milan["sub-9709Ses1"].mask == SPINAL / "Milan" / "masks" / "sub-9709Ses1.nii.gz"
    assert not milan["sub-9709Ses1_run-2"].labelled
    assert sum(r.labelled for rs in records.values() for r in rs) == 8


def nnunet_copy(root: Path, source: Path, centres: tuple[str, ...]) -> Path:
    """Copy centres of a fedseg volume dataset into nnU-Net's raw layout (cases named by centre order)."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    lines = ["case,centre"]
    for centre in centres:
        for number, image in enumerate(sorted((source / centre / "images").glob("*.nii.gz"))):
            case = f"{centre.lower()}_{number:03d}"
            shutil.copy(image, root / "imagesTr" / f"{case}_0000.nii.gz")
            mask = source / centre / "masks" / image.name
            if mask.exists():
                shutil.copy(mask, root / "labelsTr" / f"{case}.nii.gz")
            lines.append(f"{case},{centre}")
    description = {"channel_names": {"0": "T2star"}, "labels": {"background": 0, "grey matter": 1}}
    (root / "dataset.json").write_text(json.dumps({**description, "numTraining": 0, "file_ending": ".nii.gz"}))
    (root / "centres.csv").write_text("\n".join(lines) + "\n")
    return root


def test_an_nnunet_layout_copy_of_two_sites_loads(spinal_crops: Path, tmp_path: Path) -> None:
    root = nnunet_copy(tmp_path / "Dataset501_SpinalGM", spinal_crops, ("NWU", "UCL"))
    assert list_centres(root) == ["NWU", "UCL"]
    records = scan_dataset(root)
    assert [(r.stem, r.labelled) for r in records["UCL"]] == [("ucl_000", True), ("ucl_001", False)]
    assert records["NWU"][0].image.name == "nwu_000_0000.nii.gz"
    crops = training_set(scan_centre(root, "UCL"), DataConfig(root=root, centres=("UCL",)), progress=False)
    assert isinstance(crops, SliceCrops) and len(crops) == 2 and crops.labelled.tolist() == [True, False]
    item = crops[(0, 7)]
    assert item["image"].shape == (3, 256, 256) and item["labelled"]


def test_nnunet_layout_errors_name_the_file_and_the_fix(spinal_crops: Path, tmp_path: Path) -> None:
    root = nnunet_copy(tmp_path / "ds", spinal_crops, ("NWU",))
    (root / "centres.csv").write_text("case,centre\n")
    with pytest.raises(DataError, match=r"centres.csv: no centre for case\(s\) \['nwu_000'"):
        scan_dataset(root)
    (root / "centres.csv").unlink()
    with pytest.raises(DataError, match="centres.csv: missing"):
        list_centres(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}}))
    with pytest.raises(DataError, match="2 input channels"):
        list_centres(root)
