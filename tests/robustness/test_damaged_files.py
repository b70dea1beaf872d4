"""Random damage to every kind of file fedseg reads: a clear fedseg error naming the file (or key),
or a correct result; never a traceback, never a silently wrong value.

Each kind of file is one row of ``KINDS``: how to make a valid one (with fedseg's own writer), how
fedseg reads it, and what a correct result is. For files fedseg writes and reads back (checkpoints,
resume points, manifests, settings, logs and ledgers, site state, exported models) it is exactly what
was written: they carry checksums. For files people make (images, masks, volumes, nnU-Net's
dataset.json and centres.csv, run configs) fedseg cannot know what was meant: a correct result is a
valid value of the right kind (PNG files and gzip-compressed NIfTI volumes carry CRCs, so their
voxels must be exact too; JPEG and plain .nii have no checksum). ``tests/crypto`` does the same for
key and .he files.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fedseg.configuration import ConfigError
from fedseg.crypto.registry import RegistryError, build_registry, load_node_key, load_registry, write_registry
from fedseg.data.config import DataConfig
from fedseg.data.crops import CropConfig
from fedseg.data.errors import DataError
from fedseg.data.reading import read_image, read_mask
from fedseg.data.splits import SplitConfig, load_manifest
from fedseg.deploy.credentials import make_node_key
from fedseg.export.contract import ExportContract, ExportError
from fedseg.export.engines import export_onnx, export_torchscript, load_exported
from fedseg.federation.config import FederationConfig, read_run_config
from fedseg.federation.run_outputs import RunFolder
from fedseg.federation.site_runtime import load_evaluations, load_reply, load_site_state, save_evaluations
from fedseg.files import atomic_write_bytes, read_jsonl
from fedseg.inference.sliding_window import TilingConfig
from fedseg.integrity import DamagedFileError, sealed_bytes
from fedseg.models import ModelConfig, build_model
from fedseg.models.checkpoint import CheckpointError, Preprocessing, load_checkpoint, save_checkpoint
from fedseg.models.state import model_state
from fedseg.privacy.budget import PrivacyConfig
from fedseg.privacy.ledger import format_ledger, read_ledger
from fedseg.training import pooled
from fedseg.training.config import TrainConfig
from fedseg.training.local import LocalState
from fedseg.training.run_folder import check_settings, load_resume_point
from fedseg.volumes.io import read_volume, write_nifti
from fedseg.volumes.nnunet import scan_nnunet
from tests.conftest import REPO
from tests.robustness.conftest import CENTRE

FEDSEG_ERRORS = (DataError, ConfigError, CheckpointError, DamagedFileError, ExportError, RegistryError)
TINY = ModelConfig(name="unet", options={"widths": [4, 8]})
EXAMPLES = 25


@dataclass(frozen=True)
class FileKind:
    """One kind of file: ``make(folder, run)`` writes a valid one into ``folder`` (``run`` is a real
    pooled run folder to copy from) and returns its path; ``read(path)`` is how fedseg reads it;
    ``correct(read_damaged, read_valid)`` says whether a result read from a damaged file is right. An
    error must name the file, or with ``names_key`` the run config key it is about."""

    name: str
    make: Callable[[Path, Path], Path]
    read: Callable[[Path], Any]
    correct: Callable[[Any, Any], bool]
    names_key: bool = False


# -- what a correct result is --------------------------------------------------------------------
def same_array(got: np.ndarray, valid: np.ndarray) -> bool:
    return got.dtype == valid.dtype and np.array_equal(got, valid)


def valid_image(got: np.ndarray, _valid: np.ndarray) -> bool:
    return got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3 and got.size > 0


def same_value(got: Any, valid: Any) -> bool:
    if isinstance(got, torch.Tensor) or isinstance(valid, torch.Tensor):
        return isinstance(got, torch.Tensor) and isinstance(valid, torch.Tensor) and torch.equal(got, valid)
    if isinstance(got, dict) and isinstance(valid, dict):
        return got.keys() == valid.keys() and all(same_value(got[k], valid[k]) for k in valid)
    if isinstance(got, (list, tuple)) and isinstance(valid, (list, tuple)):
        return len(got) == len(valid) and all(same_value(a, b) for a, b in zip(got, valid, strict=True))
    return type(got) is type(valid) and got == valid


def a_prefix(got: list[dict], valid: list[dict]) -> bool:
    """JSON-lines files: a crash may cut the last line; every line read must be one that was written."""
    return got == valid[: len(got)]


def any_valid_config(got: FederationConfig, _valid: FederationConfig) -> bool:
    return isinstance(got, FederationConfig)


# -- valid files, written by fedseg's own writers -------------------------------------------------
def _picture(folder: Path, suffix: str, *, mask: bool = False) -> Path:
    """A 48 x 40 picture of noise (what compresses worst, so that damage lands in pixel data)."""
    rng = np.random.default_rng(7)
    pixels = rng.random((40, 48)) > 0.7 if mask else (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    path = folder / f"picture{suffix}"
    Image.fromarray(pixels.astype(np.uint8) * 255 if mask else pixels).save(path)
    return path


def _volume(folder: Path, _run: Path) -> Path:
    """A 12 x 10 x 6 volume of noise, oblique, as fedseg writes predictions (gzip-compressed NIfTI)."""
    noise = np.random.default_rng(7).integers(-1000, 3000, (12, 10, 6)).astype(np.int16)
    affine = np.array([[0.0, -0.5, 0.1, 10.0], [0.5, 0.0, 0.0, -20.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]])
    return write_nifti(folder / "volume.nii.gz", noise, affine)


def _read_volume(path: Path) -> dict[str, np.ndarray]:
    volume = read_volume(path)
    return {"array": volume.array, "affine": volume.affine}


def _same_volume(got: dict[str, np.ndarray], valid: dict[str, np.ndarray]) -> bool:
    return same_array(got["array"], valid["array"]) and same_array(got["affine"], valid["affine"])


def _checkpoint(folder: Path, _run: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(TINY)
    return save_checkpoint(
        folder / "model.pt", model=model, model_config=TINY, preprocessing=Preprocessing(), meta={"step": 7}
    )


def _read_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint = load_checkpoint(path)
    return {
        "model": checkpoint.model,
        "preprocessing": checkpoint.preprocessing,
        "weights": dict(checkpoint.state_dict),
        "meta": dict(checkpoint.meta),
    }


def _same_checkpoint(got: dict[str, Any], valid: dict[str, Any]) -> bool:
    return (
        got["model"] == valid["model"]
        and got["preprocessing"] == valid["preprocessing"]
        and same_value(got["weights"], valid["weights"])
        and same_value(got["meta"], valid["meta"])
    )


@pytest.fixture(scope="module")
def trained_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pooled run with DP-SGD: resume.pt, manifest.json, config.json, log.jsonl and privacy.jsonl."""
    root = tmp_path_factory.mktemp("run")
    data = DataConfig(
        root=synth_root, centres=(CENTRE,), crop=CropConfig(size=32), split=SplitConfig(val_fraction=0.34)
    )
    config = TrainConfig(
        data=data,
        out=root / "run",
        model=TINY,
        privacy=PrivacyConfig(epsilon=50.0),
        steps=2,
        batch_size=2,
        workers=0,
        val_every=0,
        checkpoint_every=1,
        log_every=1,
        device="cpu",
        tiling=TilingConfig(tile_size=64),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pooled.train(config, progress=False)
    return root / "run"


def _copy_from_run(name: str) -> Callable[[Path, Path], Path]:
    def make(folder: Path, run: Path) -> Path:
        return Path(shutil.copy(run / name, folder / Path(name).name))

    return make


def _settings(folder: Path, run: Path) -> Path:
    """A run's config.json, and a copy of it as the settings a resumed run asks for."""
    shutil.copy(run / "config.json", folder / "asked.json")
    return Path(shutil.copy(run / "config.json", folder / "config.json"))


def _check_settings(path: Path) -> str:
    check_settings(path, json.loads((path.parent / "asked.json").read_text()))
    return "the same settings"


def _read_ledger(path: Path) -> list[dict]:
    entries = read_ledger(path.parent)
    format_ledger(entries)
    return entries


def _run_config(folder: Path, _run: Path) -> Path:
    target = folder / "demo.toml"
    shutil.copy(REPO / "simulations" / "demo.toml", target)
    return target


def _server_state(folder: Path, _run: Path) -> Path:
    run = RunFolder(folder / "federated", FederationConfig(model_options='{"widths": [4, 8]}'))
    run.start()
    torch.manual_seed(0)
    run.save_models(3, model_state(build_model(TINY)), validation_dice=0.25, best_validation_dice=None)
    return run.server_state


def _read_server_state(path: Path) -> dict[str, Any]:
    point = RunFolder(path.parents[1], FederationConfig(model_options='{"widths": [4, 8]}')).start()
    assert point is not None
    return {"round": point.round, "weights": dict(point.model), "best": point.best_validation_dice}


def _site_state(folder: Path, run: Path) -> Path:
    """A site's state.bin as a site writes it; its content taken from a real DP run (privacy accountant)."""
    state = LocalState.from_bytes(load_resume_point(run / "checkpoints" / "resume.pt")["local_state"])
    return atomic_write_bytes(folder / "state.bin", sealed_bytes(state.to_bytes()))


def _read_site_state(path: Path) -> dict[str, Any]:
    state = load_site_state(path)
    return {"step": state.step, "privacy": vars(state.privacy), "optimizer": state.optimizer}


def _stored_reply(folder: Path, _run: Path) -> Path:
    """A site's last-reply.pt as a site writes it (the weights it trained, kept at the site)."""
    torch.manual_seed(0)
    reply = {
        "round": 3,
        "global": "0123abcd",
        "weights": model_state(build_model(TINY)),
        "num_examples": 4,
        "metrics": {"epsilon": 1.5},
    }
    buffer = io.BytesIO()
    torch.save(reply, buffer)
    return atomic_write_bytes(folder / "last-reply.pt", sealed_bytes(buffer.getvalue()))


def _evaluations(folder: Path, _run: Path) -> Path:
    """A site's evaluations.json as a site writes it: two models scored, one score released under DP."""
    released = {"n_images": 3, "dice_sum": 1.8125}
    ledger = {"site": "STARE", "round": 2, "kind": "validation", "epsilon": 2.5, "delta": 1e-5, "epsilon_budget": 8.0}
    save_evaluations(
        folder / "evaluations.json",
        {
            "0123abcd": {"site": "STARE", "centre": "STARE", "role": "train", "counts": {}, "ledger": None},
            "4567ef01": {"site": "STARE", "centre": "STARE", "role": "train", "counts": released, "ledger": ledger},
        },
    )
    return folder / "evaluations.json"


def _exported(suffix: str) -> Callable[[Path, Path], Path]:
    """A tiny model exported as fedseg export writes it (ONNX or TorchScript, with its contract)."""

    def make(folder: Path, _run: Path) -> Path:
        torch.manual_seed(0)
        model = build_model(TINY)
        contract = ExportContract(model=TINY.to_json(), preprocessing=Preprocessing(), tile_size=32, overlap=0.25)
        writer = export_onnx if suffix == ".onnx" else export_torchscript
        return writer(model, contract, folder / f"model{suffix}", sample=torch.zeros(1, 3, 32, 32))

    return make


def _read_exported(path: Path) -> dict[str, Any]:
    """The contract, and what the file computes on a fixed input (the engine ``fedseg predict`` uses)."""
    module, contract = load_exported(path, "onnxruntime" if path.suffix == ".onnx" else "torchscript")
    with torch.no_grad():
        logits = module(torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32))
    return {"contract": contract, "logits": logits}


