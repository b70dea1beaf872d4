from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedseg.inference.sliding_window import TilingConfig, predict_probabilities, predict_tensor
from fedseg.models.checkpoint import Preprocessing


class ConstantModel(nn.Module):
    """Logit 0.7 everywhere, whatever the input: any seam in the blended map is the tiler's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[-2:]), 0.7)


class PointwiseModel(nn.Module):
    """A 1x1 convolution: its whole-image output is known exactly, tile by tile."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        torch.manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("shape", [(1000, 1000), (1000, 1600), (70, 300)])
def test_constant_model_gives_a_constant_map_across_tile_borders(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    tiling = TilingConfig(tile_size=256, overlap=0.25, batch_size=4)
    probabilities = predict_probabilities(ConstantModel(), image, Preprocessing(), tiling, device=torch.device("cpu"))
    expected = 1 / (1 + np.exp(-0.7))
    assert probabilities.shape == shape
    assert np.abs(probabilities - expected).max() < 1e-5


def test_tiled_pointwise_model_equals_whole_image_inference() -> None:
    model = PointwiseModel().eval()
    inputs = torch.randn(1, 3, 333, 517)
    tiled = predict_tensor(model, inputs, TilingConfig(tile_size=128, overlap=0.5), torch.device("cpu"))
    with torch.no_grad():
        whole = torch.sigmoid(model(inputs))
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_resized_preprocessing_returns_native_size_and_fov_zeroes_outside() -> None:
    image = np.full((90, 130, 3), 100, np.uint8)
    fov = np.zeros((90, 130), bool)
    fov[10:80, 20:110] = True
    probabilities = predict_probabilities(
        ConstantModel(),
        image,
        Preprocessing(resize=64),
        TilingConfig(tile_size=32),
        device=torch.device("cpu"),
        fov=fov,
    )
    assert probabilities.shape == (90, 130)
    assert probabilities[~fov].max() == 0 and probabilities[fov].min() > 0.6
