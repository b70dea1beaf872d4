"""Reading volumes with their geometry, in one canonical orientation, and writing NIfTI.

NIfTI is read with nibabel (its affine: sform, else qform); DICOM series, NRRD and MetaImage
with SimpleITK (GDCM for DICOM), whose LPS geometry is turned into a RAS affine. Every volume
is then reoriented, by axis flips and permutations only (no resampling), to RAS+: axis 0 runs
to the patient's right, axis 1 anterior, axis 2 superior. ``Volume.to_source`` undoes that, so
a prediction is written in the voxel order and with the affine of the file it came from.
"""

from __future__ import annotations

import gzip
import typing
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from fedseg.data.errors import DataError
from fedseg.files import atomic_write_bytes
from fedseg.volumes.formats import NIFTI_SUFFIXES, is_dicom_series, volume_suffix

CANONICAL = ("R", "A", "S")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3D array in RAS+ voxel order with its affine (voxel -> RAS millimetres) and its source geometry."""

    array: np.ndarray
    affine: np.ndarray
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the three (canonical) axes."""
        return spacing_of(self.affine)

    @property
    def source_axcodes(self) -> str:
        return "".join(str(code) for code in nib.aff2axcodes(self.source_affine))

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """A canonical-order array of this volume's shape back in the voxel order of the source file."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        back = orientations.ornt_transform(orientations.axcodes2ornt(CANONICAL), _orientation(self.source_affine))
        return orientations.apply_orientation(array, back)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    x, y, z = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return float(x), float(y), float(z)


def _orientation(affine: np.ndarray) -> np.ndarray:
    return orientations.io_orientation(affine)


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array flipped and permuted to RAS+, and its affine (the same points in space)."""
    transform = orientations.ornt_transform(_orientation(affine), orientations.axcodes2ornt(CANONICAL))
    canonical = orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(canonical), affine @ orientations.inv_ornt_aff(transform, array.shape)


def _squeeze_3d(array: np.ndarray, path: Path) -> np.ndarray:
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataError(
            f"{path}: a {array.ndim}-D image of shape {array.shape}; fedseg reads single-channel 3D volumes. "
            "Split 4-D series (time, channels) into one file per volume."
        )
    return array


def _inflated(path: Path, data: bytes) -> bytes:
    """The whole stream inflated at once, which checks gzip's CRC-32 and length at its end: nibabel
    stops reading after the voxels it needs and never checks them, so damaged voxels would read silently."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: damaged compressed data ({type(error).__name__}: {error}); the file was cut or changed. "
            "Copy it again from its source, or re-export it."
        ) from None


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    if compressed:  # inflated once, here, and read from memory
        raw = _inflated(path, path.read_bytes())
        kind = nib.Nifti2Image if int.from_bytes(raw[:4], "little") == 540 else nib.Nifti1Image
        image = kind.from_bytes(raw)
    else:
        image = typing.cast(nib.Nifti1Image, nib.load(path))
    return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)


def _read_sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if len(series) != 1:
            raise DataError(
                f"{path}: {len(series)} DICOM series in one folder ({', '.join(series) or 'none readable'}). "
                "Put each series in its own folder."
            )
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() not in (2, 3):
        raise DataError(f"{path}: {image.GetDimension()}-D image with vector pixels; fedseg reads scalar 3D volumes.")
    array = sitk.GetArrayFromImage(image).T  # ITK arrays are (z, y, x)
    dims = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dims, dims)
    lps = np.eye(4)
    lps[:dims, :dims] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    lps[:dims, 3] = image.GetOrigin()
    return array, _LPS_TO_RAS @ lps


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file, or a DICOM series folder, reoriented to RAS+."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if not (volume_suffix(path) or is_dicom_series(path)):
        raise DataError(f"{path}: not a volume (NIfTI, NRRD, MetaImage file or a folder holding one DICOM series).")
    try:
        array, affine = _read_nifti(path) if volume_suffix(path) in NIFTI_SUFFIXES else _read_sitk(path)
    except DataError:
        raise
    except Exception as error:  # nibabel and ITK raise many types for damaged files
        raise DataError(
            f"{path}: unreadable volume ({type(error).__name__}: {str(error)[:200]}). Re-export it as NIfTI."
        ) from None
    array = _squeeze_3d(array, path)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: its affine (voxel to millimetre geometry) is missing or degenerate. Fix the header.")
    canonical, canonical_affine = to_canonical(array, affine)
    return Volume(canonical, canonical_affine, affine, tuple(int(n) for n in array.shape), path)  # type: ignore[arg-type]


def header_spacing(path: str | Path) -> tuple[float, float, float]:
    """Voxel spacing (mm, canonical axis order) read from the header alone where the format allows."""
    path = Path(path)
    if volume_suffix(path) in NIFTI_SUFFIXES:
        try:
            affine = np.asarray(typing.cast(nib.Nifti1Image, nib.load(path)).affine, dtype=np.float64)
        except Exception as error:  # nibabel raises many types for damaged headers
            raise DataError(f"{path}: unreadable NIfTI header ({type(error).__name__}: {str(error)[:200]}).") from None
        order = np.argsort(_orientation(affine)[:, 0])  # source axis of each canonical axis
        source = spacing_of(affine)
        return tuple(float(source[i]) for i in order)  # type: ignore[return-value]
    return read_volume(path).spacing


def nifti_bytes(array: np.ndarray, affine: np.ndarray, *, compressed: bool = True, description: str = "") -> bytes:
    """A NIfTI-1 file of ``array`` with ``affine`` as both sform and qform (scanner coordinates);
    ``description`` goes into the header's ``descrip`` field (80 characters at most)."""
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.header["descrip"] = description.encode()[:80]
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    data = image.to_bytes()
    return gzip.compress(data, compresslevel=6, mtime=0) if compressed else data


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, *, description: str = "") -> Path:
    """Write ``array`` (in the voxel order ``affine`` describes) atomically; ``.nii.gz`` is compressed."""
    path = Path(path)
    data = nifti_bytes(array, affine, compressed=path.name.endswith(".gz"), description=description)
    return atomic_write_bytes(path, data)


def nifti_description(path: str | Path) -> str:
    """The header's ``descrip`` field ("" for anything that is not a readable NIfTI file)."""
    try:
        value = typing.cast(nib.Nifti1Image, nib.load(path)).header["descrip"]
        return bytes(np.asarray(value).item()).rstrip(b"\0").decode("utf-8", "replace")
    except Exception:  # anything unreadable has no description
        return ""


def write_like(path: str | Path, canonical: np.ndarray, volume: Volume, *, description: str = "") -> Path:
    """Write a canonical-order array (a prediction) in the voxel order and with the affine of ``volume``'s file."""
    return write_nifti(path, volume.to_source(canonical), volume.source_affine, description=description)
