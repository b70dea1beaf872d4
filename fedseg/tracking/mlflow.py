"""MLflow tracking: parameters, metrics by step, and the run's final files as artefacts.

The run id is kept in the run folder (``mlflow-run.json``), so a resumed fedseg run continues
the same MLflow run. Local stores need no server: ``sqlite:///path/mlflow.db`` (artefacts beside
the database) or a ``file:`` folder (MLflow's file store, which MLflow 3 only opens when asked:
naming one in ``tracking`` is that request).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedseg.files import atomic_write_json
from fedseg.tracking.base import Tracker, finite

RUN_FILE = "mlflow-run.json"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-. /]")
_BATCH = 500  # MLflow's limit of metrics per log_batch call is 1000


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces; anything else becomes ``_``."""
    return _NOT_ALLOWED.sub("_", name)


def _local_artifact_location(uri: str) -> str | None:
    """Artefacts of a SQLite store go beside the database (MLflow's default is ./mlruns of the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


class MLflowTracker(Tracker):
    def __init__(self, uri: str, *, run_folder: Path, experiment: str, run_name: str) -> None:
        if urlparse(uri).scheme in ("", "file"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient  # heavy import: only when MLflow is asked for

        self.client, self.uri = MlflowClient(tracking_uri=uri), uri
        self.record = Path(run_folder) / RUN_FILE
        self.run_id = self._resumed_run() or self._new_run(experiment, run_name)

    def _resumed_run(self) -> str | None:
        if not self.record.exists():
            return None
        saved = json.loads(self.record.read_text())
        if saved.get("uri") != self.uri:
            return None
        self.client.update_run(saved["run_id"], status="RUNNING")
        return str(saved["run_id"])

    def _new_run(self, experiment: str, run_name: str) -> str:
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=_local_artifact_location(self.uri))
        )
        run_id = str(self.client.create_run(experiment_id, run_name=run_name).info.run_id)
        atomic_write_json(self.record, {"uri": self.uri, "run_id": run_id, "experiment": experiment})
        return run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, str(value)[:6000]) for key, value in params.items() if key not in logged]
        for start in range(0, len(fresh), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(name), value, now, step) for name, value in finite(metrics).items()]
        for start in range(0, len(batch), _BATCH):
            self.client.log_batch(self.run_id, metrics=batch[start : start + _BATCH])

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
