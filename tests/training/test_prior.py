from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.splits import SplitConfig
from fedseg.data.synth import SynthConfig, synth_image
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import CheckpointError, Preprocessing, load_checkpoint, save_checkpoint
from fedseg.models.state import model_state
from fedseg.training.config import TrainConfig
from fedseg.training.initial import initial_weights
from fedseg.training.pooled import PooledTrainer
from fedseg.training.prior import PriorConfig, build_prior
from tests.conftest import SHARED_DATA

TINY = ModelConfig(name="unet", options={"widths": [4, 8]})


def tiny_prior(out: Path, **overrides: object) -> PriorConfig:
    values: dict = dict(out=out, model=TINY, styles=2, images=2, size=64, crop_size=32, steps=2, batch_size=2)
    values.update(overrides)
    return PriorConfig(device="cpu", **values)


def test_the_prior_is_built_only_from_generated_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = SHARED_DATA.resolve()
    opened: list[str] = []
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(file, (str, Path)):
            opened.append(str(file))
            if Path(file).resolve().is_relative_to(real):
                raise PermissionError(f"the prior read real data: {file}")
        return real_open(file, *args, **kwargs)

    monkeypatch.setenv("FEDSEG_SHARED_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(builtins, "open", guarded_open)
    path = build_prior(tiny_prior(tmp_path / "prior", kind="vessels", seed=5), progress=False)

    assert any(name.endswith(".png") for name in opened)  # it did read images: the generated ones
    checkpoint = load_checkpoint(path)
    prior = checkpoint.meta["prior"]
    assert prior["generator"] == "fedseg.data.synth" and prior["seed"] == 5 and prior["kind"] == "vessels"
    assert prior["images"] == 4 and prior["style"] == "varied"
    assert str(real) not in json.dumps(checkpoint.meta) and "data_root" not in checkpoint.meta
    assert checkpoint.model == TINY and checkpoint.meta["step"] == 2
    assert not (tmp_path / "prior" / "data").exists()  # the generated images are not kept by default
    with pytest.raises(ValueError, match="3D model"):
        tiny_prior(tmp_path, model=ModelConfig(name="unet3d"))


def test_varied_styles_differ_and_kinds_draw_only_their_structures() -> None:
    vessels = SynthConfig(out=Path("x"), centres=6, kind="vessels", style="varied")
    looks = [vessels.appearance(i) for i in range(6)]
    assert len({a.background_rgb for a in looks}) == 6 and np.ptp([a.vessel_width for a in looks]) > 0.3
    assert all(a.blobs == (0, 0) and a.vessels for a in looks)
    blobs = SynthConfig(out=Path("x"), centres=6, kind="blobs", style="varied").appearance(0)
    image, mask, _ = synth_image(96, np.random.default_rng(0), blobs)
    assert not blobs.vessels and mask.any()
    assert SynthConfig(out=Path("x")).appearance(0) == SynthConfig(out=Path("x"), kind="both").appearance(0)


def _checkpoint(path: Path, model: ModelConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, model=build_model(model), model_config=model, preprocessing=Preprocessing())


def test_training_with_init_starts_from_the_checkpoint(synth_root: Path, tmp_path: Path) -> None:
    start = _checkpoint(tmp_path / "start.pt", TINY, seed=123)
    config = TrainConfig(
        data=DataConfig(
            root=synth_root, centres=("centre-01",), crop=CropConfig(size=32), split=SplitConfig(val_fraction=0.0)
        ),
        out=tmp_path / "run",
        model=TINY,
        steps=1,
        batch_size=2,
        workers=0,
        val_every=0,
        device="cpu",
        init_checkpoint=start,
    )
    trainer = PooledTrainer(config, progress=False, tracking="none")
    expected = load_checkpoint(start).state_dict
    first = model_state(trainer.trainer.student)
    assert all(torch.equal(first[key], expected[key]) for key in expected)
    trainer.run()
    after = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").state_dict
    moved = sum(float((after[k].float() - expected[k].float()).abs().sum()) for k in expected)
    assert 0 < moved < sum(float(v.float().abs().sum()) for v in expected.values()) * 0.1


def test_a_checkpoint_of_another_model_is_refused_naming_the_file_and_the_difference(tmp_path: Path) -> None:
    other = _checkpoint(tmp_path / "other.pt", ModelConfig(name="unet", options={"widths": [8, 16]}), seed=0)
    with pytest.raises(CheckpointError, match=r"other\.pt.*option widths: file \[8, 16\], run \[4, 8\]"):
        initial_weights(other, TINY)
    grey = ModelConfig(name="unet", in_channels=1, options={"widths": [4, 8]})
    with pytest.raises(CheckpointError, match=r"other\.pt.*in_channels: file 3, run 1"):
        initial_weights(_checkpoint(other, TINY, seed=0), grey)
    with pytest.raises(ValueError, match="init_checkpoint must be a fedseg checkpoint"):
        TrainConfig(data=DataConfig(root=tmp_path, centres=("a",)), out=tmp_path / "r", init_checkpoint=tmp_path)
