"""Export: every zoo model through ONNX (and TorchScript) with its contract, checked on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from fedseg.cli import main
from fedseg.export import ExportConfig, ExportError, export, read_contract
from fedseg.export import exporter as export_module
from fedseg.export.contract import METADATA_KEY, ExportContract
from fedseg.export.engines import OnnxRuntimeModel, load_exported, write_onnx_contract
from fedseg.inference.predictor import InferenceConfig
from fedseg.models import ModelConfig, available_models, build_model
from fedseg.models.checkpoint import Preprocessing, load_checkpoint, save_checkpoint
from tests.models.test_contract import config_for

TILE = 64


def checkpoint_of(config: ModelConfig, path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(config)
    return save_checkpoint(
        path, model=model, model_config=config, preprocessing=Preprocessing(), meta={"crop_size": 32}
    )


def export_config(checkpoint: Path, out: Path, data: Path, **changes: object) -> ExportConfig:
    values: dict = dict(
        checkpoint=checkpoint,
        out=out,
        format="onnx",
        check_data=data,
        check_centres=("CHASE_DB1",),
        parity_images=1,
        inference=InferenceConfig(tile_size=TILE),
    )
    return ExportConfig(**{**values, **changes})


IMAGE_MODELS = [name for name in available_models() if config_for(name).spatial_dims == 2]
VOLUME_MODELS = [name for name in available_models() if config_for(name).spatial_dims == 3]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_zoo_model_exports_to_onnx_within_1e_4_on_a_real_image(
    name: str, retina_crops: Path, tmp_path: Path
) -> None:
    config = config_for(name)
    checkpoint = checkpoint_of(config, tmp_path / "m.pt")
    report = export(export_config(checkpoint, tmp_path / "m.onnx", retina_crops))
    assert report.parity_max_difference <= 1e-4 and report.path.is_file()
    contract = read_contract(report.path)
    assert contract.model == config.to_json() and contract.preprocessing == Preprocessing()
    assert contract.tile_size == TILE and contract.checks["parity_images"] == 1
    x = torch.randn(2, 3, 45, 70)  # any batch and size: the graph has dynamic axes
    with torch.no_grad():
        expected = torch.sigmoid(load_checkpoint(checkpoint).build()(x))
        got = torch.sigmoid(OnnxRuntimeModel(report.path)(x))
    assert got.shape == (2, 1, 45, 70) and float((got - expected).abs().max()) <= 1e-4


@pytest.mark.parametrize("name", VOLUME_MODELS)
def test_volume_models_are_refused_with_the_reason(name: str, retina_crops: Path, tmp_path: Path) -> None:
    checkpoint = checkpoint_of(config_for(name), tmp_path / "m.pt")
    with pytest.raises(ExportError, match=f"'{name}' is a volume model; fedseg export writes 2D image models only"):
        export(export_config(checkpoint, tmp_path / "m.onnx", retina_crops))
    assert not list(tmp_path.glob("*.onnx"))


def test_torchscript_export_carries_the_contract(retina_crops: Path, tmp_path: Path) -> None:
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    report = export(export_config(checkpoint, tmp_path / "m.ts.pt", retina_crops, format="torchscript"))
    assert report.parity_max_difference <= 1e-4
    assert read_contract(report.path).tile_size == TILE
    scripted = torch.jit.load(str(report.path))
    assert scripted(torch.randn(1, 3, 50, 90)).shape == (1, 1, 50, 90)


def test_failed_parity_check_writes_nothing(
    retina_crops: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    real = export_module._engine

    class Drifting(torch.nn.Module):
        def __init__(self, engine: torch.nn.Module) -> None:
            super().__init__()
            self.engine = engine

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.engine(x) + 0.01

    def drifting(path: Path, format: str) -> torch.nn.Module:
        return Drifting(real(path, format))

    monkeypatch.setattr(export_module, "_engine", drifting)
    with pytest.raises(ExportError, match="not written: .* differ from PyTorch's by up to"):
        export(export_config(checkpoint, tmp_path / "m.onnx", retina_crops))
    assert not list(tmp_path.glob("*.onnx"))


def test_int8_and_pruned_exports_are_judged_by_dice_and_refused_past_the_limit(
    retina_crops: Path, tmp_path: Path
) -> None:
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    plain = export(export_config(checkpoint, tmp_path / "plain.onnx", retina_crops))
    small = export(export_config(checkpoint, tmp_path / "int8.onnx", retina_crops, compression="int8"))
    graph = onnx.load(str(small.path))  # int8 weights behind QDQ pairs (tiny models grow; see the deployment bench)
    assert any(node.op_type == "DequantizeLinear" for node in graph.graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.graph.initializer)
    assert small.dice_drop is not None and read_contract(small.path).compression == "int8"
    assert plain.dice_drop is None  # a float export is judged by parity alone
    pruned = export(export_config(checkpoint, tmp_path / "pruned.onnx", retina_crops, compression="prune:0.5"))
    assert read_contract(pruned.path).checks["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    strict = dict(compression="prune:0.5", max_dice_drop=-1.0)  # any result counts as too large a drop
    with pytest.raises(ExportError, match="drops Dice on the check images .* not written"):
        export(export_config(checkpoint, tmp_path / "refused.onnx", retina_crops, **strict))
    assert not (tmp_path / "refused.onnx").exists()
    assert export(export_config(checkpoint, tmp_path / "kept.onnx", retina_crops, allow_dice_drop=True, **strict))


def test_cli_export_then_predict_with_onnxruntime_matches_pytorch(retina_crops: Path, tmp_path: Path) -> None:
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    onnx_file = tmp_path / "m.onnx"
    common = ["--check-data", str(retina_crops), "--check-centres", "CHASE_DB1", "--parity-images", "1"]
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(onnx_file), *common]) == 0
    images = retina_crops / "CHASE_DB1" / "images"
    for engine, model, out in (("torch", checkpoint, "torch"), ("onnxruntime", onnx_file, "ort")):
        argv = ["predict", "--checkpoint", str(model), "--images", str(images), "--out", str(tmp_path / out)]
        assert main([*argv, "--engine", engine, "--probabilities", "--tile-size", "64"]) == 0
    for mask in (tmp_path / "torch").glob("*_prob.png"):
        torch_probabilities = np.asarray(Image.open(mask), dtype=int)
        ort_probabilities = np.asarray(Image.open(tmp_path / "ort" / mask.name), dtype=int)
        assert np.abs(torch_probabilities - ort_probabilities).max() <= 1  # 8-bit rounding of equal maps
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "--images",
                str(images),
                "--out",
                str(tmp_path / "x"),
                "--engine",
                "onnxruntime",
            ]
        )
        == 2
    )  # a .pt is no ONNX file: a clean error


def test_an_onnx_file_whose_header_was_changed_is_refused_naming_the_file(retina_crops: Path, tmp_path: Path) -> None:
    """The seal covers the header (IR version, opsets) as well as the graph: a damaged header is caught
    before ONNX Runtime sees it (hypothesis found one ONNX Runtime refused with its own raw error)."""
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    path = export(export_config(checkpoint, tmp_path / "m.onnx", retina_crops)).path
    model = onnx.load(str(path))
    model.ClearField("ir_version")  # what a damaged header did: "Missing model IR version"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match=str(path)):
        load_exported(path, "onnxruntime")


def test_a_sealed_onnx_file_that_onnx_runtime_refuses_gives_an_error_naming_the_file(
    retina_crops: Path, tmp_path: Path
) -> None:
    checkpoint = checkpoint_of(config_for("unet"), tmp_path / "m.pt")
    path = export(export_config(checkpoint, tmp_path / "m.onnx", retina_crops)).path
    model = onnx.load(str(path))
    model.ClearField("ir_version")  # what a damaged header did: "Missing model IR version"
    onnx.save(model, str(path))
    write_onnx_contract(path, read_contract_unchecked(path))  # sealed again: only ONNX Runtime can object
    with pytest.raises(ExportError, match=f"{path}: ONNX Runtime cannot load this model"):
        load_exported(path, "onnxruntime")


def read_contract_unchecked(path: Path) -> ExportContract:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ExportContract.loads(props[METADATA_KEY], source=str(path))
