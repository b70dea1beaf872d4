"""Issue 15: bad input and damaged files end in a clear error (the file or key, and the fix), a non-zero
exit code, and no input or earlier output changed. One test per case of the issue this module owns."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fedseg.cli import main
from fedseg.configuration import ConfigError
from fedseg.data.layout import scan_centre
from fedseg.data.splits import SplitConfig, make_manifest
from fedseg.federation.config import FederationConfig
from fedseg.files import read_jsonl
from tests.robustness.conftest import CENTRE, fingerprints, train_args


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write_bomb(path: Path) -> Path:
    """A 20000 x 20000 PNG of 48 KB: decoded, it would take 400 million pixels."""
    Image.new("1", (20000, 20000)).save(path, optimize=True)
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def validation_stem(data: Path) -> str:
    manifest = make_manifest({CENTRE: scan_centre(data, CENTRE)}, SplitConfig(val_fraction=0.34))
    return manifest.centres[CENTRE].val[0]


# -- 1: a stale run folder is never silently reused -------------------------------------------------
def test_1_a_failed_start_writes_nothing_and_a_stale_split_is_refused_with_the_difference(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_folder = tmp_path / "run"
    broken = dataset / CENTRE / "images" / "img-0000.png"
    good = broken.read_bytes()
    truncate(broken)
    code, message = run(train_args(dataset, run_folder), capsys)
    assert code == 2 and str(broken) in message and "move them out" in message
    assert not run_folder.exists() or not any(run_folder.rglob("*")), "a failed start wrote into the run folder"

    # A folder left by a failed start of an older fedseg: the split of other data and settings.
    broken.write_bytes(good)
    shutil.copy(broken, dataset / CENTRE / "images" / "img-0100.png")
    shutil.copy(dataset / CENTRE / "masks" / "img-0000.png", dataset / CENTRE / "masks" / "img-0100.png")
    run_folder.mkdir(exist_ok=True)
    stale = make_manifest({CENTRE: scan_centre(dataset, CENTRE)[:-1]}, SplitConfig(val_fraction=0.34))
    stale.save(run_folder / "manifest.json")
    before = fingerprints(dataset, run_folder)
    code, message = run(train_args(dataset, run_folder), capsys)
    assert code == 2
    assert "manifest.json" in message and "1 image(s) added (img-0100)" in message and "new --out" in message
    assert fingerprints(dataset, run_folder) == before

    code, message = run(train_args(dataset, tmp_path / "fresh"), capsys)
    saved = json.loads((tmp_path / "fresh" / "manifest.json").read_text())
    assert code == 0 and "img-0100" in saved["centres"][CENTRE]["train"] + saved["centres"][CENTRE]["val"]


# -- 2: evaluate on a centre without masks ----------------------------------------------------------
def test_2_evaluate_on_a_centre_without_masks_fails_and_points_to_predict(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.rmtree(dataset / CENTRE / "masks")
    before = fingerprints(dataset, tiny_checkpoint)
    out = tmp_path / "scores"
    code, message = run(
        ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(dataset), "--centres", CENTRE]
        + ["--out", str(out), "--device", "cpu"],
        capsys,
    )
    assert code == 2
    assert str(dataset / CENTRE) in message and "no masks" in message and "fedseg predict" in message
    assert not out.exists() and fingerprints(dataset, tiny_checkpoint) == before


# -- 4, 5: predict never overwrites an input or one of its own outputs -----------------------------
def predict_args(checkpoint: Path, images: Path, out: Path) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), "--device", "cpu"]


def test_4_predict_refuses_outputs_that_collide_before_writing_any(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = dataset / CENTRE / "images"
    Image.open(images / "img-0001.png").convert("RGB").save(images / "img-0000.jpg")
    before = fingerprints(dataset)
    code, message = run(predict_args(tiny_checkpoint, images, tmp_path / "masks"), capsys)
    assert code == 2
    assert "img-0000.png from img-0000.jpg, img-0000.png" in message and "rename or move one" in message
    assert not (tmp_path / "masks").exists() and fingerprints(dataset) == before


def test_5_predict_refuses_the_image_folder_as_output_folder(
    dataset: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    images = dataset / CENTRE / "images"
    before = fingerprints(dataset)
    code, message = run(predict_args(tiny_checkpoint, images, images), capsys)
    assert code == 2 and f"--out {images} is the input folder" in message and "Choose another --out" in message
    assert fingerprints(dataset) == before
    # Another spelling of the same folder; and a folder of ground-truth masks with the images' names.
    code, message = run(predict_args(tiny_checkpoint, images, images / ".." / "images"), capsys)
    assert code == 2 and "is the input folder" in message
    masks = dataset / CENTRE / "masks"
    code, message = run(predict_args(tiny_checkpoint, images, masks), capsys)
    assert code == 2 and f"{masks} holds 6 file(s) that fedseg predict did not write" in message
    assert "Choose an empty or new --out" in message and fingerprints(dataset) == before
    # Its own earlier masks, a rerun may replace.
    assert run(predict_args(tiny_checkpoint, images, dataset / "predicted"), capsys)[0] == 0
    assert run(predict_args(tiny_checkpoint, images, dataset / "predicted"), capsys)[0] == 0


# -- 6: every training and validation image is checked before step 1 --------------------------------
def test_6_a_truncated_validation_image_stops_training_before_step_one(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    damaged = dataset / CENTRE / "images" / f"{validation_stem(dataset)}.png"
    truncate(damaged)
    before = fingerprints(dataset)
    code, message = run(train_args(dataset, tmp_path / "run"), capsys)
    assert code == 2 and str(damaged) in message and "truncated" in message and "move them out" in message
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "config.json").exists()
    assert fingerprints(dataset) == before


# -- 7: a decompression bomb is reported like any other bad file ------------------------------------
def test_7_a_decompression_bomb_is_a_named_bad_file_in_check_train_and_predict(
    dataset: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = dataset / CENTRE / "images"
    bomb = write_bomb(images / "zz-bomb.png")
    shutil.copy(dataset / CENTRE / "masks" / "img-0000.png", dataset / CENTRE / "masks" / "zz-bomb.png")
    before = fingerprints(dataset)
    code, message = run(["check", "--data", str(dataset)], capsys)
    assert code == 1 and str(bomb) in message and "FEDSEG_MAX_IMAGE_PIXELS" in message
    code, message = run(train_args(dataset, tmp_path / "run"), capsys)
    assert code == 2 and str(bomb) in message and "FEDSEG_MAX_IMAGE_PIXELS" in message
    code, message = run(predict_args(tiny_checkpoint, images, tmp_path / "masks"), capsys)
    assert code == 1 and str(bomb) in message and "wrote 6 mask(s)" in message  # the rest of the folder is done
    assert len(list((tmp_path / "masks").glob("*.png"))) == 6
    assert fingerprints(dataset) == before


# -- 10: a run killed before its first checkpoint: the messages lead somewhere -----------------------
def test_10_resume_messages_never_point_at_each_other(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    code, message = run(train_args(dataset, empty, "--resume"), capsys)
    assert code == 2 and str(empty) in message and "Drop --resume to start" in message

    killed = tmp_path / "killed"
    assert run(train_args(dataset, killed), capsys)[0] == 0
    shutil.rmtree(killed / "checkpoints")  # what SIGKILL before the first checkpoint leaves: settings, split, log
    before = fingerprints(dataset, killed)
    code, message = run(train_args(dataset, killed), capsys)
    assert code == 2 and str(killed) in message and "stopped before its first checkpoint" in message
    assert "Pass --resume to start it again from step 0" in message
    assert fingerprints(dataset, killed) == before
    code, message = run(train_args(dataset, killed, "--resume"), capsys)
    assert code == 0 and "trained 2 steps" in message
    assert [r["step"] for r in read_jsonl(killed / "log.jsonl") if "loss" in r] == [1, 2]  # old lines dropped


# -- 14: the whole run config is checked on the server, before round 1 ------------------------------
BAD_RUN_CONFIG = {
    "lr": (-1.0, "> 0"),
    "label-fraction": (1.5, "in [0, 1]"),
    "crop-size": (0, ">= 16"),
    "overlap": (1.0, "in [0, 1)"),
    "threshold": (7.0, "in (0, 1)"),
    "augment": ("heavy", "one of strong, basic"),
    "dp-delta": (2.0, "in [0, 1)"),
    "device": ("gpu", "auto, cpu, cuda or cuda:N"),
    "round-timeout": (float("nan"), "a finite number"),
    "foreground-probability": (-0.1, "in [0, 1]"),
    "ema-decay": (1.0, "in (0, 1)"),
    "max-grad-norm": (float("inf"), "a finite number"),
    "weight-decay": (-1.0, ">= 0"),
    "resize": (8, ">= 16"),
    "lr-schedule": ("cosine-ish", "one of "),
    "patch-slices": (0, ">= 1"),
    "volume-spacing": (-1.0, ">= 0"),
    "tracking": ("wandb", "'tensorboard', 'none' or 'mlflow:URI'"),
}


class RecordingGrid:
    """A Flower Grid that records every call: the server must refuse before it asks any site anything."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.calls.append(name)
        raise AssertionError(f"the server used the grid ({name}) although its run config is invalid")


