"""The same settings as a federation's run config and as ``fedseg train`` flags give the same configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedseg.cli import build_parser, main
from fedseg.cli.train import config_from_args
from fedseg.federation.config import FederationConfig
from fedseg.training.config import TrainConfig
from fedseg.training.mean_teacher import PerturbationConfig
from fedseg.training.settings import TEACHER

CENTRES = ("A", "B")
# Each row: settings named as run-config keys, which are also the flags' names.
ROWS: list[dict[str, Any]] = [
    {},
    {
        "crop-size": 64,
        "foreground-probability": 0.7,
        "augment": "basic",
        "val-fraction": 0.2,
        "test-fraction": 0.1,
        "label-fraction": 0.25,
        "seed": 3,
        "resize": 128,
        "normalisation": "none",
        "batch-size": 4,
        "lr": 0.01,
        "weight-decay": 0.0,
        "lr-schedule": "cosine",
        "warmup-fraction": 0.2,
        "focal-weight": 0.5,
        "focal-gamma": 1.0,
        "focal-alpha": 0.25,
        "mean-teacher": True,
        "ema-decay": 0.9,
        "consistency-weight": 2.0,
        "consistency-rampup": 50,
        "noise-std": 0.05,
        "flips": False,
        "student-jitter": 0.0,
        "unlabelled-ratio": 0.5,
        "teacher-follows": "blend",
        "round-blend": 0.3,
        "dp-balance": True,
    },
    {
        "channels": 1,
        "volume-spacing": 0.5,
        "patch-slices": 4,
        "dp-epsilon": 8.0,
        "dp-delta": 1e-6,
        "max-grad-norm": 0.5,
        "privacy-unit": "subject",
        "mean-teacher": True,
        "flips": True,
        "lr-schedule": "constant",
    },
    {"perturb-inputs": True, "noise-std": 0.1, "flips": False, "student-jitter": 0.5},
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for centre in CENTRES:
        for folder in ("images", "masks"):
            (root / centre / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / centre / "images" / "a.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / centre / "masks" / "a.png")
    return root


def flags(settings: dict[str, Any]) -> list[str]:
    argv = []
    for key, value in settings.items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no-{key}")
        else:
            argv += [f"--{key}", str(value)]
    return argv


def from_cli(data: Path, settings: dict[str, Any]) -> TrainConfig:
    argv = ["train", "--data", str(data), "--centres", ",".join(CENTRES), "--out", "run", *flags(settings)]
    return config_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "settings", ROWS, ids=["defaults", "data-loss-mean-teacher", "volumes-dp", "perturbed-supervised"]
)
def test_run_config_and_flags_give_equal_configs(data: Path, settings: dict[str, Any]) -> None:
    defaults = {"lr": 3e-3} if "lr" not in settings else {}  # fedseg train's default lr; the federation's is 1e-3
    federation = FederationConfig.from_run_config({**defaults, **settings, "volumes": "volume-spacing" in settings})
    pooled = federation.pooled_config(data, CENTRES, Path("run"))
    cli = from_cli(data, settings)
    assert pooled.data == cli.data == federation.data_config(data, CENTRES)
    assert pooled.local_config == cli.local_config
    volumes = "volume-spacing" in settings
    assert federation.preprocessing == pooled.preprocessing(volumes=volumes) == cli.preprocessing(volumes=volumes)
    # The sites train as the pooled reference does, with their privacy planned over every round.
    site = federation.local_config
    planned = None if site.privacy is None else replace(site.privacy, planned_rounds=1, planned_releases=0)
    assert replace(site, privacy=planned) == cli.local_config
    assert cli.mean_teacher == (federation.teacher if settings.get("mean-teacher") else None)
    if settings.get("perturb-inputs"):  # supervised-only on the Mean Teacher student's inputs
        assert cli.local_config.perturb_inputs == PerturbationConfig(noise_std=0.1, flips=False, jitter=0.5)
    if cli.mean_teacher is not None:
        given = {key: value for key, value in settings.items() if key in TEACHER.keys()}
        assert given.items() <= TEACHER.flatten(cli.mean_teacher).items()


def test_a_bad_flag_value_names_the_flag_and_value(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    for argv, message in [
        (["--mean-teacher", "--noise-std", "loud"], "'noise-std' must be a number, got 'loud'"),
        (["--mean-teacher", "--ema-decay", "1"], "'ema-decay' must be in (0, 1), got 1.0"),
        (["--lr-schedule", "step"], "'lr-schedule' must be one of ('onecycle', 'cosine', 'constant'), got 'step'"),
        (["--focal-weight", "-1"], "'focal-weight' = '-1': loss weights must be >= 0"),
    ]:
        code = main(["train", "--data", str(data), "--centres", "A", "--out", str(tmp_path / "run"), *argv])
        assert code == 2 and message in capsys.readouterr().err
