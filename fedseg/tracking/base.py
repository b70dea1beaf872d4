"""The ``Tracker`` interface: what a run tells an experiment tracker, and a fan-out over several."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class Tracker:
    """Receives a run's settings, its metrics by step (round or training step) and its final files.

    The base class ignores everything (tracking off); subclasses override what their backend keeps.
    """

    def log_params(self, params: Mapping[str, Any]) -> None:
        """The run's settings, flat (``flatten``), once at the start."""

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int) -> None:
        """Scalars at one step; None and non-finite values are dropped by ``finite``."""

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        """Files the run leaves (checkpoint, report); missing ones are skipped."""

    def close(self) -> None:
        """Flush and end the run (it may be resumed later)."""


class Trackers(Tracker):
    """Several trackers behind one interface."""

    def __init__(self, trackers: Iterable[Tracker]) -> None:
        self.trackers = list(trackers)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step=step)

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        paths = list(paths)
        for tracker in self.trackers:
            tracker.log_artifacts(paths)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()


def finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are real finite numbers (booleans and None dropped), as floats."""
    kept = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            kept[name] = float(value)
    return kept


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``a.b = value`` strings (parameters are strings in MLflow)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat
