"""The hospital containers, built and run for real: ``make container-test`` (needs a Docker daemon).

``make test`` skips this module; ``make container-test`` (FEDSEG_CONTAINER_TESTS=1) makes the Debian
base image if it is missing (FEDSEG_BASE_IMAGE picks another, e.g. python:3.11-slim), builds the site
and SuperLink images, and runs a SuperLink and three site containers (two training, one held out)
with TLS, SuperNode authentication and encrypted aggregation (updates signed with the node keys and
masked, against the site registry) on the shared retinal images, mounted read-only. The measurements
(build times, image sizes, start-up times) are printed at the end and written to
``runs/container-test/report.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedseg.files import read_jsonl
from server.container_federation import (
    ACTIVATED,
    DEBIAN_BASE,
    REPO,
    SERVER_IMAGE,
    SITE_IMAGE,
    ContainerFederation,
    Docker,
    DockerError,
    build_all,
    ensure_base_image,
)
from tests.conftest import RETINA, require_shared_data

if os.environ.get("FEDSEG_CONTAINER_TESTS") != "1":
    pytest.skip("container tests run with `make container-test` (Docker)", allow_module_level=True)

SITES = ("STARE", "AV-WIDE", "heldout:CHASE_DB1")
REPORT: dict[str, Any] = {}


def run_config(out: str, **extra: object) -> dict[str, Any]:
    return {
        "experiment": "container-ci",
        "site-map": ",".join(SITES),
        "out": out,
        "num-server-rounds": 2,
        "local-steps": 20,
        "batch-size": 4,
        "lr": 0.01,
        "crop-size": 64,
        "resize": 256,
        "tile-size": 256,
        "val-fraction": 0.25,
        "model-options": '{"widths": [4, 8]}',
        "round-timeout": 600.0,
        "device": "cpu",
        **extra,
    }


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    try:
        found = Docker.find()
    except DockerError as error:
        pytest.fail(f"make container-test needs Docker: {error}")
    yield found
    report = REPO / "runs" / "container-test" / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(REPORT, indent=2) + "\n")
    print("\ncontainer test measurements:\n" + "\n".join(f"  {key}: {value}" for key, value in REPORT.items()))


@pytest.fixture(scope="module")
def images(docker: Docker) -> dict[str, str]:
    base = os.environ.get("FEDSEG_BASE_IMAGE", DEBIAN_BASE)
    if base == DEBIAN_BASE:
        started = time.perf_counter()
        if ensure_base_image(docker):
            REPORT["base image made (debootstrap + import), s"] = round(time.perf_counter() - started)
    for tag, seconds in build_all(docker, base).items():
        REPORT[f"{tag} build, s"] = round(seconds)
        REPORT[f"{tag} size, GB"] = round(docker.image_bytes(tag) / 1e9, 2)
    REPORT["base image"] = base
    REPORT["base image size, GB"] = round(docker.image_bytes(base) / 1e9, 2)
    return {"site": SITE_IMAGE, "server": SERVER_IMAGE}


def inspect(docker: Docker, image: str) -> dict[str, Any]:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def test_the_site_image_runs_as_a_non_root_user_without_build_tools(docker: Docker, images: dict[str, str]) -> None:
    config = inspect(docker, images["site"])["Config"]
    assert config["User"] == "site" and "/state" in config["Volumes"]
    assert config["Healthcheck"]["Test"][-2:] == ["/opt/fedseg/fedseg/deploy/health.py", "site"]
    assert docker("run", "--rm", "--entrypoint", "id", images["site"], "-u").stdout.strip() == "10001"
    probe = "command -v gcc g++ cc c++ make pip pip3; ls -d /root/.cache/* /tmp/* 2>/dev/null; true"
    found = docker("run", "--rm", "--user", "0", "--entrypoint", "sh", images["site"], "-c", probe).stdout.split()
    assert found == [], f"build tools or caches in the image: {found}"


def test_the_python_environment_is_one_layer_shared_by_both_images(docker: Docker, images: dict[str, str]) -> None:
    site_layers = inspect(docker, images["site"])["RootFS"]["Layers"]
    server_layers = inspect(docker, images["server"])["RootFS"]["Layers"]
    assert site_layers[:2] == server_layers[:2]  # the base, then the environment
    sizes = [
        int(size) for size in docker("history", "--format", "{{.Size}}", "--human=false", images["site"]).stdout.split()
    ]
    big = [size for size in sizes if size > 50e6]
    assert len(big) == 2, f"layers over 50 MB: {big}"  # the base and the environment, nothing else


@pytest.fixture(scope="module")
def federation(docker: Docker, images: dict[str, str]) -> Iterator[ContainerFederation]:
    require_shared_data()
    names = [spec.removeprefix("heldout:") for spec in SITES]
    work = REPO / "runs" / "container-test" / "work"  # kept after the run: the containers' logs are in work/logs
    shutil.rmtree(work, ignore_errors=True)
    containers = ContainerFederation(
        work,
        data=RETINA,
        names=names,
        docker=docker,
        prefix=f"fedseg-test-{os.getpid()}",
        site_image=images["site"],
        server_image=images["server"],
    )
    try:
        started = time.perf_counter()
        containers.start_superlink()
        REPORT["SuperLink container: docker run to healthy, s"] = round(time.perf_counter() - started, 1)
        for spec, name in zip(SITES, names):
            containers.register(name)
            run_at = containers.start_site(spec)
            seconds = containers.wait_for_log(name, ACTIVATED) - run_at
            REPORT[f"site {name}: docker run to SuperNode accepted by the SuperLink, s"] = round(seconds, 1)
        yield containers
    finally:
        containers.close()


def fetch_run(federation: ContainerFederation, out: str, completed: Any) -> Path:
    try:
        return federation.fetch(out)
    except DockerError:
        pytest.fail(f"the run wrote nothing to {out}:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")


def test_two_encrypted_rounds_score_the_held_out_site(federation: ContainerFederation) -> None:
    started = time.perf_counter()
    completed = federation.run(run_config("/runs/two-rounds"))
    REPORT["two encrypted rounds (flwr run), s"] = round(time.perf_counter() - started)
    run = fetch_run(federation, "/runs/two-rounds", completed)
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2], completed.stdout[-3000:]
    for record in rounds:
        assert set(record["train"]) == {"STARE", "AV-WIDE"} and record["left_out"] == {}
        heldout = record["heldout"]["CHASE_DB1"]
        assert heldout["n_images"] == len(list((RETINA / "CHASE_DB1" / "images").iterdir()))
        assert heldout["counts"]["tp"] + heldout["counts"]["fn"] > 0 and record["he"]["bytes_down"] > 0
        assert record["he"]["mode"] == "masked"  # signed with the node keys, masked against the registry's keys
    dice = rounds[-1]["heldout"]["CHASE_DB1"]["dice"]
    REPORT["held-out CHASE_DB1 Dice after 2 rounds (20 local steps each, tiny model, 256 px)"] = round(dice, 3)
    assert dice > 0.05, "the federated model learnt nothing the held-out hospital can see"
    assert (run / "checkpoints" / "last.he").exists() and not (run / "checkpoints" / "last.pt").exists()
    for name in ("STARE", "AV-WIDE", "CHASE_DB1"):
        log = federation.logs(name)
        assert "fetch_version_info" not in log, f"{name} tried to reach a package index"
        REPORT[f"site {name}: first message to its reply (cold start), s"] = round(
            first_reply_seconds(federation, name), 1
        )
    assert {federation.health(name) for name in ("superlink", "STARE", "AV-WIDE", "CHASE_DB1")} == {"healthy"}


def first_reply_seconds(federation: ContainerFederation, name: str) -> float:
    """From the site's first message received to its reply sent (a new ClientApp process each message)."""
    lines = federation.timed_log(name)
    received = next(at for at, text in lines if "Receiving:" in text)
    return next(at for at, text in lines if at >= received and "Sent successfully" in text) - received


