"""Self-describing checkpoints: the file alone rebuilds the model and its preprocessing.

A checkpoint is a ``torch.save`` of plain types (loaded with ``weights_only=True``)::

    {"format": "fedseg-checkpoint", "format_version": 1, "fedseg_version": "0.1.0",
     "model": {"name", "in_channels", "classes", "options"},
     "preprocessing": {"normalisation", "resize", "channels", "mode", "spacing", "percentiles"},
     "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedseg import __version__
from fedseg.files import atomic_torch_save
from fedseg.integrity import DamagedFileError, sealed, unsealed
from fedseg.models import ModelConfig, build_model
from fedseg.models.state import clean_state_dict, load_model_state
from fedseg.volumes.config import MODES, VolumeConfig
from fedseg.volumes.plan import volume_mode

if TYPE_CHECKING:
    from fedseg.data.config import DataConfig

FORMAT = "fedseg-checkpoint"
FORMAT_VERSION = 1
_KEYS = {"format", "format_version", "fedseg_version", "model", "preprocessing", "state_dict"}
_FIX = "Use another checkpoint (best.pt or last.pt of the run), or restore this one from a backup."


class CheckpointError(ValueError):
    """A file that is not a usable fedseg checkpoint for this version."""


@dataclass(frozen=True)
class Preprocessing:
    """How inputs are prepared for the model: channels, optional resize of the longer side, normalisation.

    ``mode`` is ``2d`` for images, ``2.5d`` for volumes cut into slice stacks of ``channels`` slices,
    ``3d`` for volumes; volumes are resampled in-plane to ``spacing`` mm (None: not resampled) and their
    intensities mapped from their own ``percentiles`` range to 0..1.
    """

    channels: int = 3
    resize: int | None = None
    normalisation: str = "image"
    mode: str = "2d"
    spacing: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocessing mode must be one of {MODES}, got '{self.mode}'")
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))

    @classmethod
    def of(cls, data: DataConfig, spatial_dims: int, *, volumes: bool) -> Preprocessing:
        """The one way a run's preprocessing is made: from its data settings, and for volumes 2.5D slice
        stacks or 3D by the model's spatial dimensions (pooled runs, the federation, the benchmarks)."""
        return cls(
            channels=data.channels,
            resize=data.resize,
            normalisation=data.normalisation,
            mode=volume_mode(spatial_dims) if volumes else "2d",
            spacing=data.volume.spacing,
            percentiles=data.volume.percentiles,
        )

    @property
    def volumes(self) -> bool:
        return self.mode != "2d"

    def volume_config(self, patch_slices: int = VolumeConfig.patch_slices) -> VolumeConfig:
        return VolumeConfig(spacing=self.spacing, percentiles=self.percentiles, patch_slices=patch_slices)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "resize": self.resize,
            "normalisation": self.normalisation,
            "mode": self.mode,
            "spacing": self.spacing,
            "percentiles": list(self.percentiles),
        }


@dataclass(frozen=True)
class Checkpoint:
    model: ModelConfig
    preprocessing: Preprocessing
    state_dict: Mapping[str, torch.Tensor]
    meta: Mapping[str, Any] = field(default_factory=dict)
    fedseg_version: str = __version__

    def build(self) -> nn.Module:
        """The model with this checkpoint's weights, in eval mode."""
        model = build_model(self.model)
        try:
            load_model_state(model, self.state_dict)
        except RuntimeError as error:
            raise CheckpointError(
                f"the checkpoint's weights do not fit model '{self.model.name}' with its options: {str(error)[:400]}"
            ) from None
        return model.eval()


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_config: ModelConfig,
    preprocessing: Preprocessing,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedseg_version": __version__,
        "model": model_config.to_json(),
        "preprocessing": preprocessing.to_json(),
        "state_dict": clean_state_dict(model.state_dict()),
        "meta": dict(meta or {}),
    }
    return atomic_torch_save(sealed(payload), path)


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _checked_weights(state_dict: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise CheckpointError(f"{path}: damaged: its weights are not a table of tensors. {_FIX}")
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({', '.join(bad[:3])}): the training "
            "that wrote it diverged, or the file is damaged. Use an earlier checkpoint (e.g. best.pt)."
        )
    return state_dict


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint. Raises ``CheckpointError`` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or damaged files
        raise CheckpointError(
            f"{path}: not a readable fedseg checkpoint ({type(error).__name__}: {str(error)[:200]})."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fedseg checkpoint (no '{FORMAT}' header). Use a file written by fedseg.")
    try:
        payload = unsealed(payload, path, what="checkpoint", keys=_KEYS, optional=frozenset({"meta"}), fix=_FIX)
    except DamagedFileError as error:
        raise CheckpointError(str(error)) from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload.get('format_version')} is not supported "
            f"by fedseg {__version__} (format {FORMAT_VERSION})."
        )
    written_by = str(payload.get("fedseg_version", "unknown"))
    if _major_minor(written_by) != _major_minor(__version__):
        raise CheckpointError(
            f"{path}: written by fedseg {written_by}, but this is fedseg {__version__}. "
            f"Use fedseg {'.'.join(_major_minor(written_by))}.x to read it."
        )
    try:
        model_config = ModelConfig(**payload["model"])
        preprocessing = Preprocessing(**payload["preprocessing"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its model description does not fit this fedseg: {error}") from None
    meta = payload.get("meta", {})
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: damaged: its 'meta' is not a table. {_FIX}")
    return Checkpoint(
        model=model_config,
        preprocessing=preprocessing,
        state_dict=_checked_weights(payload["state_dict"], path),
        meta=meta,
        fedseg_version=written_by,
    )
