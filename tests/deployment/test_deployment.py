"""Flower's Deployment Engine as a hospital runs it: TLS, SuperNode authentication, separate processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fedseg.files import read_jsonl
from server.local_federation import LocalFederation

SITES = ("STARE", "AV-WIDE", "heldout:CHASE_DB1")


def run_config(out: Path, **extra: object) -> dict:
    return {
        "experiment": "deploy-ci",
        "site-map": ",".join(SITES),
        "out": str(out),
        "num-server-rounds": 2,
        "local-steps": 2,
        "batch-size": 2,
        "crop-size": 32,
        "tile-size": 64,
        "val-fraction": 0.25,
        "model-options": '{"widths": [4, 8]}',
        "round-timeout": 60.0,
        "device": "cpu",
        **extra,
    }


@pytest.fixture(scope="module")
def federation(retina_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalFederation:
    local = LocalFederation(tmp_path_factory.mktemp("deploy"), data=retina_crops, he=True)
    try:
        local.start_superlink()
        for spec in SITES:
            local.register(spec.removeprefix("heldout:"))
            local.start_site(spec)
        yield local
    finally:
        local.close()


def test_two_encrypted_rounds_over_tls_with_authenticated_sites(federation: LocalFederation) -> None:
    out = federation.work / "run"
    completed = federation.run(run_config(out))
    rounds = read_jsonl(out / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2], completed.stdout[-3000:]
    for record in rounds:
        assert set(record["train"]) == {"STARE", "AV-WIDE"} and record["left_out"] == {}
        assert record["heldout"]["CHASE_DB1"]["n_images"] == 4 and record["he"]["bytes_down"] > 0
    assert (out / "checkpoints" / "last.he").exists() and not (out / "checkpoints" / "last.pt").exists()
    assert "https://127.0.0.1" in (federation.work / "superlink.log").read_text()


def test_a_supernode_with_an_unregistered_key_is_refused(federation: LocalFederation) -> None:
    rogue = federation.start_site("STARE", key_name="rogue")
    try:
        code = rogue.wait(timeout=120)
    finally:
        federation.nodes.pop("rogue", None)
    log = (federation.work / "node-rogue.log").read_text()
    assert code != 0 and "Failed to activate SuperNode" in log


def test_killing_a_site_mid_round_does_not_hang_the_run(federation: LocalFederation) -> None:
    out = federation.work / "run-with-failure"
    log = federation.work / "node-AV-WIDE.log"
    offset = log.stat().st_size
    results: dict = {}
    config = run_config(out, **{"num-server-rounds": 3, "round-timeout": 25.0})
    thread = threading.Thread(target=lambda: results.update(completed=federation.run(config, timeout=600)))
    thread.start()
    deadline = time.monotonic() + 300
    while "ROUND 1]" not in log.read_text()[offset:] and time.monotonic() < deadline:
        time.sleep(0.5)
    federation.stop_site("AV-WIDE")  # a power cut at the hospital during round 1
    thread.join(timeout=600)
    assert not thread.is_alive(), "the run hung after a site disappeared"
    rounds = read_jsonl(out / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3], results["completed"].stdout[-3000:]
    assert any("AV-WIDE" in r["left_out"] for r in rounds)
    assert all("STARE" in r["train"] for r in rounds)
    assert all(r["heldout"]["CHASE_DB1"]["n_images"] == 4 for r in rounds)
