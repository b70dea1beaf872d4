"""Reading volumes in RAS+ with their geometry, and writing them back with the source's affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedseg.data.errors import DataError
from fedseg.volumes.formats import is_volume_path, volume_stem
from fedseg.volumes.io import header_spacing, read_volume, write_like
from tests.conftest import SPINAL, require_spinal_data

PHILIPS = SPINAL / "Philips" / "images" / "sub-9604.nii.gz"  # stored LPS: two axes flipped to reach RAS+
MILAN = SPINAL / "Milan" / "images" / "sub-9709Ses1.nii.gz"


@pytest.fixture(autouse=True)
def _data() -> None:
    require_spinal_data()


def test_nifti_is_read_in_ras_and_written_back_in_its_own_orientation(tmp_path: Path) -> None:
    volume = read_volume(PHILIPS)
    source = nib.load(PHILIPS)
    assert volume.source_axcodes == "LPS" and nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.spacing == pytest.approx((0.6007, 0.6007, 3.0), abs=1e-3)
    assert header_spacing(PHILIPS) == pytest.approx(volume.spacing)
    # the same voxel lies at the same millimetre position through both affines
    voxel = np.array([10, 20, 5, 1.0])
    canonical = np.array([volume.array.shape[0] - 1 - 10, volume.array.shape[1] - 1 - 20, 5, 1.0])
    assert np.allclose(source.affine @ voxel, volume.affine @ canonical)
    assert volume.array[tuple(canonical[:3].astype(int))] == np.asanyarray(source.dataobj)[10, 20, 5]
    written = nib.load(write_like(tmp_path / "copy.nii.gz", volume.array, volume))
    assert np.array_equal(np.asanyarray(written.dataobj), np.asanyarray(source.dataobj))
    assert np.allclose(written.affine, source.affine)


def _write_dicom_series(folder: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """One CT-like slice file per axial slice, geometry from the RAS affine (DICOM is LPS)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    row_direction, column_direction = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    for z in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{z:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", "anon", "anon"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, z + 1
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ [0, 0, z] + lps[:3, 3]]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row_direction, column_direction])]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = float(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]  # a row runs along the first array axis
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(array[:, :, z].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"{z:03d}.dcm", enforce_file_format=True)


def test_a_dicom_series_written_by_pydicom_reads_back_identical(tmp_path: Path) -> None:
    nifti = read_volume(MILAN)
    source = nib.load(MILAN)
    array = np.asanyarray(source.dataobj)
    _write_dicom_series(tmp_path / "series", array, source.affine)
    assert is_volume_path(tmp_path / "series") and volume_stem(tmp_path / "series") == "series"
    dicom = read_volume(tmp_path / "series")
    assert np.array_equal(dicom.array, nifti.array)
    assert np.allclose(dicom.affine, nifti.affine, atol=1e-3)
    assert dicom.spacing == pytest.approx(nifti.spacing, abs=1e-4)


def test_nrrd_and_metaimage_read_through_simpleitk(tmp_path: Path) -> None:
    import SimpleITK as sitk

    nifti = read_volume(MILAN)
    image = sitk.ReadImage(str(MILAN))
    for suffix in (".nrrd", ".mha"):
        path = tmp_path / f"scan{suffix}"
        sitk.WriteImage(image, str(path))
        volume = read_volume(path)
        assert volume_stem(path) == "scan"
        assert np.array_equal(volume.array, nifti.array) and np.allclose(volume.affine, nifti.affine, atol=1e-4)


def test_unreadable_and_unsupported_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    with pytest.raises(DataError, match="broken.nii.gz: unreadable volume"):
        read_volume(broken)
    with pytest.raises(DataError, match="not a volume"):
        read_volume(tmp_path)
    four_d = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), four_d)
    with pytest.raises(DataError, match="single-channel 3D volumes"):
        read_volume(four_d)
