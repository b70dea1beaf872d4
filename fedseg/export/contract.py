"""The preprocessing contract an exported model carries in its file's metadata.

Whoever runs the file (ONNX Runtime in a PACS plug-in, TorchScript in an inference server) reads
it to prepare images exactly as in training: channels, resize of the longer side, normalisation,
the sliding-window tile and overlap, and the threshold on ``sigmoid(logits)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from fedseg import __version__
from fedseg.models.checkpoint import Preprocessing

METADATA_KEY = "fedseg"
DIGEST_KEY = "sha256"  # of the contract's own JSON: a changed digit (threshold, tile) is found
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
    weights_sha256: str = ""  # of the network in the file (set when the file is written; "" in older files)

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
            "weights_sha256": self.weights_sha256,
        }

    def dumps(self) -> str:
        payload = self.to_json()
        return json.dumps({**payload, DIGEST_KEY: _json_digest(payload)}, sort_keys=True)

    @classmethod
    def loads(cls, text: str, *, source: str) -> ExportContract:
        try:
            payload = json.loads(text)
            expected = payload.pop(DIGEST_KEY, None)
            if expected is not None and expected != _json_digest(payload):
                raise ValueError("its checksum does not match: the file was changed or damaged")
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
                weights_sha256=str(payload.get("weights_sha256", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ExportError(
                f"{source}: no readable fedseg contract in its metadata ({error}); export it again with "
                "`fedseg export`, or copy it again from where it was exported."
            ) from None

    def check_weights(self, found: str, source: str) -> None:
        """Refuse a file whose network no longer has the digest written with it (files from before: any)."""
        if self.weights_sha256 and found != self.weights_sha256:
            raise ExportError(
                f"{source}: damaged: its network no longer matches the checksum written with it. Copy it again "
                "from where it was exported, or export it again with `fedseg export`."
            )


def _json_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
