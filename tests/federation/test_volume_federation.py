"""A real Flower simulation on MRI volumes: two sites train 2.5D with Mean Teacher on their repeat scans,
a third site never trains and scores the global model per volume, with distances in millimetres."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedseg.files import read_jsonl
from fedseg.models.checkpoint import load_checkpoint
from tests.federation.test_simulation import simulate, tiny_run_config


def test_two_mri_sites_train_and_a_heldout_site_is_scored(spinal_crops: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEDSEG_FLWR_HOME", str(tmp_path / "flwr-home"))
    run = tmp_path / "run"
    config = tiny_run_config(
        spinal_crops,
        run,
        "UCL,NWU,heldout:Milan",
        **{
            "volumes": True,
            "volume-spacing": 0.5,
            "val-fraction": 0.0,
            "mean-teacher": True,
            "num-server-rounds": 1,
        },
    )
    log = simulate(config)
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1], log[-3000:]
    record = rounds[0]
    assert set(record["train"]) == {"UCL", "NWU"} and record["left_out"] == {}
    assert all(m["labelled"] == 1 and m["unlabelled"] == 1 and m["examples"] == 2 for m in record["train"].values())
    milan = record["heldout"]["Milan"]
    assert milan["n_images"] == 2 and 0 <= milan["dice"] <= 1
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert checkpoint.preprocessing.mode == "2.5d" and checkpoint.preprocessing.spacing == pytest.approx(0.5)
