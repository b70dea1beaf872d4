"""Real Flower simulations (SuperLink + flwr run + Ray), on tiny crops of the real retinal images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fedseg.files import read_jsonl
from fedseg.models.checkpoint import load_checkpoint
from fedseg.privacy.release import Handling, handling

ROUNDS = 2


def tiny_run_config(data: Path, out: Path, site_map: str, **extra: Any) -> dict[str, Any]:
    return {
        "experiment": "ci",
        "site-map": site_map,
        "data-root": str(data),
        "out": str(out),
        "num-server-rounds": ROUNDS,
        "local-steps": 2,
        "batch-size": 2,
        "crop-size": 32,
        "tile-size": 64,
        "val-fraction": 0.25,
        "model-options": '{"widths": [4, 8]}',
        "round-timeout": 300.0,
        **extra,
    }


@pytest.fixture()
def flower_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FEDSEG_FLWR_HOME", str(tmp_path / "flwr-home"))
    return tmp_path / "flwr-home"


def simulate(config: dict[str, Any]) -> str:
    from simulations.launch import simulate as launch

    completed = launch(config, quiet=True)
    return completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def healthy_run(retina_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("federated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDSEG_FLWR_HOME", str(out / "flwr-home"))
        log = simulate(
            tiny_run_config(
                retina_crops,
                out / "run",
                "STARE,AV-WIDE,heldout:CHASE_DB1",
                **{"dp-epsilon": 20.0, "dp-validation-noise": 4.0, "mean-teacher": True, "label-fraction": 0.5},
            )
        )
    return out / "run", log


def test_two_training_sites_and_a_heldout_site_run_two_rounds(healthy_run: tuple[Path, str]) -> None:
    run, log = healthy_run
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2], log[-3000:]
    for record in rounds:
        assert set(record["train"]) == {"STARE", "AV-WIDE"} and record["left_out"] == {}
        assert set(record["heldout"]) == {"CHASE_DB1"}
        assert record["heldout"]["CHASE_DB1"]["n_images"] == 4 and 0 <= record["heldout"]["CHASE_DB1"]["dice"] <= 1
        assert set(record["validation"]) == {"STARE", "AV-WIDE"}
        for metrics in record["train"].values():
            assert metrics["examples"] == 3 and 0 < metrics["epsilon"] <= 20.0
    assert rounds[1]["train"]["STARE"]["epsilon"] > rounds[0]["train"]["STARE"]["epsilon"]


def test_simulated_sites_apply_the_cpu_settings_and_log_progress(healthy_run: tuple[Path, str]) -> None:
    _, log = healthy_run
    lines = [line for line in log.splitlines() if "fedseg runtime:" in line]
    assert lines, log[-3000:]
    assert all("allocator: glibc" in line for line in lines), lines
    assert "site STARE, round 2: step 2/2" in log and "steps/s" in log


def test_run_outputs_checkpoints_ledger_and_summary(healthy_run: tuple[Path, str]) -> None:
    run, _ = healthy_run
    assert load_checkpoint(run / "checkpoints" / "last.pt").meta["round"] == ROUNDS
    ledger = read_jsonl(run / "privacy.jsonl")
    assert {(e["site"], e["round"]) for e in ledger} == {(s, r) for s in ("STARE", "AV-WIDE") for r in (1, 2)}
    summary = (run / "summary.md").read_text()
    assert "held-out CHASE_DB1 Dice" in summary and (run / "learning_curve.png").stat().st_size > 1000
    assert json.loads((run / "config.json").read_text())["site-map"] == "STARE,AV-WIDE,heldout:CHASE_DB1"
    assert (run / "sites" / "STARE" / "state.bin").exists()  # the simulated hospital's private state


def test_the_demo_report_shows_heldout_images_with_the_final_models_masks(
    healthy_run: tuple[Path, str], retina_crops: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The held-out centre scored with the final model, and (with an init-checkpoint, the demo's prior)
    with the starting model too, each with its overlays; the two Dice are printed side by side."""
    from simulations.launch import show_heldout

    run, _ = healthy_run
    prior = tmp_path / "prior.pt"
    shutil.copy(run / "checkpoints" / "last.pt", prior)
    config = {
        "out": str(run),
        "data-root": str(retina_crops),
        "site-map": "STARE,AV-WIDE,heldout:CHASE_DB1",
        "init-checkpoint": str(prior),
    }
    show_heldout(config)
    for folder in (run / "heldout", run / "heldout" / "prior"):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert set(metrics["centres"]) == {"CHASE_DB1"} and metrics["centres"]["CHASE_DB1"]["n_images"] == 4
        assert [p.suffix for p in (folder / "overlays").iterdir()] and (folder / "report.md").exists()
    dice = json.loads((run / "heldout" / "metrics.json").read_text())["centres"]["CHASE_DB1"]["dice"]
    printed = capsys.readouterr().out
    assert f"Dice {dice:.3f} with the public prior alone, {dice:.3f} after federated training" in printed


