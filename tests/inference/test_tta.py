from __future__ import annotations

import torch
from torch import nn

from fedseg.inference.sliding_window import TilingConfig, predict_tensor
from fedseg.inference.tta import D4, average_over


def _asymmetric_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).eval()


def _tta(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return average_over(D4, lambda t: predict_tensor(model, t, TilingConfig(tile_size=64), torch.device("cpu")), x)


def test_d4_has_eight_distinct_invertible_transforms() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    images = {tuple(t.apply(x).flatten().tolist()) + tuple(t.apply(x).shape) for t in D4}
    assert len(images) == 8
    assert all(torch.equal(t.invert(t.apply(x)), x) for t in D4)


def test_tta_is_invariant_on_a_symmetric_input() -> None:
    model = _asymmetric_model()
    base = torch.rand(1, 3, 24, 24)
    symmetric = base + base.flip(-1)
    symmetric = symmetric + symmetric.flip(-2)
    symmetric = symmetric + symmetric.transpose(-1, -2)
    out = _tta(model, symmetric)
    for transform in D4:
        assert torch.allclose(transform.apply(out), out, atol=1e-5)
    plain = predict_tensor(model, symmetric, TilingConfig(tile_size=64), torch.device("cpu"))
    assert not torch.allclose(plain.flip(-1), plain, atol=1e-5)  # the model alone is not symmetric


def test_tta_is_equivariant() -> None:
    model = _asymmetric_model()
    x = torch.rand(1, 3, 20, 28)
    reference = _tta(model, x)
    for transform in D4:
        assert torch.allclose(_tta(model, transform.apply(x)), transform.apply(reference), atol=1e-5)