@pytest.mark.parametrize("key", sorted(BAD_RUN_CONFIG))
def test_14_the_server_refuses_a_bad_run_config_before_any_site_trains(key: str, tmp_path: Path) -> None:
    from server.app import app

    value, allowed = BAD_RUN_CONFIG[key]
    run_config = {"site-map": "STARE,heldout:CHASE_DB1", "out": str(tmp_path / "run"), key: value}
    grid = RecordingGrid()
    with pytest.raises(ConfigError) as refused:
        app(grid, SimpleNamespace(run_config=run_config))  # type: ignore[arg-type]
    assert f"run config '{key}'" in str(refused.value) and allowed in str(refused.value)
    assert str(value) in str(refused.value) or repr(value) in str(refused.value)
    assert grid.calls == [] and not (tmp_path / "run").exists()


def test_14_the_simulation_launcher_refuses_it_before_starting_flower(capsys: pytest.CaptureFixture) -> None:
    from simulations.launch import experiment_config

    with pytest.raises(SystemExit) as refused:
        experiment_config("demo", ["lr=-1", "augment='heavy'"])
    assert "demo.toml" in str(refused.value) and "run config 'lr' must be > 0, got -1" in str(refused.value)


def test_14_every_setting_of_the_default_run_config_is_valid_and_bad_ones_name_their_key() -> None:
    assert FederationConfig().num_server_rounds >= 1
    with pytest.raises(ConfigError, match="'min-train-sites' is 3, but 'site-map' names 2 training site"):
        FederationConfig(site_map="A,B,heldout:C", min_train_sites=3)
    with pytest.raises(ConfigError, match=r"'val-fraction' \+ 'test-fraction' must be < 1"):
        FederationConfig(val_fraction=0.6, test_fraction=0.5)


