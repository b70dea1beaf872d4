"""The shared contract every entry of the model zoo must pass, in 2D (``B,C,H,W``) or 3D (``B,C,X,Y,Z``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from opacus.validators import ModuleValidator

from fedseg.losses import FocalDiceLoss
from fedseg.models import ModelConfig, available_models, build_model, grad_sample_mode
from fedseg.models.checkpoint import Preprocessing, load_checkpoint, save_checkpoint
from fedseg.models.state import model_state
from fedseg.privacy.dp_sgd import make_private

# Small options keep the CPU contract test fast; every architecture is still built for real.
SMALL = {
    "unet": {"widths": [8, 16, 32]},
    "unet3d": {"widths": [4, 8, 16], "slice_pool_levels": 1},
    "vnet": {"widths": [4, 8, 16], "depths": [1, 1, 2]},
    "doubleunet": {"vgg_widths": [8, 16, 16], "vgg_depths": [1, 2, 2], "widths": [8, 16], "aspp_channels": 8},
}
SMP_SMALL = {"encoder_name": "resnet18"}
MODELS = available_models()
# Odd sizes per spatial dimension: the model pads to its multiple and crops back.
SIZES = {2: ((64, 96), (45, 70)), 3: ((16, 24, 8), (13, 22, 7))}


def config_for(name: str) -> ModelConfig:
    return ModelConfig(name=name, options=SMALL.get(name, SMP_SMALL if name.startswith("smp-") else {}))


def inputs(config: ModelConfig, batch: int, size: int | None = None) -> torch.Tensor:
    """A random batch of the model's dimensionality (the first contract size, or ``size`` per axis)."""
    spatial = SIZES[config.spatial_dims][0] if size is None else (size,) * config.spatial_dims
    return torch.randn(batch, config.in_channels, *spatial)


def test_zoo_has_the_required_architectures() -> None:
    assert {"unet", "doubleunet", "smp-unet", "smp-unetplusplus", "smp-deeplabv3plus", "smp-fpn"} <= set(MODELS)
    assert {"unet3d", "vnet"} <= {name for name in MODELS if config_for(name).spatial_dims == 3}


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_on_non_square_sizes(name: str) -> None:
    torch.manual_seed(0)
    config = config_for(name)
    model = build_model(config)
    for size in SIZES[config.spatial_dims]:
        x = torch.randn(2, 3, *size)
        logits = model(x)
        assert logits.shape == (2, 1, *size)
        logits.mean().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        model.zero_grad()


@pytest.mark.parametrize("name", MODELS)
def test_opacus_validator_accepts_model(name: str) -> None:
    assert ModuleValidator.validate(build_model(config_for(name)), strict=False) == []


@pytest.mark.parametrize("name", MODELS)
def test_one_real_dp_sgd_step(name: str) -> None:
    torch.manual_seed(0)
    config = config_for(name)
    plain = build_model(config)
    model, optimizer = make_private(
        plain,
        torch.optim.SGD(plain.parameters(), lr=0.05),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=3,
        grad_sample_mode=grad_sample_mode(config),
    )
    before = {k: v.clone() for k, v in model_state(model).items()}
    x = inputs(config, 3, 64 if config.spatial_dims == 2 else 16)
    y = (torch.rand(3, 1, *x.shape[2:]) > 0.8).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_sample = FocalDiceLoss(reduction="none")(model(x), y)
        per_sample.mean().backward()
    for p in model.parameters():
        if p.requires_grad:
            assert p.grad_sample is not None and p.grad_sample.shape[0] == 3
    optimizer.step()
    after = model_state(model)
    assert set(after) == set(before)  # the _module. prefix is stripped
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_and_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = config_for(name)
    model = build_model(config).eval()
    path = save_checkpoint(
        tmp_path / "m.pt", model=model, model_config=config, preprocessing=Preprocessing(resize=None), meta={"step": 3}
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.model == config and checkpoint.meta["step"] == 3
    restored = checkpoint.build()
    x = inputs(config, 1)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
