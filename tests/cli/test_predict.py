from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedseg.cli import main
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(name="unet", options={"widths": [4, 8], "foreground_prior": 0.5})
    return save_checkpoint(
        tmp_path_factory.mktemp("c") / "m.pt",
        model=build_model(config),
        model_config=config,
        preprocessing=Preprocessing(),
        meta={"crop_size": 48},
    )


def test_predict_writes_one_binary_mask_per_image_with_the_same_stem(
    checkpoint: Path, retina_crops: Path, tmp_path: Path
) -> None:
    images = retina_crops / "CHASE_DB1" / "images"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--images",
            str(images),
            "--out",
            str(tmp_path),
            "--probabilities",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    stems = sorted(p.stem for p in images.iterdir())
    assert sorted(p.stem for p in tmp_path.glob("*.png") if not p.stem.endswith("_prob")) == stems
    mask = np.asarray(Image.open(tmp_path / f"{stems[0]}.png"))
    probability = np.asarray(Image.open(tmp_path / f"{stems[0]}_prob.png"))
    assert mask.shape == (160, 160) and set(np.unique(mask)) <= {0, 255}
    clear = np.abs(probability.astype(int) - 127.5) > 2  # 8-bit rounding blurs the threshold itself
    np.testing.assert_array_equal((mask == 255)[clear], (probability > 127)[clear])


def test_unreadable_images_are_listed_and_exit_non_zero(
    checkpoint: Path, retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "in"
    shutil.copytree(retina_crops / "STARE" / "images", images)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoint),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "broken.png" in out and "wrote 4 mask(s)" in out
