"""Run tracking: TensorBoard event files read back, MLflow into a local store (no server process)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig
from fedseg.federation.run_outputs import RunFolder
from fedseg.models import build_model
from fedseg.models.state import model_state
from fedseg.tracking import TrackingConfig

ROUND = {
    "round": 1,
    "train": {
        "A": {"examples": 10, "supervised_loss": 0.8, "epsilon": 1.5, "he_bytes_up": 4096, "he_encrypt_seconds": 0.4},
        "B": {"examples": 12, "supervised_loss": 0.7, "epsilon": 1.2, "he_bytes_up": 4096, "he_encrypt_seconds": 0.5},
    },
    "left_out": {},
    "he": {"aggregate_seconds": 0.25, "bytes_down": 4096},
    "heldout": {"C": {"dice": 0.61}},
    "validation": {"A": {"dice": 0.7}, "B": {"dice": 0.72}},
    "heldout_dice": 0.61,
    "validation_dice": 0.71,
    "seconds": 12.5,
}


def scalars_of(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _federated_run(out: Path, tracking: str, rounds: int = 2) -> RunFolder:
    config = FederationConfig(
        site_map="A,B,heldout:C", out=str(out), model_options='{"widths": [4, 8]}', tracking=tracking
    )
    folder = RunFolder(out, config)
    folder.start()
    weights, best = model_state(build_model(config.model_config)), None
    for rnd in range(1, rounds + 1):
        folder.record_round({**ROUND, "round": rnd, "heldout_dice": 0.6 + rnd / 100}, [])
        best = folder.save_models(rnd, weights, validation_dice=0.7, best_validation_dice=best)
    (out / "summary.md").write_text("# Federated run\n")
    folder.finish()
    return folder


def test_federated_rounds_are_read_back_from_tensorboard_event_files(tmp_path: Path) -> None:
    _federated_run(tmp_path, "tensorboard")
    scalars = scalars_of(tmp_path / "tensorboard")
    assert scalars["heldout/all_dice"] == [(1, pytest.approx(0.61)), (2, pytest.approx(0.62))]
    assert scalars["heldout/dice/C"][0] == (1, pytest.approx(0.61))
    assert scalars["validation/dice/B"][0][1] == pytest.approx(0.72)
    assert scalars["privacy/epsilon/A"][0][1] == pytest.approx(1.5)
    assert scalars["he/bytes_up/B"][0][1] == 4096 and scalars["he/aggregate_seconds"][0][1] == pytest.approx(0.25)
    assert scalars["train/supervised_loss/A"][0][1] == pytest.approx(0.8)
    assert scalars["round/seconds"][1] == (2, pytest.approx(12.5))


def test_federated_run_logs_to_a_local_mlflow_store_and_resumes_the_same_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    _federated_run(tmp_path / "run", f"mlflow:{store}")
    run_id = json.loads((tmp_path / "run" / "mlflow-run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.data.params["site-map"] == "A,B,heldout:C" and run.data.params["tracking"] == f"mlflow:{store}"
    assert run.data.metrics["heldout/dice/C"] == pytest.approx(0.61)
    history = client.get_metric_history(run_id, "heldout/all_dice")
    assert [(m.step, round(m.value, 4)) for m in history] == [(1, 0.61), (2, 0.62)]
    artefacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"last.pt", "best.pt", "summary.md", "rounds.jsonl"} <= artefacts
    assert run.info.status == "FINISHED"
    config = FederationConfig(
        site_map="A,B,heldout:C",
        out=str(tmp_path / "run"),
        model_options='{"widths": [4, 8]}',
        tracking=f"mlflow:{store}",
    )
    RunFolder(tmp_path / "run", replace(config, num_server_rounds=9)).start()  # resume: the same MLflow run
    assert client.get_run(run_id).info.status == "RUNNING"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_tracking_none_writes_nothing_and_bad_values_name_the_setting(tmp_path: Path) -> None:
    _federated_run(tmp_path, "none", rounds=1)
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ConfigError, match="tracking 'wandb' is not understood"):
        TrackingConfig.parse("wandb")
    with pytest.raises(ConfigError, match="mlflow:URI"):
        FederationConfig(site_map="A", tracking="mlflow:")