def _nnunet(name: str) -> Callable[[Path, Path], Path]:
    """nnU-Net's raw layout with two cases (empty image files: only their names are read when scanning)."""

    def make(folder: Path, _run: Path) -> Path:
        (folder / "imagesTr").mkdir()
        (folder / "labelsTr").mkdir()
        for case in ("gm_000", "gm_001"):
            (folder / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"")
            (folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
        description = {"channel_names": {"0": "T2star"}, "labels": {"background": 0, "gm": 1}, "file_ending": ".nii.gz"}
        (folder / "dataset.json").write_text(json.dumps(description))
        (folder / "centres.csv").write_text("case,centre\ngm_000,UCL\ngm_001,NWU\n")
        return folder / name

    return make


def any_scan(got: dict, _valid: dict) -> bool:
    return isinstance(got, dict) and all(isinstance(records, tuple) for records in got.values())


def _registry(folder: Path, _run: Path) -> Path:
    """A site registry of two sites, as `fedseg registry` writes it."""
    keys = [make_node_key(folder, name)[1] for name in ("STARE", "CHASE_DB1")]
    return write_registry(folder / "federation.json", build_registry(keys, {"STARE": 40}))


def _read_registry(path: Path) -> dict[str, Any]:
    registry = load_registry(path)
    return {name: (site.public_key, site.max_examples) for name, site in registry.sites.items()}


def _node_key(folder: Path, _run: Path) -> Path:
    return make_node_key(folder, "STARE")[0]


def _read_node_key(path: Path) -> int:
    return load_node_key(path).private_numbers().private_value


KINDS = [
    FileKind("image.png", lambda f, _: _picture(f, ".png"), read_image, same_array),
    FileKind("image.jpg", lambda f, _: _picture(f, ".jpg"), read_image, valid_image),
    FileKind("mask.png", lambda f, _: _picture(f, ".png", mask=True), read_mask, same_array),
    FileKind("volume.nii.gz", _volume, _read_volume, _same_volume),
    FileKind("dataset.json", _nnunet("dataset.json"), lambda p: scan_nnunet(p.parent), any_scan),
    FileKind("centres.csv", _nnunet("centres.csv"), lambda p: scan_nnunet(p.parent), any_scan),
    FileKind("checkpoint.pt", _checkpoint, _read_checkpoint, _same_checkpoint),
    FileKind("resume.pt", _copy_from_run("checkpoints/resume.pt"), load_resume_point, same_value),
    FileKind("manifest.json", _copy_from_run("manifest.json"), load_manifest, lambda got, valid: got == valid),
    FileKind("config.json", _settings, _check_settings, lambda got, valid: got == valid),
    FileKind("log.jsonl", _copy_from_run("log.jsonl"), read_jsonl, a_prefix),
    FileKind("privacy.jsonl", _copy_from_run("privacy.jsonl"), _read_ledger, a_prefix),
    FileKind("server.pt", _server_state, _read_server_state, same_value),
    FileKind("state.bin", _site_state, _read_site_state, same_value),
    FileKind("last-reply.pt", _stored_reply, load_reply, same_value),
    FileKind("evaluations.json", _evaluations, load_evaluations, same_value),
    FileKind("federation.json", _registry, _read_registry, same_value),
    FileKind("node.key", _node_key, _read_node_key, same_value),
    FileKind("model.onnx", _exported(".onnx"), _read_exported, same_value),
    FileKind("model.ts.pt", _exported(".pt"), _read_exported, same_value),
    FileKind(
        "run-config.toml",
        _run_config,
        lambda p: FederationConfig.from_run_config(read_run_config(p)),
        any_valid_config,
        names_key=True,
    ),
]


@pytest.fixture(scope="module")
def valid_files(
    trained_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Path, bytes, Any]]]:
    """Per kind: the valid file's path, its bytes, and what fedseg reads from it. A damaged image header
    may claim any size: the pixel limit keeps the test's memory small (it is tested on its own)."""
    made = {}
    for kind in KINDS:
        path = kind.make(tmp_path_factory.mktemp(kind.name.replace(".", "-")), trained_run)
        made[kind.name] = (path, path.read_bytes(), kind.read(path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSEG_MAX_IMAGE_PIXELS", str(4_000_000))
        yield made


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Flipped bits, a cut, overwritten or inserted bytes: what disks, copies and editors do to files."""
    how = draw(st.sampled_from(("flip", "cut", "overwrite", "insert")))
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        damaged = bytearray(data)
        for position in [at] + draw(st.lists(st.integers(0, len(data) - 1), max_size=2)):
            damaged[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(damaged)
    if how == "cut":
        return data[:at]
    noise = draw(st.binary(min_size=1, max_size=16))
    return data[:at] + noise + data[at + len(noise) :] if how == "overwrite" else data[:at] + noise + data[at:]


def check_damaged(kind: FileKind, valid_files: dict, data: st.DataObject) -> None:
    path, original, valid = valid_files[kind.name]
    broken = data.draw(damage(original), label="damaged bytes")
    if broken == original:
        return
    path.write_bytes(broken)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = kind.read(path)
    except FEDSEG_ERRORS as error:
        message = str(error)
        assert str(path) in message or (kind.names_key and "run config" in message), message
        return
    finally:
        path.write_bytes(original)
    assert kind.correct(got, valid), f"{kind.name}: damaged file read without error, but the result is wrong"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_damaged_files_give_a_clear_error_or_the_right_result(
    kind: FileKind, valid_files: dict, data: st.DataObject
) -> None:
    check_damaged(kind, valid_files, data)
