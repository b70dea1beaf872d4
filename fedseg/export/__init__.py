"""Deployment: a checkpoint as an ONNX or TorchScript file with its preprocessing contract,
checked against PyTorch on real images, optionally pruned or int8-quantised."""

from fedseg.export.contract import ExportContract, ExportError
from fedseg.export.engines import ENGINES, OnnxRuntimeModel, load_exported, read_contract
from fedseg.export.exporter import ExportConfig, ExportReport, export

__all__ = [
    "ENGINES",
    "ExportConfig",
    "ExportContract",
    "ExportError",
    "ExportReport",
    "OnnxRuntimeModel",
    "export",
    "load_exported",
    "read_contract",
]