def test_every_field_a_dp_site_sent_is_the_update_public_or_in_the_ledger(healthy_run: tuple[Path, str]) -> None:
    run, _ = healthy_run
    roles = {"STARE": "train", "AV-WIDE": "train", "CHASE_DB1": "heldout"}
    messages = {"query.describe": "describe", "train": "train", "evaluate": "evaluate", "query.unmask": "unmask"}
    ledger = {(row["site"], row["round"], row["kind"]) for row in read_jsonl(run / "privacy.jsonl")}
    seen = set()
    for received in read_jsonl(run / "messages.jsonl"):  # every reply the server got, field by field
        assert received["error"] is None
        message, role, site = messages[received["type"]], roles[received["site"]], received["site"]
        seen.add((message, role))
        for record, fields in received["records"].items():
            for key in fields["keys"]:
                rule = handling(message, role, record, key, dp=True)
                assert rule is not None and rule.sent, f"{site} sent '{record}.{key}' in reply to {message}"
                if rule is Handling.UPDATE:
                    assert (site, int(received["round"]), "update") in ledger
                if rule is Handling.GAUSSIAN:
                    assert (site, int(received["round"]), "validation") in ledger
        if message == "train":
            assert "supervised_loss" not in received["records"]["metrics"]["keys"]
    assert seen == {(m, r) for m in ("describe", "evaluate") for r in ("train", "heldout")} | {("train", "train")}
    for site in ("STARE", "AV-WIDE"):  # an update and a validation score per round, each with its ledger row
        for kind in ("update", "validation"):
            assert {r for s, r, k in ledger if (s, k) == (site, kind)} == set(range(1, ROUNDS + 1))
    assert not any(s == "CHASE_DB1" for s, _, _ in ledger)  # held-out scores are not DP releases


def test_a_failing_site_is_left_out_and_the_round_goes_on(
    retina_crops: Path, tmp_path: Path, flower_home: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(retina_crops, data)
    for image in (data / "AV-WIDE" / "images").iterdir():  # truncated files at one hospital
        image.write_bytes(image.read_bytes()[:200])
    log = simulate(
        tiny_run_config(data, tmp_path / "run", "STARE,AV-WIDE,heldout:CHASE_DB1", **{"num-server-rounds": 1})
    )
    rounds = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert len(rounds) == 1, log[-3000:]
    assert set(rounds[0]["train"]) == {"STARE"}
    assert "AV-WIDE" in rounds[0]["left_out"] and "failed" in rounds[0]["left_out"]["AV-WIDE"]
    assert rounds[0]["heldout"]["CHASE_DB1"]["n_images"] == 4


def test_encrypted_aggregation_runs_two_rounds_with_heldout_metrics(
    retina_crops: Path, tmp_path: Path, flower_home: Path
) -> None:
    """The key ceremony's files (CKKS keys, node keys, site registry), then signed, masked, encrypted rounds of
    DP updates (DP + HE: the sites' ledger rows reach the server beside their ciphertexts)."""
    from fedseg.crypto.checkpoint import decrypt_checkpoint
    from simulations.bench.he_overhead import credentials

    keys = credentials(tmp_path / "keys", ["STARE", "AV-WIDE", "CHASE_DB1"])
    run = tmp_path / "run"
    encrypted = {
        "he": True,
        "he-keys": str(keys / "he"),
        "registry": str(keys / "federation.json"),
        "node-keys": str(keys / "node-keys"),
        "dp-epsilon": 20.0,
    }
    log = simulate(tiny_run_config(retina_crops, run, "STARE,AV-WIDE,heldout:CHASE_DB1", **encrypted))
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2], log[-3000:]
    for record in rounds:
        assert set(record["train"]) == {"STARE", "AV-WIDE"} and record["left_out"] == {}
        assert record["he"]["mode"] == "masked" and record["he"]["bytes_down"] > 0
        assert all(m["he_bytes_up"] > 0 for m in record["train"].values())
        assert record["heldout"]["CHASE_DB1"]["n_images"] == 4
    ledger = read_jsonl(run / "privacy.jsonl")
    assert {(e["site"], e["round"], e["kind"]) for e in ledger} == {
        (s, r, "update") for s in ("STARE", "AV-WIDE") for r in (1, 2)
    }
    assert (run / "checkpoints" / "last.he").exists() and not (run / "checkpoints" / "last.pt").exists()
    checkpoint = load_checkpoint(
        decrypt_checkpoint(run / "checkpoints" / "last.he", keys / "he" / "site.context", tmp_path / "last.pt")
    )
    assert checkpoint.meta["round"] == ROUNDS


def test_the_demo_makes_its_prior_once_with_the_runs_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's init-checkpoint is pre-trained by `fedseg prior` with the run's model and options, and
    not again once it exists (like the demo's data)."""
    import simulations.launch as launch

    calls: list[list[str]] = []

    def run(command: list[str], check: bool) -> None:
        calls.append(command)
        (tmp_path / "prior").mkdir(exist_ok=True)
        (tmp_path / "prior" / "prior.pt").write_bytes(b"weights")

    monkeypatch.setattr(launch.subprocess, "run", run)
    config = {
        "init-checkpoint": str(tmp_path / "prior" / "prior.pt"),
        "model": "unet",
        "model-options": '{"widths": [8, 16], "aspp_rates": [1, 2]}',
        "channels": 3,
        "seed": 4,
    }
    launch.make_demo_prior(config)
    launch.make_demo_prior(config)
    assert len(calls) == 1
    command = calls[0]
    assert command[1:4] == ["prior", "--out", str(tmp_path / "prior")]
    assert {"--model=unet", "--channels=3", "--seed=4", "--model-option=widths=[8, 16]"} <= set(command)
    assert "--model-option=aspp_rates=[1, 2]" in command
