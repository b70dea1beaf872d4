"""Run tracking: TensorBoard event files by default, MLflow on request.

``tracking`` (run config key, ``fedseg train --tracking``) is one of::

    tensorboard        event files in RUN/tensorboard/ (the default)
    mlflow:URI         the same, and an MLflow run at URI (http://..., sqlite:///..., file:///...)
    none               neither

The library calls a ``Tracker`` (``fedseg.tracking.base``) where it writes its own logs: the
federated run folder after every round, pooled training where it writes log and validation rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedseg.configuration import ConfigError
from fedseg.tracking.base import Tracker, Trackers, finite, flatten

DEFAULT_TRACKING = "tensorboard"
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class TrackingConfig:
    """Parsed ``tracking`` setting: event files on or off, and an optional MLflow tracking URI."""

    tensorboard: bool = True
    mlflow_uri: str | None = None

    @classmethod
    def parse(cls, spec: str) -> TrackingConfig:
        text = spec.strip()
        if text in ("", DEFAULT_TRACKING):
            return cls()
        if text == "none":
            return cls(tensorboard=False)
        if text.startswith("mlflow:") and text.removeprefix("mlflow:").strip():
            return cls(mlflow_uri=text.removeprefix("mlflow:").strip())
        raise ConfigError(
            f"tracking '{spec}' is not understood: use 'tensorboard', 'none' or 'mlflow:URI' "
            "(e.g. mlflow:http://mlflow.hospital:5000 or mlflow:sqlite:///runs/mlflow.db)"
        )


def open_tracker(spec: str, *, run_folder: Path, experiment: str) -> Tracker:
    """The trackers ``spec`` asks for, writing beside (or about) ``run_folder``."""
    config = TrackingConfig.parse(spec)
    trackers: list[Tracker] = []
    if config.tensorboard:
        from fedseg.tracking.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(Path(run_folder) / TENSORBOARD_DIR))
    if config.mlflow_uri is not None:
        from fedseg.tracking.mlflow import MLflowTracker

        trackers.append(
            MLflowTracker(config.mlflow_uri, run_folder=run_folder, experiment=experiment, run_name=run_folder.name)
        )
    return Trackers(trackers)


__all__ = ["DEFAULT_TRACKING", "Tracker", "TrackingConfig", "Trackers", "finite", "flatten", "open_tracker"]
