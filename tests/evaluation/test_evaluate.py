from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from fedseg.cli import main
from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint

METRIC_KEYS = {"n_images", "dice", "iou", "sensitivity", "precision", "hd95", "dice_pooled", "counts"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(name="unet", options={"widths": [4, 8]})
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(
        path, model=build_model(config), model_config=config, preprocessing=Preprocessing(), meta={"crop_size": 48}
    )


def test_metrics_json_and_per_image_csv(checkpoint: Path, retina_crops: Path, tmp_path: Path) -> None:
    report = evaluate(
        EvaluateConfig(
            checkpoint=checkpoint, data=retina_crops, centres=("CHASE_DB1", "STARE"), out=tmp_path, device="cpu"
        ),
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report.metrics))
    assert set(metrics["centres"]) == {"CHASE_DB1", "STARE"}
    for centre in metrics["centres"].values():
        assert METRIC_KEYS <= set(centre) and centre["n_images"] == 4
        assert 0.0 <= centre["dice"] <= 1.0
        assert centre["counts"]["tp"] + centre["counts"]["fn"] > 0
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 8 and {r["centre"] for r in rows} == {"CHASE_DB1", "STARE"}
    assert metrics["settings"]["tile_size"] == 4 * 48  # four times the training crop by default


def test_unreadable_images_are_listed_and_fail_the_command(
    checkpoint: Path, retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    shutil.copytree(retina_crops / "STARE", root / "STARE")
    victim = sorted((root / "STARE" / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(root),
            "--centres",
            "STARE",
            "--out",
            str(tmp_path / "eval"),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "1 image(s) could not be read" in out and victim.name in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["centres"]["STARE"]["n_images"] == 3 and metrics["centres"]["STARE"]["unreadable"] == 1
