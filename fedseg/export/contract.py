"""The preprocessing contract an exported model carries in its file's metadata.

Whoever runs the file (ONNX Runtime in a PACS plug-in, TorchScript in an inference server) reads
it to prepare images exactly as in training: channels, resize of the longer side, normalisation,
the sliding-window tile and overlap, and the threshold on ``sigmoid(logits)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fedseg import __version__
from fedseg.models.checkpoint import Preprocessing

METADATA_KEY = "fedseg"
FORMAT = "fedseg-export"
FORMAT_VERSION = 1


class ExportError(ValueError):
    """An export that cannot be written or trusted (parity or Dice check failed, unreadable file)."""


@dataclass(frozen=True)
class ExportContract:
    """What an exported file promises: input ``image`` float32 N x C x H x W (any H, W; normalised as
    ``preprocessing`` says), output ``logits`` N x 1 x H x W; probabilities are ``sigmoid(logits)``."""

    model: dict[str, Any]
    preprocessing: Preprocessing
    tile_size: int
    overlap: float
    threshold: float = 0.5
    compression: str = "none"
    checks: dict[str, Any] = field(default_factory=dict)
    fedseg_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fedseg_version": self.fedseg_version,
            "model": self.model,
            "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": self.preprocessing.channels},
            "output": {"name": "logits", "layout": "N1HW", "probabilities": "sigmoid(logits)"},
            "preprocessing": self.preprocessing.to_json(),
            "tiling": {"tile_size": self.tile_size, "overlap": self.overlap, "blend": "gaussian"},
            "threshold": self.threshold,
            "compression": self.compression,
            "checks": self.checks,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def loads(cls, text: str, *, source: str) -> ExportContract:
        try:
            payload = json.loads(text)
            if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {payload.get('format')} {payload.get('format_version')}")
            return cls(
                model=payload["model"],
                preprocessing=Preprocessing(**payload["preprocessing"]),
                tile_size=int(payload["tiling"]["tile_size"]),
                overlap=float(payload["tiling"]["overlap"]),
                threshold=float(payload["threshold"]),
                compression=str(payload.get("compression", "none")),
                checks=dict(payload.get("checks", {})),
                fedseg_version=str(payload.get("fedseg_version", "unknown")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ExportError(
                f"{source}: no readable fedseg contract in its metadata ({error}); export it with `fedseg export`."
            ) from None
