from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
from fedseg.inference.crf import CRFConfig
from fedseg.inference.predictor import InferenceConfig
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(name="unet", options={"widths": [4, 8], "foreground_prior": 0.5})
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(
        path, model=build_model(config), model_config=config, preprocessing=Preprocessing(), meta={"crop_size": 48}
    )


def test_tta_and_crf_report_files_exist_and_parse(checkpoint: Path, retina_crops: Path, tmp_path: Path) -> None:
    inference = InferenceConfig(tta=True, crf=CRFConfig(iterations=2))
    evaluate(
        EvaluateConfig(
            checkpoint=checkpoint,
            data=retina_crops,
            centres=("CHASE_DB1", "AV-WIDE"),
            out=tmp_path,
            inference=inference,
            device="cpu",
        ),
        progress=False,
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for entry in metrics["centres"].values():
        low, high = entry["dice_ci95"]
        assert low <= entry["dice"] <= high
        assert set(entry["without_crf"]) >= {"dice", "dice_ci95", "iou"}
    assert metrics["settings"]["tta"] is True and metrics["settings"]["crf"]["iterations"] == 2
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert len(rows) == 8 and all(0 <= float(r["dice_without_crf"]) <= 1 for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert "| CHASE_DB1 | 4 |" in report and "Dice without CRF" in report
    overlays = sorted((tmp_path / "overlays").iterdir())
    assert len(overlays) == 6 and {p.name.split("_")[0] for p in overlays} == {"CHASE", "AV-WIDE"}
    for path in overlays + [tmp_path / "dice_by_centre.png"]:
        assert f"({path.name})" in report or f"overlays/{path.name}" in report
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > picture.height
