"""Whole-volume inference: 2.5D slice stacks through the 2D sliding window, or 3D sliding windows (MONAI).

Probabilities come back on the volume's own grid (RAS+ voxel order): a volume resampled in-plane
for the model is resampled back before anything is thresholded or scored.
"""

from __future__ import annotations

import typing

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from fedseg.devices import autocast
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.inference.sliding_window import TilingConfig, predict_tensor, prepare, tile_size_for
from fedseg.inference.tta import average_over, tta_transforms
from fedseg.models.checkpoint import Checkpoint, Preprocessing
from fedseg.volumes.loading import LoadedVolume, in_plane_shape, resample_in_plane
from fedseg.volumes.patches import standardise_volume
from fedseg.volumes.slices import slice_stack, to_uint8

DEFAULT_PATCH_SLICES = 8


class VolumePredictor:
    """Foreground probabilities of whole volumes (float32 ``X x Y x Z``) on each volume's own grid."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        tiling: TilingConfig,
        *,
        tta: bool,
        device: torch.device,
        patch_slices: int = DEFAULT_PATCH_SLICES,
    ) -> None:
        if not preprocessing.volumes:
            raise ValueError("VolumePredictor needs a volume preprocessing (mode 2.5d or 3d)")
        self.model = model.to(device).eval()
        self.preprocessing, self.tiling, self.tta, self.device = preprocessing, tiling, tta, device
        self.patch_slices = patch_slices
        self.volume_config = preprocessing.volume_config(patch_slices)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, config: InferenceConfig, device: torch.device) -> VolumePredictor:
        slices = int(checkpoint.meta.get("patch_slices", DEFAULT_PATCH_SLICES))
        tiling = config.tiling(checkpoint.meta)
        return cls(
            checkpoint.build(), checkpoint.preprocessing, tiling, tta=config.tta, device=device, patch_slices=slices
        )

    def probabilities(self, loaded: LoadedVolume) -> np.ndarray:
        """Probabilities of a volume loaded on its own grid (``load_volume`` without a spacing)."""
        native = loaded.image.shape[:2]
        shape = in_plane_shape(loaded.image.shape, loaded.spacing, self.preprocessing.spacing)
        image = resample_in_plane(loaded.image, shape)
        predict = self._slices if self.preprocessing.mode == "2.5d" else self._volume
        probabilities = resample_in_plane(predict(image), native)
        if loaded.fov is not None:
            probabilities = np.where(loaded.fov, probabilities, 0.0)
        return probabilities.astype(np.float32)

    @torch.no_grad()
    def _slices(self, image: np.ndarray) -> np.ndarray:
        pixels = to_uint8(image)
        channels = self.preprocessing.channels
        inputs = torch.cat(
            [prepare(slice_stack(pixels, z, channels), self.preprocessing) for z in range(pixels.shape[2])]
        )
        predicted = average_over(
            tta_transforms(self.tta), lambda x: predict_tensor(self.model, x, self.tiling, self.device), inputs
        )
        return predicted[:, 0].numpy().transpose(1, 2, 0)

    @torch.no_grad()
    def _volume(self, image: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(standardise_volume(image))[None, None]
        tile = tile_size_for(self.model, self.tiling.tile_size)
        depth = tile_size_for(self.model, self.patch_slices)
        roi = (min(tile, image.shape[0]), min(tile, image.shape[1]), min(depth, image.shape[2]))

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            with autocast(self.device):
                return torch.sigmoid(self.model(batch).float())

        probabilities = sliding_window_inference(
            inputs,
            roi_size=roi,
            sw_batch_size=self.tiling.batch_size,
            predictor=predictor,
            overlap=self.tiling.overlap,
            mode="gaussian",
            sw_device=self.device,
            device=torch.device("cpu"),
        )
        return typing.cast(torch.Tensor, probabilities).float()[0, 0].numpy()


def make_predictor(
    model: nn.Module,
    preprocessing: Preprocessing,
    tiling: TilingConfig,
    *,
    tta: bool,
    device: torch.device,
    patch_slices: int = DEFAULT_PATCH_SLICES,
) -> Predictor | VolumePredictor:
    """The predictor for a preprocessing: 2D images, or volumes (2.5D or 3D)."""
    if preprocessing.volumes:
        return VolumePredictor(model, preprocessing, tiling, tta=tta, device=device, patch_slices=patch_slices)
    return Predictor(model, preprocessing, tiling, tta=tta, device=device)


def predictor_from_checkpoint(
    checkpoint: Checkpoint, config: InferenceConfig, device: torch.device
) -> Predictor | VolumePredictor:
    if checkpoint.preprocessing.volumes:
        return VolumePredictor.from_checkpoint(checkpoint, config, device)
    return Predictor.from_checkpoint(checkpoint, config, device)
