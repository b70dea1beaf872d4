from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.federation.run_outputs import RunFolder
from fedseg.models import build_model
from fedseg.models.state import model_state


def _config(out: Path, **changes: object) -> FederationConfig:
    base = FederationConfig(site_map="A,heldout:B", out=str(out), model_options='{"widths": [4, 8]}')
    return replace(base, **changes)


def _weights(config: FederationConfig) -> OrderedDict[str, torch.Tensor]:
    return model_state(build_model(config.model_config))


def test_resume_drops_rounds_without_a_resume_point(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = RunFolder(tmp_path, config)
    assert folder.start() is None
    best = None
    for rnd in (1, 2):
        folder.record_round({"round": rnd, "train": {}}, [{"site": "A", "round": rnd, "epsilon": rnd}])
        best = folder.save_models(rnd, _weights(config), validation_dice=0.1 * rnd, best_validation_dice=best)
    folder.record_round({"round": 3, "train": {}}, [{"site": "A", "round": 3, "epsilon": 3}])  # crash before saving
    point = RunFolder(tmp_path, replace(config, num_server_rounds=9)).start()
    assert point is not None and point.round == 2 and point.best_validation_dice == pytest.approx(0.2)
    assert [r["round"] for r in folder.rounds_done()] == [1, 2]
    assert (tmp_path / "checkpoints" / "best.pt").exists() and (tmp_path / "checkpoints" / "last.pt").exists()


def test_resume_refuses_changed_settings_or_resume_off(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = RunFolder(tmp_path, config)
    folder.start()
    folder.save_models(1, _weights(config), validation_dice=None, best_validation_dice=None)
    lr = config.optim.lr
    with pytest.raises(ConfigError, match=rf"run config changed \(lr: {lr} -> 0.5\); run it with the settings of its"):
        RunFolder(tmp_path, replace(config, optim=replace(config.optim, lr=0.5))).start()
    with pytest.raises(ConfigError, match="resume = true"):
        RunFolder(tmp_path, replace(config, resume=False)).start()
