"""Exported files as models the sliding-window code can run: ONNX (ONNX Runtime) and TorchScript.

Both read and write the ``ExportContract`` in the file's metadata. ONNX graphs come from PyTorch's
TorchScript-based exporter with dynamic batch, height and width (every zoo model pads its input
to its size multiple inside the graph), so the engine sees exactly the tiles PyTorch sees.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedseg.export.contract import METADATA_KEY, ExportContract, ExportError
from fedseg.inference.predictor import InferenceConfig, Predictor
from fedseg.inference.sliding_window import TilingConfig
from fedseg.integrity import digest

ENGINES = ("torch", "onnxruntime", "torchscript")
OPSET = 17
_DYNAMIC = {0: "batch", 2: "height", 3: "width"}


def export_onnx(model: nn.Module, contract: ExportContract, path: Path, *, sample: torch.Tensor) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the exporter itself
        torch.onnx.export(
            model.eval(),
            (sample,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": _DYNAMIC, "logits": _DYNAMIC},
            opset_version=OPSET,
        )
    write_onnx_contract(path, contract)
    return path


def write_onnx_contract(path: Path, contract: ExportContract) -> None:
    import onnx

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, replace(contract, weights_sha256=_onnx_digest(graph)).dumps()
    graph.doc_string = "fedseg segmentation model: sigmoid(logits) is the foreground probability"
    onnx.save(graph, str(path))


def export_torchscript(model: nn.Module, contract: ExportContract, path: Path, *, sample: torch.Tensor) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), (sample,), check_trace=False)
    sealed = replace(contract, weights_sha256=_torchscript_digest(traced))
    torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": sealed.dumps()})
    return path


def _onnx_digest(model: Any) -> str:
    """Of the whole ONNX model but its metadata and description: the graph (nodes and weights) and the
    header that decides how it runs (IR version, opsets)."""
    sealed = type(model)()
    sealed.CopyFrom(model)
    del sealed.metadata_props[:]
    sealed.doc_string = ""
    return hashlib.sha256(sealed.SerializeToString(deterministic=True)).hexdigest()[:32]


def _torchscript_digest(module: Any) -> str:
    return digest(dict(module.state_dict()))


class OnnxRuntimeModel(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, behind a module's ``forward`` (tensors in and out)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail, InvalidGraph, ... for a model it refuses
            message = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise ExportError(
                f"{path}: ONNX Runtime cannot load this model ({message}); export it again with `fedseg export`."
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])


def read_contract(path: Path) -> ExportContract:
    """The contract stored in an exported ONNX or TorchScript file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: exported model not found.")
    if path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
        except Exception as error:  # onnx raises DecodeError and others for foreign files
            raise ExportError(f"{path}: not a readable ONNX file ({type(error).__name__}).") from None
        contract = ExportContract.loads(props.get(METADATA_KEY, ""), source=str(path))
        contract.check_weights(_onnx_digest(model), str(path))
        return contract
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        found = _torchscript_digest(module)
    except Exception as error:  # torch raises RuntimeError and others for foreign files
        raise ExportError(f"{path}: not a readable TorchScript file ({type(error).__name__}).") from None
    contract = ExportContract.loads(extra[f"{METADATA_KEY}.json"], source=str(path))
    contract.check_weights(found, str(path))
    return contract


def load_exported(path: Path, engine: str) -> tuple[nn.Module, ExportContract]:
    """The exported file as a module for ``engine`` ('onnxruntime' for .onnx, 'torchscript' for .pt/.ts)."""
    contract = read_contract(path)
    if engine == "onnxruntime":
        if Path(path).suffix != ".onnx":
            raise ExportError(f"{path}: --engine onnxruntime runs .onnx files (`fedseg export --format onnx`).")
        return OnnxRuntimeModel(path), contract
    if engine == "torchscript":
        return torch.jit.load(str(path), map_location="cpu").eval(), contract
    raise ExportError(f"engine '{engine}' does not run exported files; choose onnxruntime or torchscript.")


def exported_predictor(path: Path, engine: str, inference: InferenceConfig) -> Predictor:
    """Whole-image inference with an exported file, prepared and tiled as its contract says."""
    model, contract = load_exported(path, engine)
    tiling = TilingConfig(
        tile_size=inference.tile_size or contract.tile_size, overlap=inference.overlap, batch_size=inference.tile_batch
    )
    return Predictor(model, contract.preprocessing, tiling, tta=inference.tta, device=torch.device("cpu"))
