"""Helpers for the bad-input, damaged-file and signal tests: small datasets and file fingerprints."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import Preprocessing, save_checkpoint

CENTRE = "centre-01"


def fingerprints(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots``: equal before and after means nothing was changed or added."""
    found: dict[str, str] = {}
    for root in roots:
        files: Iterable[Path] = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return found


@pytest.fixture()
def dataset(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy of one synthetic centre (six 96 x 96 images with masks) that a test may damage."""
    root = tmp_path / "data"
    shutil.copytree(synth_root / CENTRE, root / CENTRE)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(name="unet", options={"widths": [4, 8], "foreground_prior": 0.5})
    return save_checkpoint(
        tmp_path_factory.mktemp("checkpoint") / "model.pt",
        model=build_model(config),
        model_config=config,
        preprocessing=Preprocessing(),
        meta={"crop_size": 32},
    )


def train_args(data: Path, out: Path, *extra: str, **options: str) -> list[str]:
    """``fedseg train`` on the test centre with a tiny model, two steps, everything on the CPU;
    ``options`` replace those defaults (``steps="5"`` for ``--steps 5``)."""
    args = [
        "train",
        "--data",
        str(data),
        "--centres",
        CENTRE,
        "--model-option",
        "widths=[4,8]",
        "--crop-size",
        "32",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--val-fraction",
        "0.34",
        "--workers",
        "0",
        "--checkpoint-every",
        "2",
        "--val-every",
        "2",
        "--log-every",
        "1",
        "--tile-size",
        "64",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]
    for name, value in options.items():
        args[args.index(f"--{name.replace('_', '-')}") + 1] = value
    return args
