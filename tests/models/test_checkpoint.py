from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedseg.integrity import DIGEST_KEY, sealed
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import CheckpointError, Preprocessing, load_checkpoint, save_checkpoint

SMALL = ModelConfig(name="unet", options={"widths": [4, 8]})


def resealed(payload: dict) -> dict:
    """A payload edited on purpose, with a checksum that fits again."""
    return sealed({k: v for k, v in payload.items() if k != DIGEST_KEY})


def _save(path: Path) -> Path:
    return save_checkpoint(path, model=build_model(SMALL), model_config=SMALL, preprocessing=Preprocessing())


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="x.pt: not a readable fedseg checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a fedseg checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_other_fedseg_version_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["fedseg_version"] = "9.3.0"
    torch.save(resealed(payload), path)
    with pytest.raises(CheckpointError, match=r"written by fedseg 9\.3\.0.*Use fedseg 9\.3\.x"):
        load_checkpoint(path)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["model"]["options"]["widths"] = [4, 8, 16]
    torch.save(resealed(payload), path)
    with pytest.raises(CheckpointError, match="do not fit model 'unet'"):
        load_checkpoint(path).build()


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind
    assert load_checkpoint(path).preprocessing == Preprocessing()


def test_a_flipped_byte_in_the_weights_is_refused_and_named(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"][next(iter(payload["state_dict"]))].view(-1)[0] += 1.0  # what a flipped bit does
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="m.pt: damaged: its content no longer matches its checksum"):
        load_checkpoint(path)


def test_weights_that_are_not_finite_are_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"][next(iter(payload["state_dict"]))].view(-1)[0] = float("nan")
    torch.save(resealed(payload), path)
    with pytest.raises(CheckpointError, match="NaN or infinite values.*Use an earlier checkpoint"):
        load_checkpoint(path)
