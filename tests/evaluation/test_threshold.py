from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedseg.data.layout import scan_dataset
from fedseg.data.splits import SplitConfig, make_manifest
from fedseg.evaluation.threshold import pick_threshold, validation_records
from fedseg.models.checkpoint import Preprocessing


class TruthEcho:
    """A stand-in predictor that says 0.28 on the foreground and 0.1 elsewhere: too shy for 0.5."""

    preprocessing = Preprocessing()

    def __init__(self, root: Path) -> None:
        from fedseg.data.reading import read_image, read_mask

        self.truth = {
            read_image(p).tobytes(): read_mask(next((p.parent.parent / "masks").glob(p.stem + ".*")))
            for p in root.glob("*/images/*")
        }

    def probabilities(self, image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
        return np.where(self.truth[image.tobytes()], 0.28, 0.1).astype(np.float32)


def test_threshold_is_chosen_on_validation_images_of_training_centres_only(retina_crops: Path, tmp_path: Path) -> None:
    training = scan_dataset(retina_crops, ["STARE", "AV-WIDE"])
    make_manifest(training, SplitConfig(val_fraction=0.5)).save(tmp_path / "manifest.json")
    records = validation_records(tmp_path / "manifest.json", retina_crops)
    assert {r.centre for r in records} == {"STARE", "AV-WIDE"} and len(records) == 4
    choice = pick_threshold(TruthEcho(retina_crops), records, progress=False)
    assert choice.threshold == 0.25  # every threshold in (0.1, 0.28) is perfect: the one nearest 0.5 wins
    assert choice.mean_dice[choice.threshold] == pytest.approx(1.0)
    assert choice.mean_dice[0.5] == pytest.approx(0.0)


def test_manifest_without_validation_images_is_refused(retina_crops: Path, tmp_path: Path) -> None:
    make_manifest(scan_dataset(retina_crops, ["STARE"]), SplitConfig(val_fraction=0.0)).save(tmp_path / "m.json")
    with pytest.raises(ValueError, match="no labelled validation images"):
        validation_records(tmp_path / "m.json", retina_crops)
