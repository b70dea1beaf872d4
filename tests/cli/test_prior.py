from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.cli import main
from fedseg.models.checkpoint import load_checkpoint

TINY = ["--model-option", "widths=[4,8]"]


def test_prior_then_train_from_it_and_a_mismatched_model_exits_2_naming_the_file(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prior = tmp_path / "prior"
    code = main(
        ["prior", "--out", str(prior), "--kind", "blobs", "--styles", "2", "--images", "2", "--size", "64"]
        + ["--crop-size", "32", "--steps", "2", "--batch-size", "2", "--seed", "7", "--device", "cpu", *TINY]
    )
    assert code == 0 and "fedseg train --init" in capsys.readouterr().out
    meta = load_checkpoint(prior / "prior.pt").meta["prior"]
    assert meta["kind"] == "blobs" and meta["seed"] == 7 and meta["images"] == 4
    train = ["train", "--data", str(synth_root), "--centres", "centre-01", "--crop-size", "32", "--steps", "1"]
    train += ["--batch-size", "2", "--val-every", "0", "--workers", "0", "--device", "cpu", "--tracking", "none"]
    train += ["--init", str(prior / "prior.pt")]
    assert main([*train, "--out", str(tmp_path / "ok"), *TINY]) == 0
    assert (tmp_path / "ok" / "checkpoints" / "last.pt").is_file()
    capsys.readouterr()
    code = main([*train, "--out", str(tmp_path / "bad"), "--model-option", "widths=[8,16]"])
    err = capsys.readouterr().err
    assert code == 2 and "prior.pt: cannot start from this checkpoint" in err and "option widths" in err
    assert not (tmp_path / "bad").exists()  # refused before the run folder was made