def test_a_site_crashing_mid_round_comes_back_with_its_privacy_state(federation: ContainerFederation) -> None:
    after = len(federation.logs("AV-WIDE"))
    results: dict[str, Any] = {}
    config = run_config("/runs/crash", **{"num-server-rounds": 3, "round-timeout": 180.0, "dp-epsilon": 50.0})
    thread = threading.Thread(target=lambda: results.update(completed=federation.run(config)))
    thread.start()
    try:
        federation.wait_for_log("AV-WIDE", "round 1 trained", after=after, seconds=900)
        federation.wait_for_log(
            "AV-WIDE", "Receiving: train message", after=len(federation.logs("AV-WIDE")), seconds=900
        )
        after = len(federation.logs("AV-WIDE"))
        crashed = federation.crash("AV-WIDE")  # a power cut at the hospital while it trains round 2
        seconds = federation.wait_for_log("AV-WIDE", ACTIVATED, after=after, seconds=600) - crashed
        REPORT["site AV-WIDE: crash to its SuperNode accepted again (restart policy), s"] = round(seconds, 1)
    finally:
        thread.join(timeout=1800)
    assert not thread.is_alive(), "the run hung after a site crashed"
    completed = results["completed"]
    run = fetch_run(federation, "/runs/crash", completed)
    rounds = read_jsonl(run / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3], completed.stdout[-3000:]
    assert all("STARE" in r["train"] for r in rounds) and all(r["heldout"]["CHASE_DB1"]["n_images"] > 0 for r in rounds)
    assert "AV-WIDE" in rounds[0]["train"] and "AV-WIDE" in rounds[2]["train"]
    REPORT["round 2 of the crash run, AV-WIDE"] = rounds[1]["left_out"].get("AV-WIDE", "trained")
    if "AV-WIDE" in rounds[1]["left_out"]:  # its masks were opened by STARE's seeds, the round went on
        assert rounds[1]["he"]["unmasked_dropouts"] == ["AV-WIDE"], rounds[1]
    epsilon = {e["round"]: e["epsilon"] for e in read_jsonl(run / "privacy.jsonl") if e["site"] == "AV-WIDE"}
    # Its accountant survived the crash on its state volume: epsilon goes on growing instead of starting over.
    assert epsilon[3] > epsilon[1], epsilon


def test_sigterm_stops_every_container_cleanly(federation: ContainerFederation) -> None:
    for name in ("STARE", "AV-WIDE", "CHASE_DB1", "superlink"):
        stop = federation.stop(name)
        REPORT[f"{name}: docker stop (SIGTERM) took, s"] = round(stop.seconds, 1)
        assert stop.exit_code != 137 and stop.seconds < 30, f"{name} needed SIGKILL: {federation.logs(name)[-2000:]}"
