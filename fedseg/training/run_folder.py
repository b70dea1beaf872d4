"""Whether a pooled run folder may be started, started again or resumed with the settings asked for.

A folder is in one of four states, and each state has one answer with and one without ``--resume``
(the messages never point at each other):

- empty: start (with ``--resume``: nothing to resume, drop it);
- set up but never trained (``config.json``/``manifest.json``, no log, no checkpoint, e.g. a start that
  failed): start, if its settings and split are those of the current data and settings;
- trained but stopped before its first checkpoint (a log, no ``resume.pt``): ``--resume`` starts it again
  from step 0 with its settings and split; without it, refuse;
- resumable (``checkpoints/resume.pt``): ``--resume`` continues it; without it, refuse.

Settings and split must match in every case but the first: a difference is named, never silently used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedseg.configuration import ConfigError
from fedseg.files import read_json_table
from fedseg.integrity import DamagedFileError, unsealed

logger = logging.getLogger(__name__)

RESUMABLE_CHANGES = ("steps",)
RESUME_KEYS = {"model", "optimizer", "local_state", "best"}
OPTIONAL_RESUME_KEYS = frozenset({"best_step"})  # the step of the best model (fedseg after 0.1.0)
_RESUME_FIX = (
    "Restore it from a backup, or delete checkpoints/resume.pt to start the run again from step 0 with --resume."
)


@dataclass(frozen=True)
class StartPlan:
    """What the trainer does with the folder: continue from ``resume_point``, and reuse ``saved_manifest``."""

    resume_point: Path | None
    saved_manifest: Path | None
    restart: bool = False


Completion = Callable[[dict[str, Any]], dict[str, Any]]


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(set(saved) | set(current), key=str)
        return [d for k in keys for d in _differences(saved.get(k), current.get(k), f"{prefix}{k}.")]
    if saved != current:
        return [f"{prefix.rstrip('.')}: {saved!r} in config.json, {current!r} now"]
    return []


def check_settings(path: Path, current: dict[str, Any], *, complete: Completion | None = None) -> None:
    """Refuse when the settings saved in ``path`` (config.json) differ from ``current`` (bar ``steps``).

    ``complete`` fills settings that an older fedseg did not write with their defaults, so that a run
    started before a setting existed resumes with the setting's default.
    """
    saved = read_json_table(path)
    if complete is not None:
        saved = complete(saved)
    differences = _differences(
        {k: v for k, v in saved.items() if k not in RESUMABLE_CHANGES},
        {k: v for k, v in current.items() if k not in RESUMABLE_CHANGES},
    )
    if differences:
        raise ConfigError(
            f"{path}: the run in this folder used other settings ({'; '.join(differences)}). Use the same "
            f"settings (only --steps may change), or choose another --out."
        )


def plan_start(
    root: Path,
    *,
    config: Path,
    manifest: Path,
    log: Path,
    resume_point: Path,
    current: dict[str, Any],
    resume: bool,
    complete: Completion | None = None,
) -> StartPlan:
    """Check the folder against the request; raises naming the folder and the fix."""
    set_up = config.exists() or manifest.exists()
    trained = log.exists() or resume_point.exists()
    if not set_up and not trained:
        if resume:
            raise ConfigError(f"{root}: nothing to resume: no run was started there. Drop --resume to start one.")
        return StartPlan(None, None)
    if resume_point.exists():
        if not resume:
            raise ConfigError(
                f"{root}: holds a run already (checkpoints/resume.pt). Pass --resume to continue it, "
                "or choose another --out."
            )
        check_settings(config, current, complete=complete)
        return StartPlan(resume_point, _existing(manifest, root))
    if trained and not resume:
        raise ConfigError(
            f"{root}: holds a run that stopped before its first checkpoint (log.jsonl, no checkpoints/resume.pt). "
            "Pass --resume to start it again from step 0 with the same settings and split, or choose another --out."
        )
    if config.exists() or trained:
        check_settings(config, current, complete=complete)
    if trained:
        logger.warning("%s: no checkpoint was reached; starting the run again from step 0", root)
    return StartPlan(None, manifest if manifest.exists() else None, restart=trained)


def _existing(manifest: Path, root: Path) -> Path:
    if not manifest.exists():
        raise DamagedFileError(
            f"{manifest}: missing, although {root} holds a run. Restore it, or choose another --out."
        )
    return manifest


def load_resume_point(path: Path) -> dict[str, Any]:
    """``checkpoints/resume.pt``, checked; a damaged file raises ``DamagedFileError`` naming it."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        raise DamagedFileError(
            f"{path}: damaged or not a fedseg resume point ({type(error).__name__}: {str(error)[:200]}). {_RESUME_FIX}"
        ) from None
    legacy = isinstance(payload, dict) and "step" in payload and "local_state" not in payload
    keys = RESUME_KEYS - {"local_state"} | {"step"} if legacy else RESUME_KEYS
    content = unsealed(payload, path, what="resume point", keys=keys, fix=_RESUME_FIX, optional=OPTIONAL_RESUME_KEYS)
    if not isinstance(content["model"], dict) or not isinstance(content["optimizer"], dict):
        raise DamagedFileError(f"{path}: damaged (model or optimiser state is not a table). {_RESUME_FIX}")
    if content["best"] is not None and not isinstance(content["best"], float):
        raise DamagedFileError(f"{path}: damaged (best validation Dice {content['best']!r}). {_RESUME_FIX}")
    if content.get("best_step") is not None and not isinstance(content["best_step"], int):
        raise DamagedFileError(f"{path}: damaged (step of the best model {content['best_step']!r}). {_RESUME_FIX}")
    return content
