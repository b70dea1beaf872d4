"""A checkpoint's model with its preprocessing and inference settings: image in, probabilities out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedseg.devices import to_fast_layout
from fedseg.inference.crf import CRFConfig
from fedseg.inference.sliding_window import DEFAULT_OVERLAP, TilingConfig, default_tile_size, predict_probabilities
from fedseg.models.checkpoint import Checkpoint, Preprocessing

DEFAULT_TRAINING_CROP = 128


@dataclass(frozen=True)
class InferenceConfig:
    """How whole images are predicted. ``tile_size`` None means 4 x the checkpoint's training crop."""

    tile_size: int | None = None
    overlap: float = DEFAULT_OVERLAP
    tile_batch: int = 8
    tta: bool = False
    crf: CRFConfig | None = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        TilingConfig(tile_size=self.tile_size or 256, overlap=self.overlap, batch_size=self.tile_batch)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    def tiling(self, meta: Mapping[str, Any]) -> TilingConfig:
        tile = self.tile_size or default_tile_size(int(meta.get("crop_size", DEFAULT_TRAINING_CROP)))
        return TilingConfig(tile_size=tile, overlap=self.overlap, batch_size=self.tile_batch)


class Predictor:
    """Foreground probabilities of whole images at native resolution (TTA optional; CRF is separate)."""

    def __init__(
        self, model: nn.Module, preprocessing: Preprocessing, tiling: TilingConfig, *, tta: bool, device: torch.device
    ) -> None:
        self.model = to_fast_layout(model.to(device), device).eval()
        self.preprocessing, self.tiling, self.tta, self.device = preprocessing, tiling, tta, device

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, config: InferenceConfig, device: torch.device) -> Predictor:
        return cls(
            checkpoint.build(), checkpoint.preprocessing, config.tiling(checkpoint.meta), tta=config.tta, device=device
        )

    def probabilities(self, image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
        return predict_probabilities(
            self.model, image, self.preprocessing, self.tiling, device=self.device, fov=fov, tta=self.tta
        )
