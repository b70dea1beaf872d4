"""Starting a run from a checkpoint (``fedseg train --init``, the federation's ``init-checkpoint``).

The checkpoint must hold the run's model: same architecture, channels, classes and options;
anything else is refused with the file and every difference named. A public prior
(:mod:`fedseg.training.prior`) is the usual such checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from fedseg.models import ModelConfig
from fedseg.models.checkpoint import CheckpointError, Preprocessing, load_checkpoint

logger = logging.getLogger(__name__)


def _plain(model: ModelConfig) -> dict[str, Any]:
    plain: dict[str, Any] = json.loads(json.dumps(model.to_json()))  # tuples and lists compare equal
    return plain


def model_mismatch(found: ModelConfig, wanted: ModelConfig) -> list[str]:
    """The settings in which a checkpoint's model differs from the run's, as 'key: file X, run Y'."""
    have, want = _plain(found), _plain(wanted)
    differences = [
        f"{key}: file {have[key]!r}, run {want[key]!r}"
        for key in ("name", "in_channels", "classes")
        if have[key] != want[key]
    ]
    options = sorted(set(have["options"]) | set(want["options"]))
    differences += [
        f"option {key}: file {have['options'].get(key)!r}, run {want['options'].get(key)!r}"
        for key in options
        if have["options"].get(key) != want["options"].get(key)
    ]
    return differences


def initial_weights(
    path: Path, model: ModelConfig, preprocessing: Preprocessing | None = None
) -> OrderedDict[str, torch.Tensor]:
    """The weights of checkpoint ``path`` to start a run of ``model`` from; raises ``CheckpointError`` naming
    the file and every setting that differs when the checkpoint holds another model."""
    checkpoint = load_checkpoint(path)
    differences = model_mismatch(checkpoint.model, model)
    if differences:
        raise CheckpointError(
            f"{path}: cannot start from this checkpoint: its model differs from the run's ({'; '.join(differences)}). "
            "Train the prior (fedseg prior --model/--model-option/--channels) with the run's model, or start "
            "without it."
        )
    if preprocessing is not None and checkpoint.preprocessing.normalisation != preprocessing.normalisation:
        logger.warning(
            "%s was trained with normalisation '%s', this run uses '%s'",
            path,
            checkpoint.preprocessing.normalisation,
            preprocessing.normalisation,
        )
    prior = checkpoint.meta.get("prior")
    logger.info("starting from %s%s", path, " (a public prior of generated images)" if prior else "")
    return OrderedDict((key, value.clone()) for key, value in checkpoint.state_dict.items())
