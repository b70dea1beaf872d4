"""Multi-centre data: layout, reading, splits, crops, augmentation, and the synthetic generator."""

from fedseg.data.augment import AugmentConfig
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig, TrainingCrops
from fedseg.data.errors import DataError
from fedseg.data.layout import ImageRecord, list_centres, scan_centre, scan_dataset
from fedseg.data.loading import LoadedImage, load_record
from fedseg.data.splits import Manifest, SplitConfig, load_manifest, make_manifest

__all__ = [
    "AugmentConfig",
    "BatchKeys",
    "CropConfig",
    "DataConfig",
    "DataError",
    "ImageRecord",
    "LoadedImage",
    "Manifest",
    "SplitConfig",
    "TrainingCrops",
    "list_centres",
    "load_manifest",
    "load_record",
    "make_manifest",
    "scan_centre",
    "scan_dataset",
]