def test_7_pixels_beyond_the_limit_are_refused_without_decoding(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FEDSEG_MAX_IMAGE_PIXELS", str(90 * 90))
    code, message = run(["check", "--data", str(dataset)], capsys)
    assert code == 1 and "96 x 96 pixels is more than fedseg opens (8,100 pixels" in message
    assert np.array_equal(np.asarray(Image.open(dataset / CENTRE / "images" / "img-0000.png")).shape, (96, 96, 3))


# -- 4, 5 for volumes and exports: the same guards ---------------------------------------------------
def test_5_volume_predict_never_replaces_masks_it_did_not_write_and_refuses_colliding_names(
    spinal_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.volumes.test_predict import volume_checkpoint

    data = tmp_path / "data"
    shutil.copytree(spinal_crops / "UCL", data / "UCL")
    images, masks = data / "UCL" / "images", data / "UCL" / "masks"
    checkpoint = volume_checkpoint(tmp_path / "model.pt", mode="2.5d", spacing=None)
    before = fingerprints(data)
    code, message = run(predict_args(checkpoint, images, masks), capsys)  # the ground truth folder
    assert code == 2 and f"{masks} holds 1 file(s) that fedseg predict did not write" in message
    assert "sub-9418.nii.gz" in message and fingerprints(data) == before
    assert run(predict_args(checkpoint, images, tmp_path / "out"), capsys)[0] == 0
    assert run(predict_args(checkpoint, images, tmp_path / "out"), capsys)[0] == 0  # its own: may be replaced

    same_stem = gzip.decompress((images / "sub-9418.nii.gz").read_bytes())
    (images / "sub-9418.nii").write_bytes(same_stem)  # the same stem, another suffix
    before = fingerprints(data)
    code, message = run(predict_args(checkpoint, images, tmp_path / "collide"), capsys)
    assert code == 2 and "sub-9418.nii.gz from sub-9418.nii, sub-9418.nii.gz" in message
    assert not (tmp_path / "collide").exists() and fingerprints(data) == before


def test_5_export_refuses_to_replace_its_checkpoint(
    tiny_checkpoint: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    before = fingerprints(checkpoint)
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(checkpoint), "--format", "torchscript"]
    code, message = run([*args, "--check-data", str(dataset), "--check-centres", CENTRE], capsys)
    assert code == 2 and f"{checkpoint}: is an input; fedseg never overwrites an input" in message
    assert fingerprints(checkpoint) == before
