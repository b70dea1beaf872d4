from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint
from server.strategy import FederatedSegmentation


def _federation(tmp_path: Path, **extra: str) -> FederatedSegmentation:
    config = FederationConfig(
        site_map="A,heldout:B", out=str(tmp_path / "run"), model_options='{"widths": [4, 8]}', **extra
    )
    return FederatedSegmentation(None, config)  # type: ignore[arg-type]  # no round is run: no grid needed


def test_the_first_global_model_is_the_init_checkpoint_and_another_model_is_refused(tmp_path: Path) -> None:
    model = ModelConfig(options={"widths": [4, 8]})
    torch.manual_seed(99)
    prior = save_checkpoint(
        tmp_path / "prior.pt", model=build_model(model), model_config=model, preprocessing=Preprocessing()
    )
    seeded = _federation(tmp_path).initial_weights()
    started = _federation(tmp_path, init_checkpoint=str(prior)).initial_weights()
    expected = torch.load(prior, weights_only=True)["state_dict"]
    assert all(torch.equal(started[k], expected[k]) for k in expected)
    assert not all(torch.equal(started[k], seeded[k]) for k in seeded)
    other = ModelConfig(options={"widths": [8, 16]})
    save_checkpoint(tmp_path / "other.pt", model=build_model(other), model_config=other, preprocessing=Preprocessing())
    with pytest.raises(ConfigError, match=r"'init-checkpoint'.*other\.pt.*option widths"):
        _federation(tmp_path, init_checkpoint=str(tmp_path / "other.pt"))
    with pytest.raises(ConfigError, match="'init-checkpoint' must be a fedseg checkpoint"):
        FederationConfig(init_checkpoint="prior.onnx")
