from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedseg.cli import main
from fedseg.data.layout import list_centres


def test_synth_writes_the_dataset_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["synth", "--out", str(tmp_path), "--centres", "2", "--images", "3", "--size", "64", "--seed", "1"])
    assert code == 0 and list_centres(tmp_path) == ["centre-01", "centre-02"]
    assert len(list((tmp_path / "centre-02" / "masks").iterdir())) == 3
    assert "wrote 2 centres x 3 images" in capsys.readouterr().out


def test_bad_input_gives_exit_code_2_and_a_message_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["train", "--data", str(tmp_path / "nowhere"), "--centres", "A", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "nowhere: dataset folder not found" in capsys.readouterr().err
    (tmp_path / "data" / "A").mkdir(parents=True)
    code = main(["train", "--data", str(tmp_path / "data"), "--centres", "A", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "missing 'images/' folder" in err


def test_model_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "A" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "A" / "images" / "a.png")
    code = main(
        [
            "train",
            "--data",
            str(tmp_path),
            "--centres",
            "A",
            "--out",
            str(tmp_path / "run"),
            "--model-option",
            "depth=3",
        ]
    )
    assert code == 2 and "has no option(s) ['depth']" in capsys.readouterr().err


def test_check_reports_real_centres_and_names_bad_files(
    retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    assert main(["check", "--data", str(retina_crops)]) == 0
    out = capsys.readouterr().out
    assert "CHASE_DB1" in out and "no problems found" in out
    shutil.copytree(retina_crops / "STARE", tmp_path / "STARE")
    victim = sorted((tmp_path / "STARE" / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:64])
    assert main(["check", "--data", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert victim.name in out and "1 error(s)" in out
